#!/bin/bash
# Tensor-core attention on the GPU machine, in one call: the attention kernel cases carried in
# .device-carry/cases.tar.xz through gpu_check (pipelined, the default, and *_sync_*; bench_attention_*
# report TFLOP/s), the zoo's attention models compiled with XFORGE_ATTN_PIPELINE=1 and checked
# against PyTorch (fp32, fp16), then the tile sweep of device_zoo_attention_sweep.sh with the
# pipelined feed, beside the defaults (BASELINE=1) in the same call.
#   [CHECK="NAME..."] [SWEEP="NAME..."] ZOO_BATCH=32 [ROWS=..] [KEYS=..] bash testsuite/scripts/device_attention.sh
source testsuite/scripts/device_env.sh
mkdir -p /tmp/cases && python3 -c "import lzma,tarfile;tarfile.open(fileobj=lzma.open('.device-carry/cases.tar.xz')).extractall('/tmp/cases')" && timeout 90 /tmp/gpu_check /tmp/cases/* 2>&1 | grep -v "^ok " ; timeout 90 /tmp/gpu_check /tmp/cases/bench_attention* 2>&1
export XFORGE_ATTN_PIPELINE=1
CHECK=${CHECK-whisper_encoder vit_b_16 bert clip_vision gpt2 llama t5_encoder swin_t}
[ -n "$CHECK" ] && SHARDS=8 timeout 300 bash testsuite/scripts/device_zoo_check.sh $CHECK 2>&1 | tail -12
BASELINE=1 timeout 300 bash testsuite/scripts/device_zoo_attention_sweep.sh ${SWEEP-whisper_encoder vit_b_16}
