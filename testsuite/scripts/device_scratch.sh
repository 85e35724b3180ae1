./.device-carry/gpu_check .device-carry/cases/* 2>&1 | tail -40
MODELS="resnet50 bert_base" bash testsuite/scripts/device_library_check.sh 2>&1 | grep -v "Warn\|^wrote\|^output:\|torch.onnx\|is_causal\|condition\|grid\|group" | tail -30
NV=$(python3 -c "import nvidia,os;print(os.path.dirname(nvidia.__path__[0]+'/x'))")
export LD_LIBRARY_PATH=$(ls -d $NV/*/lib | tr '\n' ':')/usr/local/cuda/lib64:$LD_LIBRARY_PATH
XFORGE_CUDNN_ALGO=precomp /tmp/xforge bench /tmp/r/resnet50.fp16.xfa --runs 50
XFORGE_EXPERIMENT_NCHW=1 /tmp/xforge compile /tmp/r/resnet50.onnx --precision fp16 -o /tmp/r/r50nchw.xfa
/tmp/xforge run /tmp/r/r50nchw.xfa --input input=/tmp/r/resnet50.input.npy --output-dir /tmp/r/nchw.out > /dev/null
python3 testsuite/scripts/compare_npy.py /tmp/r/nchw.out /tmp/r/resnet50.ref 1e-2
/tmp/xforge bench /tmp/r/r50nchw.xfa --runs 50 --steps | head -12
XFORGE_CUDNN_ALGO=precomp /tmp/xforge bench /tmp/r/r50nchw.xfa --runs 50
