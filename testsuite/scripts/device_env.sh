# Sourced by the device scripts: unpacks the carried release build to /tmp/xforge (as $X),
# prints the card, and lets cuBLASLt and cuDNN load from torch's wheels and the CUDA toolkit.
# (or .device-carry/bins.tar.xz: several binaries in one archive, which shares their LLVM — xforge
# with conformance, or with the Python package's _xforge.abi3.so; unpacked again on every call)
if [ -f .device-carry/bins.tar.xz ]; then
  python3 -c "import lzma,tarfile;tarfile.open(fileobj=lzma.open('.device-carry/bins.tar.xz')).extractall('/tmp')"
else
  python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.device-carry/xforge.xz'),open('/tmp/xforge','wb'))" && chmod +x /tmp/xforge
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
NV=$(python3 -c "import nvidia,os;print(os.path.dirname(nvidia.__path__[0]+'/x'))")
export LD_LIBRARY_PATH=$(ls -d $NV/*/lib | tr '\n' ':')/usr/local/cuda/lib64:$LD_LIBRARY_PATH
X=/tmp/xforge
