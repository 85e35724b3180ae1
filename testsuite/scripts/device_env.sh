# Sourced by the device scripts: unpacks the carried release build to /tmp/xforge (as $X),
# prints the card, and lets cuBLASLt and cuDNN load from torch's wheels and the CUDA toolkit.
python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.device-carry/xforge.xz'),open('/tmp/xforge','wb'))" && chmod +x /tmp/xforge
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
NV=$(python3 -c "import nvidia,os;print(os.path.dirname(nvidia.__path__[0]+'/x'))")
export LD_LIBRARY_PATH=$(ls -d $NV/*/lib | tr '\n' ':')/usr/local/cuda/lib64:$LD_LIBRARY_PATH
X=/tmp/xforge
