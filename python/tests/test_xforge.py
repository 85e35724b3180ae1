"""The Python package: compile, inspect, save/load, interpret, errors (CPU); Session and the
torch.compile backend on a GPU (marked `gpu`: they run where a CUDA device is present)."""
import os
import shutil
import subprocess
import warnings

import numpy as np
import pytest

import xforge

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "models")
BERT = os.path.join(MODELS, "bert_tiny.onnx")
MNASNET = os.path.join(MODELS, "mnasnet0_5.onnx")


def has_gpu():
    return shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0


gpu = pytest.mark.skipif(not has_gpu(), reason="needs a CUDA GPU (run on the GPU machine)")


def test_version_is_the_crates():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        text = f.read()
    version = text.split("[workspace.package]")[1].split('version = "')[1].split('"')[0]
    assert xforge.__version__ == version


def test_compile_and_inspect_bert_tiny():
    art = xforge.compile(BERT, target="sm_90")
    info = art.inspect()
    assert info["target"] == "sm_90" and info["precision"] == "fp32"
    plan = info["plans"][0]
    assert [(i["name"], i["dtype"], i["shape"]) for i in plan["inputs"]] == [("input", "i64", [1, 32])]
    assert plan["outputs"][0]["dtype"] == "f32" and plan["steps"] > 0
    assert len(art.kernels) == info["kernels"] > 0
    kinds = {s["kind"] for s in art.steps()}
    assert "kernel" in kinds and "gemm" in kinds, kinds
    launches = [s for s in art.steps() if s["kind"] == "kernel"]
    assert all(s["kernel"] in art.kernels and len(s["grid"]) == 3 for s in launches)


def test_half_precision_and_buckets_are_options():
    art = xforge.compile(BERT, precision="fp16", generated_gemm=True)
    assert art.inspect()["precision"] == "fp16"
    assert {s["kind"] for s in art.steps()} == {"kernel"}


def test_a_tuning_table_is_an_option(tmp_path):
    # a table of measured times for this target (`xforge tune` writes them on a GPU)
    table = tmp_path / "tuning.tsv"
    table.write_text("sm_90\tTest GPU\tMatMul f32[1] #0\talone\t2.5\n")
    art = xforge.compile(BERT, tuning=str(table))
    assert art.inspect()["options"]["tuning"] == "1 measurements on Test GPU"
    assert "tuning" not in xforge.compile(BERT).inspect()["options"]
    with pytest.raises(xforge.BadInputError, match="no such file"):
        xforge.compile(BERT, tuning=str(tmp_path / "missing.tsv"))


def test_path_bytes_and_the_cli_give_one_artifact(tmp_path):
    with open(MNASNET, "rb") as f:
        data = f.read()
    a = xforge.compile(MNASNET).to_bytes()
    assert xforge.compile(data).to_bytes() == a
    cli = os.environ.get("XFORGE_BIN") or os.path.join(ROOT, "target", "release", "xforge")
    if not os.path.exists(cli):
        pytest.fail("target/release/xforge is missing: scripts/test builds it first")
    out = tmp_path / "m.xfa"
    subprocess.run([cli, "compile", MNASNET, "-o", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == a


def test_save_and_load_round_trip(tmp_path):
    art = xforge.compile(BERT)
    p = tmp_path / "bert.xfa"
    art.save(str(p))
    back = xforge.Artifact.load(str(p))
    assert back.to_bytes() == art.to_bytes() == xforge.Artifact.from_bytes(art.to_bytes()).to_bytes()


def test_interpret_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime", reason="scripts/setup installs onnxruntime")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    got = xforge.interpret(MNASNET, {"input": x})
    sess = ort.InferenceSession(MNASNET, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input": x})
    (name, y), = got.items()
    assert name == sess.get_outputs()[0].name
    assert np.linalg.norm(y - want[0]) / np.linalg.norm(want[0]) < 1e-4


def test_errors_are_typed_and_name_what_is_wrong(tmp_path):
    with pytest.raises(xforge.BadModelError):
        xforge.compile(b"not an onnx model")
    with pytest.raises(xforge.BadModelError):
        xforge.compile(str(tmp_path / "missing.onnx"))
    with pytest.raises(xforge.BadInputError, match="sm_75"):
        xforge.compile(BERT, target="sm_75")
    with pytest.raises(xforge.BadInputError, match="precision"):
        xforge.compile(BERT, precision="fp8")
    with pytest.raises(xforge.BadArtifactError):
        xforge.Artifact.from_bytes(b"XFORGEA\0 truncated")
    with pytest.raises(xforge.BadInputError, match="input"):
        xforge.interpret(BERT, {})
    assert issubclass(xforge.UnsupportedError, xforge.XforgeError)


def test_an_unsupported_node_is_named(tmp_path):
    onnx = pytest.importorskip("onnx", reason="scripts/setup installs onnx")
    from onnx import TensorProto, helper

    # Dropout whose training mode is known only at run time: random, never compiled
    g = helper.make_graph(
        [helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="drop")],
        "drop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]), helper.make_tensor_value_info("t", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor("r", TensorProto.FLOAT, [], [0.5])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(xforge.UnsupportedError, match="drop"):
        xforge.compile(m.SerializeToString())


@pytest.mark.skipif(has_gpu(), reason="checks the error of a machine without a GPU")
def test_a_session_without_a_gpu_is_a_clear_error():
    with pytest.raises(xforge.NoGpuError):
        xforge.Session(xforge.compile(BERT))


def test_the_torch_backend_falls_back_with_a_reason():
    torch = pytest.importorskip("torch", reason="the torch.compile backend needs torch")
    from xforge.torch_backend import xforge_backend

    m = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    x = torch.randn(2, 8)
    compiled = torch.compile(m, backend=xforge_backend)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = compiled(x)
    assert torch.allclose(y, m(x), atol=1e-6)
    if not has_gpu():
        assert any("xforge" in str(v.message) for v in w), [str(v.message) for v in w]


@gpu
def test_session_runs_numpy_like_the_interpreter():
    art = xforge.compile(MNASNET)
    s = xforge.Session(art)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    (y,) = s.run({"input": x})
    want = list(xforge.interpret(MNASNET, {"input": x}).values())[0]
    assert np.linalg.norm(y - want) / np.linalg.norm(want) < 1e-4
    with pytest.raises(xforge.BadInputError, match="input"):
        s.run({"input": x.astype(np.float64)})
    with pytest.raises(xforge.BadInputError, match="shape"):
        s.run([x[:, :2]])


@gpu
def test_the_torch_backend_runs_on_the_gpu():
    torch = pytest.importorskip("torch")
    from xforge.torch_backend import xforge_backend

    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * 30 * 30, 8)
    ).cuda().eval()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    for half in (False, True):
        mm, xx = (m.half(), x.half()) if half else (m, x)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            torch._dynamo.reset()
            y = torch.compile(mm, backend=xforge_backend)(xx)
        # compiled by xforge (no fallback), on the GPU, in the input's dtype
        assert not [v for v in w if "PyTorch runs" in str(v.message)], [str(v.message) for v in w]
        assert y.device.type == "cuda" and y.dtype == xx.dtype
        with torch.no_grad():
            want = m.float()(x)
        err = (y.float() - want).norm() / want.norm()
        assert err < (1e-2 if half else 1e-4), err


@gpu
def test_a_half_model_with_integer_inputs_compiles_in_half(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import glob
    from xforge.torch_backend import xforge_backend

    monkeypatch.setenv("XFORGE_CACHE_DIR", str(tmp_path))
    m = torch.nn.Sequential(torch.nn.Embedding(100, 64), torch.nn.Linear(64, 32)).cuda().eval().half()
    ids = torch.randint(0, 100, (2, 16), device="cuda")
    torch._dynamo.reset()
    with torch.no_grad():
        y = torch.compile(m, backend=xforge_backend)(ids)
        want = m.float()(ids)
    # the precision follows the parameters when the inputs are token ids
    (path,) = glob.glob(str(tmp_path / "torch" / "*.xfa"))
    assert xforge.Artifact.load(path).inspect()["precision"] == "fp16"
    assert y.dtype == torch.float16 and float((y.float() - want).norm() / want.norm()) < 1e-2


@gpu
def test_torch_cuda_tensors_run_in_place_without_a_copy():
    torch = pytest.importorskip("torch")
    art = xforge.compile(MNASNET)
    s = xforge.Session(art)
    x = torch.randn(1, 3, 224, 224, device="cuda")
    (want,) = s.run([x.cpu().numpy()])
    # outputs given: written in place (same address), on the caller's stream
    out = torch.empty(1, 1000, device="cuda")
    (y,) = s.run([x], outputs=[out])
    assert y.data_ptr() == out.data_ptr()
    torch.cuda.synchronize()
    assert np.linalg.norm(y.cpu().numpy() - want) / np.linalg.norm(want) < 1e-5
    # outputs made here, on a side stream; the profiler sees kernels and no copy at all
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        s.run([x])  # the graph for this output's address is captured here, outside the profile
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            (y2,) = s.run([x], outputs=[out])
            side.synchronize()
    names = [e.name for e in prof.events()]
    assert any("memcpy" not in n.lower() for n in names), names
    assert not [n for n in names if "memcpy" in n.lower() or "memset" in n.lower()], names
    assert torch.equal(y2, out) and np.linalg.norm(out.cpu().numpy() - want) / np.linalg.norm(want) < 1e-5
    # the caller's mistakes are errors, never a copy to another device
    with pytest.raises(xforge.BadInputError, match="f32"):
        s.run([x.half()])
    with pytest.raises(xforge.BadInputError, match="do not mix"):
        s.run([x.cpu()], outputs=[out])
    with pytest.raises(xforge.BadInputError, match="contiguous"):
        s.run([x.permute(0, 1, 3, 2)])
    with pytest.raises(xforge.BadInputError, match="shape"):
        s.run([x], outputs=[torch.empty(1, 999, device="cuda")])
    with pytest.raises(xforge.BadInputError, match="overlaps"):
        s.run([x], outputs=[x.view(-1)[:1000].view(1, 1000)])


@gpu
def test_a_session_is_safe_from_several_threads_on_device_tensors():
    torch = pytest.importorskip("torch")
    import threading

    s = xforge.Session(xforge.compile(MNASNET))
    xs = [torch.randn(1, 3, 224, 224, device="cuda") for _ in range(4)]
    want = [s.run([x.cpu().numpy()])[0] for x in xs]
    got = [None] * 4
    errors = []

    def work(k):
        try:
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream):
                for _ in range(5):
                    (y,) = s.run([xs[k]])
                stream.synchronize()
            got[k] = y.cpu().numpy()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    for g, w in zip(got, want):
        assert np.linalg.norm(g - w) / np.linalg.norm(w) < 1e-5


@gpu
def test_a_transformer_runs_like_the_interpreter_from_numpy_and_from_cuda_tensors():
    # bert_tiny has GEMMs with and without a bias (projections; attention's products)
    s = xforge.Session(xforge.compile(BERT))
    ids = np.random.default_rng(2).integers(0, 4000, (1, 32)).astype(np.int64)
    want = list(xforge.interpret(BERT, {"input": ids}).values())[0]
    (y,) = s.run({"input": ids})
    assert np.linalg.norm(y - want) / np.linalg.norm(want) < 1e-4
    torch = pytest.importorskip("torch")
    (yt,) = s.run([torch.from_numpy(ids).cuda()])
    assert yt.is_cuda
    assert np.linalg.norm(yt.cpu().numpy() - want) / np.linalg.norm(want) < 1e-4


XFORGE = os.path.join(ROOT, "target", "release", "xforge")


@pytest.mark.skipif(not os.path.exists(XFORGE), reason="needs the release CLI (scripts/test builds it first)")
def test_from_hub_downloads_what_a_worker_built_and_verifies_it(tmp_path):
    # a hub on 127.0.0.1: server, a build worker for sm_90, bert_tiny pushed by the CLI
    env = dict(os.environ, XFORGE_HUB_CONFIG=str(tmp_path / "hub.toml"), XFORGE_HUB_CACHE=str(tmp_path / "cli-cache"))
    for k in ("XFORGE_HUB_URL", "XFORGE_HUB_TOKEN", "XFORGE_HUB_KEY", "XFORGE_HUB_OFFLINE"):
        env.pop(k, None)
    procs = []

    def cli(*args):
        r = subprocess.run([XFORGE, "hub", *args], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    try:
        server = subprocess.Popen([XFORGE, "hub", "serve", "--dir", str(tmp_path / "server"), "--listen", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        procs.append(server)
        url = None
        for line in server.stdout:
            if line.startswith("xforge hub: listening on "):
                url = line.split()[-1]
                break
        assert url, "the server did not start"
        admin = (tmp_path / "server" / "admin.token").read_text().strip()
        cli("user-add", "alice", "--server", url, "--token", admin)
        alice = cli("token-add", "alice", "--scopes", "read,write", "--server", url, "--token", admin)
        cli("user-add", "farm", "--server", url, "--token", admin)
        farm = cli("token-add", "farm", "--scopes", "worker", "--server", url, "--token", admin)
        procs.append(subprocess.Popen([XFORGE, "hub", "worker", "--server", url, "--token", farm, "--target", "sm_90",
                                       "--poll-ms", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        cli("login", "--server", url, "--token", alice)
        cli("push", "alice/bert_tiny", BERT)
        cache = tmp_path / "py-cache"
        # no artifact yet: from_hub asks for a build, waits for the worker, downloads, verifies
        art = xforge.from_hub("alice/bert_tiny", target="sm_90", server=url, token=alice, cache_dir=cache)
        info = art.inspect()
        assert info["target"] == "sm_90"
        assert [(i["name"], i["shape"]) for i in info["plans"][0]["inputs"]] == [("input", [1, 32])]
        assert info["model_digest"] == xforge.compile(BERT).inspect()["model_digest"]
        # offline: from the cache, verified again; a repository nobody pushed is named
        again = xforge.from_hub("alice/bert_tiny", target="sm_90", server=url, token=alice, cache_dir=cache,
                                offline=True)
        assert again.inspect()["model_digest"] == info["model_digest"]
        # another precision is another artifact, built on request
        half = xforge.from_hub("alice/bert_tiny", target="sm_90", precision="fp16", server=url, token=alice,
                               cache_dir=cache)
        assert half.inspect()["precision"] == "fp16" and info["precision"] == "fp32"
        with pytest.raises(xforge.BadInputError, match="alice/nothing"):
            xforge.from_hub("alice/nothing", target="sm_90", server=url, token=alice, cache_dir=cache, timeout_s=5)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_linear_attention_exports_as_onnx_opset_27_and_runs_like_onnx_reference(tmp_path):
    # xforge.ops' PyTorch references of LinearAttention and CausalConvWithState against ONNX's own
    # reference evaluator on the exported file, and xforge's interpreter on the same file
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator
    from xforge.ops import causal_conv_with_state, export, linear_attention

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(24, 1, 3) * 0.5)

        def forward(self, x, decay, beta):
            c, _ = causal_conv_with_state(x.transpose(1, 2), self.w, activation="silu")
            qkv = c.transpose(1, 2)
            q, k, v = qkv[..., :8], torch.nn.functional.normalize(qkv[..., 8:12], dim=-1), qkv[..., 12:]
            o, s = linear_attention(q, k, v, decay=decay, beta=beta, q_num_heads=2, kv_num_heads=1)
            return o, s

    torch.manual_seed(1)
    m = Layer()
    args = (torch.randn(2, 5, 24), -torch.rand(2, 5, 1), torch.rand(2, 5, 1))
    path = str(tmp_path / "la.onnx")
    export(m, args, path, input_names=["x", "decay", "beta"], output_names=["o", "s"], opset_version=20)
    model = onnx.load(path)
    assert [o.version for o in model.opset_import if o.domain == ""] == [27]
    assert {n.op_type for n in model.graph.node} >= {"LinearAttention", "CausalConvWithState"}
    with torch.no_grad():
        want = [t.numpy() for t in m(*args)]
    feed = {"x": args[0].numpy(), "decay": args[1].numpy(), "beta": args[2].numpy()}
    for got in (ReferenceEvaluator(model).run(None, feed), xforge.interpret(path, feed)):
        got = list(got.values()) if isinstance(got, dict) else got
        for g, w in zip(got, want):
            assert np.linalg.norm(g - w) / np.linalg.norm(w) < 1e-5
