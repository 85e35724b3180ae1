# Probe ssdlite fp16 on the GPU: the softmax scores and the NMS operands (boxes, scores, labels)
# as extra outputs, xforge fp16 against onnxruntime fp32 on the real input.
import onnx, numpy as np, subprocess, sys, os, onnxruntime as ort
X, W = sys.argv[1], sys.argv[2]
m = onnx.load(f'{W}/ssdlite320_mobilenet_v3_large.onnx')
extra = ['/m/Softmax_output_0', '/m/Concat_93_output_0', '/m/Concat_94_output_0', '/m/Concat_95_output_0']
types = {'/m/Concat_94_output_0': onnx.TensorProto.FLOAT, '/m/Concat_95_output_0': onnx.TensorProto.INT64}
for e in extra:
    m.graph.output.append(onnx.helper.make_tensor_value_info(e, types.get(e, onnx.TensorProto.FLOAT), None))
onnx.save(m, '/tmp/probe.onnx')
x = np.load(f'{W}/ssdlite320_mobilenet_v3_large.input.npy')
s = ort.InferenceSession('/tmp/probe.onnx')
ref = s.run(None, {s.get_inputs()[0].name: x})
names = [o.name for o in m.graph.output]
for prec in sys.argv[3:]:
    r = subprocess.run([X, 'compile', '/tmp/probe.onnx', '--precision', prec, '-o', f'/tmp/probe.{prec}.xfa'], capture_output=True, text=True)
    print(r.stderr[-300:] if r.returncode else r.stdout.strip()[-120:])
    np.save('/tmp/probe_in.npy', x)
    r = subprocess.run([X, 'run', f'/tmp/probe.{prec}.xfa', '--input', 'input=/tmp/probe_in.npy', '--output-dir', f'/tmp/probe_{prec}'], capture_output=True, text=True)
    print(r.stderr[-300:] if r.returncode else '')
    import re
    for n, want in zip(names, ref):
        f = f'/tmp/probe_{prec}/' + re.sub(r'[^A-Za-z0-9._-]', '_', n) + '.npy'
        got = np.load(f)
        g = got.astype(np.float64); w = want.astype(np.float64)
        msg = f'{prec} {n}: got {got.shape} {got.dtype} want {want.shape}'
        if g.shape == w.shape and g.size:
            msg += f' nan {np.isnan(g).sum()} inf {np.isinf(g).sum()} zeros {(g==0).sum()}/{(w==0).sum()} max|d| {np.nanmax(np.abs(g-w)):.3g} relL2 {np.linalg.norm(np.nan_to_num(g-w))/max(np.linalg.norm(w),1e-30):.2e}'
            if 'Concat_93' in n or 'Concat_94' in n:
                msg += f' range [{np.nanmin(g):.4g}, {np.nanmax(g):.4g}] vs [{w.min():.4g}, {w.max():.4g}]'
        print(msg, flush=True)
