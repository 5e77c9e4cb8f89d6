#!/usr/bin/env bash
# GPU check (issue 8), run on a lent GPU machine from the repository root. Prepare here first (once):
#   echo /.whl/ >> .git/info/exclude; echo /.devcache/ >> .git/info/exclude
#   .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d .whl transformers==5.24.0
#   mkdir -p .devcache/tokenizers && cp -r ~/.cache/xlr/tokenizers/smollm2-135m-instruct .devcache/tokenizers/
# then run this script there with carry [.whl, .devcache]. The image has torch but not xlr's transformers version;
# the tiny model is rebuilt there from the carried tokenizer (same seed, same weights).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD XLR_CACHE=$PWD/.devcache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 bench/gpu_check.py "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_check.txt"
