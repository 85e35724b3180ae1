# The selective scan on the GPU machine, one device call: builds mamba_ssm (mamba_build.sh, skipped
# when it is installed already), exports the cases of ssm_check.py, compiles and runs them with
# xforge, checks them with mamba_ssm's tolerances, then times xforge (`xforge bench`) and
# mamba_ssm's selective_scan_fn on the benchmark shapes. SWEEP="VAR=N,VAR=N …" from the
# environment also times the benchmark shapes compiled under each comma-separated set of knob
# overrides (XFORGE_SSM_*, ir/kernel/src/knobs.rs: a tuning sweep).
# Carry: .device-carry/xforge.xz (release build) and .device-carry/bench (with the mamba_ssm tarball).
set -e
. testsuite/scripts/device_env.sh
bash testsuite/scripts/mamba_build.sh
python3 testsuite/scripts/ssm_check.py export /tmp/ssm 2>&1 | grep -v Warn > /dev/null
bench() {  # CASE_DIR LABEL [VAR=N ...]: compile (under the overrides) and time one benchmark case
  env ${@:3} $X compile $1/model.onnx --precision $p -o $1/model.xfa > /dev/null
  echo "$(basename $1): $2 $($X bench $1/model.xfa --runs 200 | sed 's/.*median \([0-9.]*\) ms.*/\1/') ms"
}
for d in /tmp/ssm/*/; do
  p=fp32; case $d in *bf16*) p=bf16;; esac
  if grep -q '"bench": true' $d/case.json; then
    bench $d xforge
    for cfg in $SWEEP; do bench $d "xforge ($cfg)" $(echo $cfg | tr , ' '); done
  else
    $X compile $d/model.onnx --precision $p -o $d/model.xfa > /dev/null
    ins=""; for k in u delta B C z; do [ -f $d/$k.npy ] && ins="$ins --input $k=$d/$k.npy"; done
    $X run $d/model.xfa $ins --output-dir $d/got > /dev/null
  fi
done
python3 testsuite/scripts/ssm_check.py compare /tmp/ssm
(cd testsuite/scripts && python3 ssm_check.py time /tmp/ssm)
# the Mamba block fixture (models/mamba_block: in-projection, causal conv1d, SiLU, x/dt
# projections, the scan, gating, out-projection) against PyTorch's output
for p in fp32 fp16 bf16; do
  bound=1e-3; [ $p = fp16 ] && bound=1e-2; [ $p = bf16 ] && bound=3e-2
  echo "== mamba_block $p: $($X compile models/mamba_block/model.onnx --precision $p -o /tmp/mb.$p.xfa | tail -1)"
  $X run /tmp/mb.$p.xfa --input hidden=models/mamba_block/hidden.npy --output-dir /tmp/mb.$p > /dev/null
  python3 testsuite/scripts/compare_npy.py /tmp/mb.$p models/mamba_block/ref $bound
done
# the unfused form, recognised by the e-graph, against PyTorch's output
. testsuite/scripts/device_ssm_unfused.sh
