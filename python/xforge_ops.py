"""The SelectiveScan export helpers, now `xforge.ops`; this name stays for the fixture scripts,
which import it from this folder without installing the package."""
import importlib.util
import os
import sys

_spec = importlib.util.spec_from_file_location("xforge.ops", os.path.join(os.path.dirname(__file__), "xforge", "ops.py"))
_ops = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("xforge_ops_impl", _ops)
_spec.loader.exec_module(_ops)
export = _ops.export
selective_scan = _ops.selective_scan
__all__ = [n for n in dir(_ops) if not n.startswith("_")]
globals().update({n: getattr(_ops, n) for n in __all__})
