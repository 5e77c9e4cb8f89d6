"""`xlr run`: the whole study for one params file.

The stages, in the paper's order. A stage whose module is not built yet is listed as such, plainly; the
stages that exist run and are recorded in the run manifest (resume: a stage already done with intact
artifacts is skipped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from xlr.config import Params
from xlr.runs import Run, atomic_write_json

# Smoke prompts for the model check: one per language, the same question.
CHECK_PROMPTS = {
    "en": "What is the capital of France? Answer in one sentence.",
    "es": "¿Cuál es la capital de Francia? Responde en una frase.",
    "de": "Was ist die Hauptstadt von Frankreich? Antworte in einem Satz.",
    "ru": "Какая столица Франции? Ответь одним предложением.",
    "fr": "Quelle est la capitale de la France ? Réponds en une phrase.",
    "zh": "法国的首都是哪里？请用一句话回答。",
}


@dataclass(frozen=True)
class Stage:
    name: str
    what: str
    built: bool


STAGES = (
    Stage("data", "load and align training prompts, X-AlpacaEval and English preference pairs", True),
    Stage("models", "prepare pi_ref (and the local judge), check they load and answer", True),
    Stage("anchor", "build pi0 by English DPO of pi_ref; pi0's held-out reward accuracy", False),
    Stage("sampling", "on-policy sampling of N responses per prompt and language", True),
    Stage("rewards", "implicit cross-lingual reward log pi0(y|G(x)) - log pi_ref(y|G(x))", True),
    Stage("pairs", "length-controlled chosen/rejected pairs (alpha search), language fidelity", True),
    Stage("training", "iterative multilingual DPO + NLL", False),
    Stage("evaluation", "X-AlpacaEval generation, judging, WR / LC win rates", False),
    Stage("report", "executed notebooks and HTML reports", False),
)


def greedy_answers(model: Any, tokenizer: Any, prompts: dict[str, str], max_new_tokens: int = 48) -> dict[str, str]:
    """Greedy answers to one user message per key (chat template, generation prompt on)."""
    import torch

    out = {}
    for key, prompt in prompts.items():
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out[key] = tokenizer.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    return out


def stage_data(params: Params, run: Run) -> dict[str, Any]:
    from xlr import data

    counts: dict[str, Any] = {}
    train = data.load_train_prompts(params.languages.train, params.data.n_train_prompts, params.data.prompt_offset, params.data.data_dir)
    counts["train_prompts"] = {lang: train["lang"].count(lang) for lang in params.languages.train}
    ids = data.xalpacaeval_ids(params.evaluation.n_prompts, params.evaluation.subset_seed)
    for lang in params.languages.eval:
        data.load_xalpacaeval(lang, ids, params.evaluation.reference_generator, params.data.data_dir)
    counts["xalpacaeval_prompts_per_language"] = len(ids)
    if params.models.pi0 == "build":
        for split in ("train", "eval"):
            rep = data.LoadReport(params.data.english_preferences)
            ds = data.load_english_preferences(params.data.english_preferences, split, params.data.data_dir, report=rep)
            counts[f"english_{split}"] = len(ds)
            counts[f"english_{split}_skipped"] = dict(rep.skipped)
    out = run.stage_dir("data") / "summary.json"
    atomic_write_json(out, {"counts": counts, "eval_ids": ids})
    run.finish_stage("data", artifacts=[out], counts=counts)
    return counts


def stage_models(params: Params, run: Run) -> dict[str, Any]:
    from xlr.models import load_model, model_record
    from xlr.runtime import resolve_device, resolve_dtype

    device = resolve_device(params.runtime.device)
    dtype, why = resolve_dtype(params.runtime.dtype, device)
    run.manifest["runtime"].update(device=device, dtype=str(dtype).removeprefix("torch."), dtype_reason=why)
    specs = {"pi_ref": params.models.pi_ref}
    if params.models.pi0 != "build":
        specs["pi0"] = params.models.pi0
    if params.judge.backend == "local":
        specs["judge"] = params.judge.model
    answers = {}
    for role, spec in specs.items():
        model, tok = load_model(spec, dtype=dtype, device=device, trust_remote_code=params.models.trust_remote_code)
        run.manifest["models"][role] = model_record(spec)
        langs = [lang for lang in dict.fromkeys(params.languages.train + params.languages.eval) if lang in CHECK_PROMPTS]
        answers[role] = greedy_answers(model, tok, {lang: CHECK_PROMPTS[lang] for lang in langs})
        del model
    out = run.stage_dir("models") / "greedy_check.json"
    atomic_write_json(out, answers)
    run.finish_stage("models", artifacts=[out], counts={"models": len(specs)})
    return answers


def _train_rows(params: Params, iteration: int) -> Any:
    from xlr import data

    offset = params.data.prompt_offset
    if params.training.prompts_per_iteration == "next_slice":
        offset += (iteration - 1) * params.data.n_train_prompts
    return data.load_train_prompts(params.languages.train, params.data.n_train_prompts, offset, params.data.data_dir)


def stage_sampling(params: Params, run: Run, iteration: int = 1) -> dict[str, Any]:
    """N samples per prompt and language from the current policy (pi0 at iteration 1)."""
    from xlr.models import load_model
    from xlr.runtime import resolve_device, resolve_dtype
    from xlr.sampling import GenConfig, HFBackend, VLLMBackend, sample_language

    device = resolve_device(params.runtime.device)
    dtype, _ = resolve_dtype(params.runtime.dtype, device)
    policy_spec = params.models.pi0  # iteration t samples from pi^(t-1); only t = 1 (pi0) exists so far
    model, tok = load_model(policy_spec, dtype=dtype, device=device, trust_remote_code=params.models.trust_remote_code)
    if params.sampling.backend == "vllm":
        path = model.xlr_spec.path
        del model  # vLLM loads its own copy
        backend: Any = VLLMBackend(path, tok, seed=params.seed)
    else:
        backend = HFBackend(model, tok)
    sp = params.sampling
    cfg = GenConfig(n=sp.n_samples, do_sample=True, temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k, max_new_tokens=sp.max_new_tokens, batch_size=sp.batch_size)
    rows = _train_rows(params, iteration)
    counts, artifacts = {}, []
    for lang in params.languages.train:
        lang_rows = [r for r in rows if r["lang"] == lang]
        out = run.stage_dir("sampling", iteration) / lang
        counts[lang] = sample_language(backend, lang_rows, lang, out, cfg, seed=derive_iteration_seed(params.seed, iteration), shard_size=sp.shard_size)
        artifacts += sorted(out.glob("shard-*.jsonl"))
    run.finish_stage("sampling", iteration, artifacts=artifacts, counts=counts, policy=policy_spec)
    return counts


def derive_iteration_seed(seed: int, iteration: int) -> int:
    from xlr.sampling import derive_seed

    return derive_seed(seed, "iteration", iteration)


def stage_rewards(params: Params, run: Run, iteration: int = 1) -> dict[str, Any]:
    """Implicit cross-lingual reward of every sample under (pi0, pi_ref)."""
    import torch

    from xlr.models import load_model
    from xlr.rewards import annotate
    from xlr.runs import atomic_write_jsonl
    from xlr.runtime import resolve_device
    from xlr.sampling import HFBackend, load_samples

    device = resolve_device(params.runtime.device)
    dtype = torch.float32 if params.reward.dtype == "fp32" else torch.bfloat16
    fp32_head = params.reward.dtype != "bf16"
    policy, tok = load_model(params.models.pi0, dtype=dtype, device=device)
    reference, _ = load_model(params.models.pi_ref, dtype=dtype, device=device)
    english = {r["instruction_id"]: r["instruction_en"] for r in _train_rows(params, iteration)}
    samples = [s for lang in params.languages.train for s in load_samples(run.stage_dir("sampling", iteration) / lang)]
    rows = annotate(samples, english, policy, reference, tok, params.reward.variant, params.languages.names, params.reward.batch_tokens,
                    None if params.reward.parity == "none" else params.reward.parity, fp32_head=fp32_head,
                    translator=HFBackend(policy, tok) if params.reward.variant == "R_t" else None, translate_max_new_tokens=params.sampling.max_new_tokens)
    out = run.stage_dir("rewards", iteration) / "rewards.jsonl"
    atomic_write_jsonl(out, rows)
    counts = {"samples": len(rows), "variant": params.reward.variant, "dtype": params.reward.dtype}
    run.finish_stage("rewards", iteration, artifacts=[out], counts=counts)
    return counts


def stage_pairs(params: Params, run: Run, iteration: int = 1) -> dict[str, Any]:
    """Language fidelity of the samples, then length-controlled pairs per language."""
    from xlr.langid import detect, fidelity
    from xlr.pairs import select_pairs
    from xlr.runs import atomic_write_jsonl, read_jsonl

    rewards = read_jsonl(run.stage_dir("rewards", iteration) / "rewards.jsonl")
    detected = detect([r.get("response_original", r["response"]) for r in rewards], params.languages.names)
    ok = {(r["id"], r["sample_idx"]): d == r["lang"] for r, d in zip(rewards, detected, strict=True)}
    rows = _train_rows(params, iteration)
    all_pairs, stats = [], {}
    for lang in params.languages.train:
        lang_rewards = [r for r in rewards if r["lang"] == lang]
        prompts = {r["instruction_id"]: r["instruction"] for r in rows if r["lang"] == lang}
        pairs, st = select_pairs(lang_rewards, prompts, params.pairs.alpha_grid, params.pairs.upper_bound, ok if params.pairs.language_filter else None)
        det_of = {(r["id"], r["sample_idx"]): d for r, d in zip(rewards, detected, strict=True) if r["lang"] == lang}
        st["fidelity"] = {
            "samples": fidelity([lang] * len(lang_rewards), [det_of[(r["id"], r["sample_idx"])] for r in lang_rewards]).get(lang),
            "chosen": fidelity([lang] * len(pairs), [det_of[(p["id"], p["chosen_sample_idx"])] for p in pairs]).get(lang),
            "rejected": fidelity([lang] * len(pairs), [det_of[(p["id"], p["rejected_sample_idx"])] for p in pairs]).get(lang),
        }
        stats[lang] = st
        all_pairs += pairs
    out = run.stage_dir("pairs", iteration) / "pairs.jsonl"
    atomic_write_jsonl(out, all_pairs)
    sout = run.stage_dir("pairs", iteration) / "pairs_stats.json"
    atomic_write_json(sout, stats)
    run.finish_stage("pairs", iteration, artifacts=[out, sout], counts={lang: {"pairs": s["pairs"], "alpha": s["alpha"], "drops": s["drops"]} for lang, s in stats.items()})
    return stats


RUNNERS = {"data": stage_data, "models": stage_models}
ITERATION_RUNNERS = {"sampling": stage_sampling, "rewards": stage_rewards, "pairs": stage_pairs}


def run_study(params: Params, force: bool = False, echo: Any = print) -> Run:
    from xlr.runtime import set_threads

    threads = set_threads(params.runtime.threads)
    run = Run.open(params, force=force)
    run.manifest["runtime"]["threads"] = threads
    run.save()
    t0 = time.monotonic()
    blocked: list[str] = []
    for stage in STAGES:
        if not stage.built:
            continue
        iteration = 1 if stage.name in ITERATION_RUNNERS else None
        if iteration is not None and params.models.pi0 == "build":
            blocked.append(stage.name)
            continue
        if run.stage_done(stage.name, iteration):
            echo(f"[{run.stage_key(stage.name, iteration)}] done earlier, artifacts intact: skipped")
            continue
        echo(f"[{run.stage_key(stage.name, iteration)}] {stage.what}")
        run.start_stage(stage.name, iteration)
        try:
            if iteration is None:
                RUNNERS[stage.name](params, run)
            else:
                ITERATION_RUNNERS[stage.name](params, run, iteration)
        except Exception as e:
            run.fail_stage(stage.name, f"{type(e).__name__}: {e}", iteration)
            raise
    if blocked:
        echo(f"NOT RUN: {', '.join(blocked)} need pi0, and models.pi0 is 'build' while the anchor stage (English DPO) is not built yet. "
             "Give an existing pi0 (e.g. --set models.pi0=SPEC) to run them.")
    if params.iterations > 1 and not blocked:
        echo("NOTE: only iteration 1's sampling/rewards/pairs ran: later iterations need the training stage.")
    missing = [s for s in STAGES if not s.built]
    echo(f"\nRun directory: {run.root}  ({time.monotonic() - t0:.0f} s)")
    if missing:
        echo("NOT BUILT YET (these stages of the method do not exist in xlr yet, so nothing was computed for them):")
        for s in missing:
            echo(f"  - {s.name}: {s.what}")
    return run
