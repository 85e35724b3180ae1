# Several sessions in threads on the GPU machine (`xforge bench --sessions N`): the shipped models
# (mnasnet0_5 has cuDNN steps, bert_tiny cuBLASLt ones) in fp32 and fp16, 2 and 4 sessions.
# Each session's runs must be bit-identical to its first run, and sessions must agree within the
# precision's bound. No export needed, so it is a cheap first call. Carry: .device-carry/xforge.xz.
set -e
. testsuite/scripts/device_env.sh
fail=0
for m in mnasnet0_5 bert_tiny; do
  for p in fp32 fp16; do
    $X compile models/$m.onnx --precision $p -o /tmp/$m.$p.xfa > /dev/null
    for n in 2 4; do
      out=$(timeout 120 $X bench /tmp/$m.$p.xfa --runs 20 --warmup 2 --sessions $n 2>&1) || fail=1
      echo "$m $p, $n sessions: $(echo "$out" | tail -1)"
    done
  done
done
exit $fail
