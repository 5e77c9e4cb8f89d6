#!/usr/bin/env bash
# Scale-out check (issue 4), run on a lent one-GPU machine from the repository root: xlr's DPO training plain and under
# `accelerate launch` with params/accelerate/{fsdp,ddp}.yaml (one process: the machine has one GPU). Prepare here once:
#   echo /.whl/ >> .git/info/exclude; echo /.devcache/ >> .git/info/exclude
#   P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl"
#   .venv/bin/python -m pip download $P transformers==5.24.0 trl==1.16.0 peft==0.21.2 datasets==5.2.0 pydantic==2.14.4 \
#       pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 dill==0.4.1 multiprocess==0.70.19
#   mkdir -p .devcache/tokenizers && cp -r ~/.cache/xlr/tokenizers/smollm2-135m-instruct .devcache/tokenizers/
# then run this script there with carry [.whl, .devcache]. ZeRO-3 is not run: deepspeed is not in the machine's image.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD XLR_CACHE=$PWD/.devcache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
O=${OUT:-/tmp/out}; R=/tmp/acc; mkdir -p "$O" "$R"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$O/versions.txt"
python3 -c "import torch, transformers, trl, peft, datasets, accelerate, pyarrow; print({m.__name__: m.__version__ for m in (torch, transformers, trl, peft, datasets, accelerate, pyarrow)})" 2>&1 | tee -a "$O/versions.txt"
run() {  # name, finetune, [accelerate config]
  local name=$1 ft=$2 cfg=${3:-}
  echo "=== $name" | tee -a "$O/log.txt"
  if [ -z "$cfg" ]; then
    python3 bench/gpu_accelerate_check.py --name "$name" --finetune "$ft" --out $R >>"$O/log.txt" 2>&1
  else
    python3 -m accelerate.commands.launch --config_file "$cfg" --num_processes 1 bench/gpu_accelerate_check.py --name "$name" --finetune "$ft" --out $R >>"$O/log.txt" 2>&1
  fi
  echo "=== $name exit $?" | tee -a "$O/log.txt"
}
for way in plain-full plain-lora fsdp-full fsdp-lora ddp-lora; do  # arguments: run only these ways (default: all)
  [ $# -eq 0 ] || [[ " $* " == *" $way "* ]] || continue
  case $way in
    plain-*) run "$way" "${way#plain-}" ;;
    fsdp-*) run "$way" "${way#fsdp-}" params/accelerate/fsdp.yaml ;;
    ddp-*) run "$way" "${way#ddp-}" params/accelerate/ddp.yaml ;;
  esac
done
python3 bench/gpu_accelerate_check.py --compare --out $R 2>&1 | tee "$O/compare.txt"
grep -E "Error|error:|Traceback|saving the adapter" "$O/log.txt" | sort | uniq -c | sort -rn | head -20 || true
