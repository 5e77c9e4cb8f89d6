#!/usr/bin/env bash
# Paper-shaped GPU check (issue 16), run on a lent GPU machine from the repository root: a Llama-3-8B-shaped random-weight
# model in bf16 -- reward scoring, one LoRA and one full (reduced-depth) DPO step, decoding -- and the projected wall time
# of params/paper-llama3-8b.yaml on 1 and 8 GPUs. Nothing depends on it. Prepare here first (once):
#   echo /.whl/ >> .git/info/exclude; echo /.devcache/ >> .git/info/exclude
#   P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl"
#   .venv/bin/python -m pip download $P transformers==5.24.0 peft==0.21.2
#   mkdir -p .devcache/tokenizers && cp -r ~/.cache/xlr/tokenizers/smollm2-135m-instruct .devcache/tokenizers/
# then run this script there with carry [.whl, .devcache] and a timeout_s above LIMIT (default 420 s; the script itself
# takes a few minutes on an H200). The image has torch but not xlr's transformers version. Arguments go to the script
# (e.g. --full-layers 12 if 16 layers run out of memory). Smoke test here, on the CPU: python bench/gpu_paper_check.py --tiny
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD XLR_CACHE=$PWD/.devcache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/versions.txt"
timeout -k 10 "${LIMIT:-420}" python3 bench/gpu_paper_check.py "$@" 2>&1 | tee "$OUT/gpu_paper_check.txt"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 124 ] && echo "gpu_paper_check.py stopped at ${LIMIT:-420} s: $OUT/gpu_paper_check.json holds the parts that finished (complete: false)"
exit "$rc"
