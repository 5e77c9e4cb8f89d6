"""`xlr run`: the whole study for one params file.

The stages, in the paper's order. A stage whose module is not built yet is listed as such, plainly; the
stages that exist run and are recorded in the run manifest (resume: a stage already done with intact
artifacts is skipped).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlr import distributed
from xlr.config import Params
from xlr.runs import Run, atomic_write_json, atomic_write_jsonl

log = logging.getLogger(__name__)

# Smoke prompts for the model check: one per language, the same question.
CHECK_PROMPTS = {
    "en": "What is the capital of France? Answer in one sentence.",
    "es": "¿Cuál es la capital de Francia? Responde en una frase.",
    "de": "Was ist die Hauptstadt von Frankreich? Antworte in einem Satz.",
    "ru": "Какая столица Франции? Ответь одним предложением.",
    "fr": "Quelle est la capitale de la France ? Réponds en une phrase.",
    "zh": "法国的首都是哪里？请用一句话回答。",
    "it": "Qual è la capitale della Francia? Rispondi con una frase.",
    "ja": "フランスの首都はどこですか？一文で答えてください。",
    "ko": "프랑스의 수도는 어디입니까? 한 문장으로 답하세요.",
    "ar": "ما هي عاصمة فرنسا؟ أجب بجملة واحدة.",
    "bn": "ফ্রান্সের রাজধানী কী? এক বাক্যে উত্তর দাও।",
    "sw": "Mji mkuu wa Ufaransa ni upi? Jibu kwa sentensi moja.",
    "th": "เมืองหลวงของฝรั่งเศสคืออะไร ตอบเป็นประโยคเดียว",
}


class StudyError(ValueError):
    """A run that cannot proceed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Stage:
    name: str
    what: str
    built: bool


STAGES = (
    Stage("data", "load and align training prompts, X-AlpacaEval and English preference pairs", True),
    Stage("models", "prepare pi_ref (and the local judge), check they load and answer", True),
    Stage("anchor", "build pi0 by English DPO of pi_ref; pi0's held-out reward accuracy", True),
    Stage("probe", "cross-lingual reward probe: does pi0/pi_ref's reward prefer the target language and the stronger answer? (no judge)", True),
    Stage("sampling", "on-policy sampling of N responses per prompt and language", True),
    Stage("rewards", "implicit cross-lingual reward log pi0(y|G(x)) - log pi_ref(y|G(x))", True),
    Stage("pairs", "length-controlled chosen/rejected pairs (alpha search), language fidelity", True),
    Stage("training", "iterative multilingual DPO + NLL", True),
    Stage("generation", "X-AlpacaEval and Language Confusion Benchmark answers of every model (pi_ref, pi0, pi^1..pi^T) in every eval language", True),
    Stage("judging", "judge validation against GPT-4-turbo's AlpacaEval 2 judgments and on English labels; each model vs GPT-4-turbo references; "
                     "pi^t vs pi0 head-to-head", True),
    Stage("metrics", "WR and length-controlled WR with bootstrap CIs, head-to-head, language fidelity (LPR/WPR/LCPR) with paired tests vs pi0", True),
    Stage("report", "executed notebooks and HTML reports (xlr run without --direct)", True),
)


def greedy_answers(model: Any, tokenizer: Any, prompts: dict[str, str], max_new_tokens: int = 48) -> dict[str, str]:
    """Greedy answers to one user message per key, through the sampling backend (chat template, one batch)."""
    from xlr.chat import render_prompt
    from xlr.sampling import GenConfig, HFBackend

    gens = HFBackend(model, tokenizer).generate([render_prompt(tokenizer, p) for p in prompts.values()],
                                                GenConfig(n=1, do_sample=False, max_new_tokens=max_new_tokens, batch_size=len(prompts)))
    return {key: g[0].text for key, g in zip(prompts, gens, strict=True)}


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
    dtype, why = resolve_dtype(params.runtime.dtype, device, params.runtime.bf16)
    run.manifest["runtime"].update(device=device, dtype=str(dtype).removeprefix("torch."), dtype_reason=why)
    record_precision(run, "runtime.dtype", params.runtime.dtype, str(dtype).removeprefix("torch.").replace("float32", "fp32").replace("bfloat16", "bf16"), why)
    specs = {"pi_ref": params.models.pi_ref}
    if params.models.pi0 != "build":
        specs["pi0"] = params.models.pi0
    if params.judge.backend == "local":
        specs["judge"] = params.judge.model
    answers = {}
    wanted = list(dict.fromkeys(params.languages.train + params.languages.eval))
    langs = [lang for lang in wanted if lang in CHECK_PROMPTS]
    unchecked = [lang for lang in wanted if lang not in CHECK_PROMPTS]
    if unchecked:  # counted and shown (stage counts, report), never skipped without a word
        log.warning("model check: no check prompt for %s (CHECK_PROMPTS in xlr/study.py has %s); these languages are not checked",
                    ", ".join(unchecked), ", ".join(CHECK_PROMPTS))
    for role, spec in specs.items():
        model, tok = load_model(spec, dtype=dtype, device=device, trust_remote_code=params.models.trust_remote_code)
        run.manifest["models"][role] = model_record(spec)
        answers[role] = greedy_answers(model, tok, {lang: CHECK_PROMPTS[lang] for lang in langs})
        del model
    out = run.stage_dir("models") / "greedy_check.json"
    atomic_write_json(out, answers)
    run.finish_stage("models", artifacts=[out], counts={"models": len(specs), "languages_checked": len(langs), "languages_not_checked": unchecked})
    return answers


def _train_rows(params: Params, iteration: int) -> Any:
    from xlr import data

    offset = params.data.prompt_offset
    if params.training.prompts_per_iteration == "next_slice":
        offset += (iteration - 1) * params.data.n_train_prompts
    return data.load_train_prompts(params.languages.train, params.data.n_train_prompts, offset, params.data.data_dir)


def stage_sampling(params: Params, run: Run, iteration: int = 1) -> dict[str, Any]:
    """N samples per prompt and language from the current policy (pi0 at iteration 1)."""
    from xlr.runtime import resolve_device, resolve_dtype
    from xlr.sampling import EngineConfig, GenConfig, SamplingTask, sample_tasks

    device = resolve_device(params.runtime.device)
    dtype, _ = resolve_dtype(params.runtime.dtype, device, params.runtime.bf16)
    policy_spec = policy_at(params, run, iteration - 1)  # iteration t samples from pi^(t-1)
    sp = params.sampling
    # one engine in this process, or sampling.data_parallel_size engines (worker processes, each on its own GPUs)
    engine = EngineConfig(sp.backend, policy_spec, dtype=dtype, device=device, trust_remote_code=params.models.trust_remote_code, seed=params.seed,
                          tensor_parallel_size=sp.tensor_parallel_size, data_parallel_size=sp.data_parallel_size)
    cfg = GenConfig(n=sp.n_samples, do_sample=True, temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k, max_new_tokens=sp.max_new_tokens, batch_size=sp.batch_size)
    rows = _train_rows(params, iteration)
    root = run.stage_dir("sampling", iteration)
    tasks = [SamplingTask(lang, [r for r in rows if r["lang"] == lang], lang, root / lang, cfg, derive_iteration_seed(params.seed, iteration))
             for lang in params.languages.train]
    counts = sample_tasks(engine, tasks, sp.shard_size, root / "engines")
    artifacts = [p for lang in params.languages.train for p in sorted((root / lang).glob("shard-*.jsonl"))]
    run.finish_stage("sampling", iteration, artifacts=artifacts, counts=counts, policy=policy_spec)
    return counts


def derive_iteration_seed(seed: int, iteration: int) -> int:
    from xlr.sampling import derive_seed

    return derive_seed(seed, "iteration", iteration)


def stage_rewards(params: Params, run: Run, iteration: int = 1) -> dict[str, Any]:
    """Implicit cross-lingual reward of every sample under (pi0, pi_ref)."""
    from xlr.models import load_model
    from xlr.runtime import resolve_device
    from xlr.sampling import HFBackend, load_samples

    device = distributed.local_device(resolve_device(params.runtime.device))  # under accelerate launch: this rank's GPU
    dtype, fp32_head, used = scoring_precision(params, params.reward.dtype, "reward.dtype", run)
    pol_spec, ref_spec = reward_models(params, run, iteration)
    policy, tok = load_model(pol_spec, dtype=dtype, device=device)
    reference, _ = load_model(ref_spec, dtype=dtype, device=device)
    rp = params.reward
    english = {r["instruction_id"]: r["instruction_en"] for r in _train_rows(params, iteration)}
    samples = [s for lang in params.languages.train for s in load_samples(run.stage_dir("sampling", iteration) / lang)]
    r_t_reference = rp.variant == "R_t" and rp.rt_style == "reference"
    skipped_en = sum(s["lang"] == "en" for s in samples) if r_t_reference else 0
    if r_t_reference:  # the reference gives English no R_t reward (utils/generate_preference_pair.py); counted, and pairs says so
        samples = [s for s in samples if s["lang"] != "en"]
    # every rank scores its shard (one process: all); the main process gets every row back, in order, and writes
    rows = distributed.annotate_sharded(samples, english, policy, reference, tok, variant=rp.variant, names=params.languages.names,
                                        batch_tokens=rp.batch_tokens, parity=None if rp.parity == "none" else rp.parity,
                                        fp32_head=fp32_head, share_prompts=rp.share_prompts,
                                        translator=HFBackend(policy, tok) if rp.variant == "R_t" else None,
                                        translate_max_new_tokens=rp.rt_max_new_tokens, rt_style=rp.rt_style)
    if rows is None:  # another rank: its share went to the main process, which writes and records the stage
        return {}
    out = run.stage_dir("rewards", iteration) / "rewards.jsonl"
    atomic_write_jsonl(out, rows)
    counts: dict[str, Any] = {"samples": len(rows), "variant": rp.variant, "dtype": used, "dtype_requested": rp.dtype}
    if rp.variant == "R_t":
        from xlr.rewards import translation_counts

        counts["r_t"] = translation_counts(rows, rp.rt_style, rp.rt_max_new_tokens, skipped_en)
    run.finish_stage("rewards", iteration, artifacts=[out], counts=counts, policy=pol_spec, reference=ref_spec)
    return counts


def stage_pairs(params: Params, run: Run, iteration: int = 1) -> dict[str, Any]:
    """Language fidelity of the samples, then length-controlled pairs per language."""
    from xlr.langid import detect, fidelity
    from xlr.pairs import select_pairs
    from xlr.runs import atomic_write_jsonl, read_jsonl

    from xlr.langid import unsupported_languages

    rewards = read_jsonl(run.stage_dir("rewards", iteration) / "rewards.jsonl")
    detected = detect([r.get("response_original", r["response"]) for r in rewards], params.languages.names)
    undetectable = unsupported_languages(params.languages.train, "lingua")
    if undetectable and params.pairs.language_filter:  # the filter would drop every sample of such a language as wrong-language
        raise StudyError(f"pairs.language_filter: lingua cannot detect {', '.join(undetectable)} ({'; '.join(undetectable.values())}). "
                         "Fix: set pairs.language_filter: false, or train without these languages.")
    ok = {(r["id"], r["sample_idx"]): d == r["lang"] for r, d in zip(rewards, detected, strict=True)}
    rows = _train_rows(params, iteration)
    all_pairs, stats = [], {}
    for lang in params.languages.train:
        lang_rewards = [r for r in rewards if r["lang"] == lang]
        prompts = {r["instruction_id"]: r["instruction"] for r in rows if r["lang"] == lang}
        pairs, st = select_pairs(lang_rewards, prompts, params.pairs.alpha_grid, params.pairs.upper_bound, ok if params.pairs.language_filter else None,
                                 above_bound=params.pairs.above_bound)
        if not lang_rewards and lang == "en" and params.reward.variant == "R_t" and params.reward.rt_style == "reference":
            st["drops"]["no R_t reward in English, as the reference (prompt)"] = len(prompts)  # counted, not a silent zero
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


def policy_at(params: Params, run: Run, t: int) -> str:
    """Spec of pi^t: pi0 for t = 0 (given, or built by the anchor stage), else iteration t's trained model."""
    if t == 0:
        return str(run.root / "anchor" / "model") if params.models.pi0 == "build" else params.models.pi0
    merged = params.training.save_merged or params.training.finetune == "full"
    return str(run.root / f"iter{t}" / "training" / ("model" if merged else "adapter"))


def reward_models(params: Params, run: Run, t: int) -> tuple[str, str]:
    """(policy, reference) giving the implicit reward at iteration t (params reward.models)."""
    if params.reward.models == "pi0/pi_ref":
        return policy_at(params, run, 0), params.models.pi_ref
    if params.reward.models == "prev/pi_ref":
        return policy_at(params, run, t - 1), params.models.pi_ref
    return policy_at(params, run, t - 1), (policy_at(params, run, t - 2) if t >= 2 else params.models.pi_ref)


def scoring_precision(params: Params, name: str, field: str, run: Run | None = None) -> tuple[Any, bool, str]:
    """reward.dtype / anchor.score_dtype -> (torch dtype of the models, LM head in fp32, name used), through the bf16
    capability check (xlr.runtime.scoring_precision, runtime.bf16); the choice and its reason go to the manifest's
    runtime.precision[field] when a run is given."""
    from xlr.runtime import resolve_device
    from xlr.runtime import scoring_precision as resolve

    dtype, fp32_head, used, why = resolve(name, field, resolve_device(params.runtime.device), params.runtime.bf16)
    if run is not None:
        record_precision(run, field, name, used, why)
    return dtype, fp32_head, used


def record_precision(run: Run, field: str, requested: str, used: str, reason: str) -> None:
    """manifest runtime.precision[field] = {requested, used, reason}: the report's provenance shows each fallback."""
    fell_back = requested.startswith("bf16") and not used.startswith("bf16")  # "auto" resolving to fp32 is not a fallback
    run.manifest["runtime"].setdefault("precision", {})[field] = {"requested": requested, "used": used, "fell_back": fell_back, "reason": reason}
    if fell_back:
        log.warning("%s: %s requested, %s used: %s", field, requested, used, reason)


def _runtime_dtype(params: Params) -> tuple[Any, str]:
    from xlr.runtime import resolve_device, resolve_dtype

    device = resolve_device(params.runtime.device)
    return resolve_dtype(params.runtime.dtype, device, params.runtime.bf16)[0], device


def _dpo_head(params: Params, run: Run, head: str, dtype: Any, device: str, field: str) -> str:
    from xlr.runtime import dpo_head

    head, why = dpo_head(head, dtype, field, device, params.runtime.bf16)
    record_precision(run, field, head, head, why)
    return head


def select_by_score_margin(pairs: Any, min_margin: float, source: str) -> tuple[Any, int]:
    """The pairs whose rating margin is at least ``min_margin`` (in order) and how many were below it. The idea: a
    DPO reward learns UltraFeedback's ties and half-point pairs as firmly as clear ones (in one paired try it did not
    raise the held-out accuracy, bench/RESULTS.md)."""
    if min_margin <= 0:
        return pairs, 0
    margins = pairs["score_margin"]
    if any(m is None for m in margins):
        raise StudyError(f"anchor.min_score_margin {min_margin}: source {source!r} has pairs without rating scores (score_chosen/score_rejected). "
                         "Fix: set anchor.min_score_margin: 0, or use a source with scores (ultrafeedback).")
    keep = [i for i, m in enumerate(margins) if m >= min_margin]
    return pairs.select(keep), len(margins) - len(keep)


def stage_anchor(params: Params, run: Run) -> dict[str, Any]:
    """pi0 = English DPO of pi_ref on held-in preference pairs; its implicit reward's accuracy on held-out pairs."""
    from xlr import data
    from xlr.models import load_model
    from xlr.train import reward_accuracy, to_conversational, train_dpo

    a = params.anchor
    reports = {split: data.LoadReport(params.data.english_preferences) for split in ("train", "eval")}
    train = data.load_english_preferences(params.data.english_preferences, "train", params.data.data_dir, report=reports["train"])
    held = data.load_english_preferences(params.data.english_preferences, "eval", params.data.data_dir, report=reports["eval"])
    train, below_margin = select_by_score_margin(train, a.min_score_margin, params.data.english_preferences)
    if len(train) < a.n_train:
        raise StudyError(f"anchor: {len(train)} usable train pairs ({below_margin} below anchor.min_score_margin {a.min_score_margin}), params ask {a.n_train} "
                         "(anchor.n_train). Fix: lower anchor.n_train or anchor.min_score_margin.")
    n_eval = min(a.n_eval, len(held))  # all held-out pairs up to n_eval (the shipped file has 199 usable of 200)
    pairs = [to_conversational(r["messages"], r["chosen"], r["rejected"]) for r in train.select(range(a.n_train))]
    dtype, device = _runtime_dtype(params)
    head = _dpo_head(params, run, a.head, dtype, device, "anchor.head")
    out = run.stage_dir("anchor")
    record = train_dpo(params.models.pi_ref, pairs, out, beta=a.beta, learning_rate=a.learning_rate, epochs=a.epochs, batch_size=a.batch_size,
                       grad_accum=a.grad_accum, max_length=a.max_length, finetune=a.finetune, lora=a.lora, seed=params.seed, dtype=dtype, device=device, head=head,
                       save_steps=a.checkpoint_steps, warmup_ratio=a.warmup_ratio)
    if not distributed.is_main():  # a multi-process launch trained on every rank; the main process alone measures and records
        return {}
    score_dtype, fp32_head, score = scoring_precision(params, a.score_dtype or params.reward.dtype, "anchor.score_dtype" if a.score_dtype else "reward.dtype", run)
    pi0, tok = load_model(str(out / "model"), dtype=score_dtype, device=device)
    pi_ref, _ = load_model(params.models.pi_ref, dtype=score_dtype, device=device)
    eval_rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "tie": r["tie"], "score_margin": r["score_margin"]}
                 for r in held.select(range(n_eval))]
    acc = reward_accuracy(pi0, pi_ref, tok, eval_rows, n_boot=a.bootstrap, seed=params.seed, batch_tokens=params.reward.batch_tokens,
                          fp32_head=fp32_head)
    acc["score_dtype"] = score
    acc["score_dtype_requested"] = a.score_dtype or params.reward.dtype
    atomic_write_jsonl(out / "reward_accuracy_pairs.jsonl", acc.pop("per_pair"))
    atomic_write_json(out / "reward_accuracy.json", acc)
    run.manifest["models"]["pi0"] = {"spec": str(out / "model"), "built_from": params.models.pi_ref, "reward_accuracy": acc}
    run.finish_stage("anchor", artifacts=[out / "reward_accuracy.json", out / "reward_accuracy_pairs.jsonl", out / "metrics.json", out / "model" / "xlr_model.json"],
                     counts={"train_pairs": record["pairs"], "below_min_score_margin": below_margin, "dropped_prompt_too_long": record["dropped_prompt_too_long"], "truncated": record["truncated"],
                             "eval_pairs": n_eval, "skipped_when_loaded": {k: dict(r.skipped) for k, r in reports.items()},
                             "reward_accuracy": acc["accuracy"], "ci95": acc["ci95"]})
    return acc


def stage_probe(params: Params, run: Run) -> dict[str, Any]:
    """The paper's claim tested directly with pi0 and pi_ref only (xlr.probe): per training language and reward variant,
    does the reward prefer the answer in the target language, and the stronger model's answer, as it does in English?"""
    from xlr.probe import run_probe

    _, device = _runtime_dtype(params)  # scored in reward.dtype, as the rewards stage
    scoring_precision(params, params.reward.dtype, "reward.dtype", run)  # recorded: the probe resolves the same precision
    result = run_probe(params, policy_at(params, run, 0), params.models.pi_ref, run.stage_dir("probe"), dtype=None, device=device)
    run.finish_stage("probe", artifacts=result["artifacts"], counts=result["counts"])
    return result


def stage_training(params: Params, run: Run, iteration: int) -> dict[str, Any]:
    """DPO (sigmoid, beta) + NLL on chosen (nll_weight) of pi^(t-1) on iteration t's pairs -> pi^t."""
    from xlr.runs import read_jsonl
    from xlr.train import to_conversational, train_dpo

    tp = params.training
    rows = read_jsonl(run.stage_dir("pairs", iteration) / "pairs.jsonl")
    if not rows:
        raise StudyError(f"iteration {iteration}: no pairs to train on (see {run.stage_dir('pairs', iteration) / 'pairs_stats.json'} for the drops).")
    pairs = [to_conversational(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    dtype, device = _runtime_dtype(params)
    head = _dpo_head(params, run, tp.head, dtype, device, "training.head")
    start = policy_at(params, run, iteration - 1)
    loss_type, weights = (["sigmoid", "sft"], [1.0, tp.nll_weight]) if tp.nll_weight > 0 else (["sigmoid"], [1.0])
    out = run.stage_dir("training", iteration)
    record = train_dpo(start, pairs, out, beta=tp.beta, learning_rate=tp.learning_rate, epochs=tp.epochs, batch_size=tp.batch_size, grad_accum=tp.grad_accum,
                       max_length=tp.max_length, finetune=tp.finetune, lora=tp.lora, loss_type=loss_type, loss_weights=weights, warmup_ratio=tp.warmup_ratio,
                       seed=params.seed + iteration, dtype=dtype, device=device, head=head, save_merged=tp.save_merged,
                       precompute_ref_log_probs=tp.precompute_ref_log_probs, save_steps=tp.checkpoint_steps,
                       reference_spec=params.models.pi_ref if tp.dpo_reference == "pi_ref" else None)
    run.finish_stage("training", iteration, artifacts=[out / "metrics.json", Path(policy_at(params, run, iteration)) / "xlr_model.json"],
                     counts={k: record[k] for k in ("pairs", "dropped_prompt_too_long", "truncated")}, start=start, loss_type=loss_type, loss_weights=weights)
    return record


# ----------------------------------------------------------------------------------------------------------------
# X-AlpacaEval (xlr.evaluate, xlr.judge, xlr.winrate)


def _eval_models(params: Params, run: Run) -> dict[str, str]:
    from xlr.evaluate import model_names

    return {name: (params.models.pi_ref if name == "pi_ref" else policy_at(params, run, 0 if name == "pi0" else int(name[2:])))
            for name in model_names(params.iterations)}


def _eval_rows(params: Params, lang: str) -> list[dict[str, Any]]:
    from xlr import data

    ids = data.xalpacaeval_ids(params.evaluation.n_prompts, params.evaluation.subset_seed)
    return list(data.load_xalpacaeval(lang, ids, params.evaluation.reference_generator, params.data.data_dir))


def stage_generation(params: Params, run: Run) -> dict[str, Any]:
    """One answer per X-AlpacaEval prompt, model and eval language (paper: T 0.6, top_p 0.9, 2048 tokens)."""
    from xlr.evaluate import eval_dir, write_outputs
    from xlr.sampling import EngineConfig, GenConfig, SamplingTask, derive_seed, sample_tasks

    dtype, device = _runtime_dtype(params)
    ev, sp = params.evaluation, params.sampling
    cfg = GenConfig(n=1, do_sample=ev.temperature > 0, temperature=ev.temperature or 1.0, top_p=ev.top_p, max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size)
    lcb_cfg = GenConfig(n=1, do_sample=cfg.do_sample, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=ev.lcb_max_new_tokens, batch_size=ev.batch_size)
    counts: dict[str, Any] = {}
    artifacts = []
    rows = {lang: _eval_rows(params, lang) for lang in params.languages.eval}  # loaded once, answered by every model
    lcb, skipped = lcb_rows(params)
    for name, spec in _eval_models(params, run).items():
        # every answer set of a model in one call: its engine(s) start once (evaluation.* parallelism, None = sampling's)
        engine = EngineConfig(ev.backend or sp.backend, spec, dtype=dtype, device=device, trust_remote_code=params.models.trust_remote_code, seed=params.seed,
                              field="evaluation.backend" if ev.backend else "sampling.backend",
                              tensor_parallel_size=ev.tensor_parallel_size or sp.tensor_parallel_size, data_parallel_size=ev.data_parallel_size or sp.data_parallel_size)
        jobs = [(f"{name}/{lang}", rows[lang], lang, eval_dir(run.root, name, lang), cfg, derive_seed(params.seed, "eval", name)) for lang in params.languages.eval]
        jobs += [(f"{name}/lcb-{task}/{lang}", lrows, lang, lcb_dir(run.root, name, task, lang), lcb_cfg, derive_seed(params.seed, "lcb", task, name))
                 for task, lang_rows in lcb.items() for lang, lrows in lang_rows.items()]
        tasks = [SamplingTask(key, [{"instruction_id": r["id"], "instruction": r["instruction"]} for r in jrows], lang, out, c, seed)
                 for key, jrows, lang, out, c, seed in jobs]
        counts.update(sample_tasks(engine, tasks, sp.shard_size, run.stage_dir("generation") / "engines" / name))
        for _, jrows, lang, out, _, _ in jobs:
            write_outputs(jrows, lang, out, f"{params.name}/{name}")
            artifacts.append(out / "outputs.json")
    counts["lcb_languages_skipped"] = skipped
    run.finish_stage("generation", artifacts=artifacts, counts=counts)
    return counts


def lcb_rows(params: Params) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, list[str]]]:
    """The Language Confusion Benchmark prompts every model answers: {task: {lang: rows}} for the eval languages the
    benchmark has (monolingual: the user writes in l; crosslingual: an English request for l, the paper's setting),
    and per task the eval languages it lacks (reported as skipped, never silently)."""
    from xlr import data

    ev = params.evaluation
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    skipped: dict[str, list[str]] = {}
    for task in ev.lcb_sets:
        have = set(data.lcb_languages(task, params.data.data_dir))
        langs = [lang for lang in params.languages.eval if lang in have and not (task == "crosslingual" and lang == "en")]
        skipped[task] = [lang for lang in params.languages.eval if lang not in langs]
        rows = data.load_lcb_prompts(task, langs, ev.lcb_n_prompts, ev.subset_seed, params.data.data_dir)
        out[task] = {lang: [{"id": r["id"], "instruction": r["prompt"], "dataset": r["source"]} for r in rows if r["lang"] == lang] for lang in langs}
    return out, skipped


def lcb_dir(root: Path, model: str, task: str, lang: str) -> Path:
    return root / "eval" / model / f"lcb-{task}" / lang


def stage_judging(params: Params, run: Run) -> dict[str, Any]:
    """Judge validation, then every model vs the references (random order per item), then pi^t vs pi0 (both orders)."""
    from xlr import data
    from xlr.evaluate import eval_dir, head_to_head_items, judge_agreement, load_outputs, reference_items, validation_items
    from xlr.judge import JudgeCache, cache_path, judge_pairs, make_judge, protocol_spec, protocol_template
    from xlr.judge_validation import validate
    from xlr.paths import runs_dir
    from xlr.runs import atomic_write_jsonl as write_judgments

    dtype, device = _runtime_dtype(params)
    jp = params.judge
    judge = make_judge(jp, dtype=dtype, device=device, trust_remote_code=params.models.trust_remote_code)
    cache = JudgeCache(cache_path(runs_dir(), judge.id))
    template = protocol_template(jp.same_language_clause)
    price = (jp.price_per_1k_input, jp.price_per_1k_output)
    stats: dict[str, Any] = {}
    artifacts = []
    ev_dir = run.root / "eval"
    held = data.load_english_preferences(params.data.english_preferences, "eval", params.data.data_dir)
    # judge validation with the very prompt used for the evaluation (English pairs: the same-language clause is moot)
    recs, st = judge_pairs(judge, validation_items(held, jp.n_validation_pairs), cache, jp.order_seed, template, order_seed_columns=jp.order_seed_columns, orders="both", price_per_1k=price,
                           desc="judge validation", protocol=protocol_spec(jp))
    write_judgments(ev_dir / "judge_validation.jsonl", recs)
    agreement = judge_agreement(recs, n_boot=params.evaluation.bootstrap, seed=params.seed) | {"judge": judge.id, "stats": st.as_dict()}
    atomic_write_json(ev_dir / "judge_validation.json", agreement)
    artifacts += [ev_dir / "judge_validation.jsonl", ev_dir / "judge_validation.json"]
    stats["validation"] = st.as_dict()
    # the judge (with the study's protocol) against GPT-4-turbo's own AlpacaEval 2 verdicts: balanced, length-matched, ranking
    # of models, and the three shipped models on X-AlpacaEval beside the paper's Table 2 (xlr.judge_validation)
    val = validate(params, n_items=jp.validation_items, protocols=[jp.protocol], xae_items=jp.validation_xae_items, out_dir=ev_dir / "judge_validation_alpacaeval",
             rank_items=jp.validation_rank_items, max_chars=jp.validation_max_chars, uf_items=0, judge=judge, cache=cache)
    artifacts.append(ev_dir / "judge_validation_alpacaeval" / "judge_validation.json")
    stats["alpacaeval_validation"] = {k: val["judge_stats"].get(k, 0) for k in ("calls", "cache_hits", "identical_outputs", "unjudgeable", "tokens_in", "tokens_out", "cost_usd")}
    protocol = protocol_spec(jp)
    names = list(_eval_models(params, run))
    for lang in params.languages.eval:
        refs = {r["id"]: r["reference_output"] for r in _eval_rows(params, lang)}
        outputs = {name: load_outputs(eval_dir(run.root, name, lang)) for name in names}  # read once per language
        # Every model of a language in ONE judge call first (issue 15): the judge cache is keyed by rendered prompt, so
        # the per-model calls below find every judgment there, while the local judge shares the KV of what the models'
        # prompts of one item have in common (instruction; with the reference first, the reference too).
        everyone = [it for name in names for it in reference_items(outputs[name], refs)]
        _, st = judge_pairs(judge, everyone, cache, jp.order_seed, template, order_seed_columns=jp.order_seed_columns, orders=jp.orders, price_per_1k=price, desc=f"judging all models / {lang}", protocol=protocol)
        stats[f"all-models/{lang}"] = st.as_dict()
        h2h = params.evaluation.head_to_head and "pi0" in outputs
        if h2h:
            everyone = [it for name in names if name != "pi0" for it in head_to_head_items(outputs[name], outputs["pi0"])]
            _, st = judge_pairs(judge, everyone, cache, jp.order_seed, template, order_seed_columns=jp.order_seed_columns, orders="both", price_per_1k=price, desc=f"all vs pi0 / {lang}", protocol=protocol)
            stats[f"all-models/{lang}/h2h"] = st.as_dict()
        for name in names:
            d = eval_dir(run.root, name, lang)
            recs, st = judge_pairs(judge, reference_items(outputs[name], refs), cache, jp.order_seed, template, order_seed_columns=jp.order_seed_columns, orders=jp.orders, price_per_1k=price,
                                   desc=f"judging {name}/{lang}", protocol=protocol)
            write_judgments(d / "judgments.jsonl", recs)
            stats[f"{name}/{lang}"] = st.as_dict()
            artifacts.append(d / "judgments.jsonl")
            if h2h and name != "pi0":  # pi_ref vs pi0 too: the anchor's own effect
                recs, st = judge_pairs(judge, head_to_head_items(outputs[name], outputs["pi0"]), cache, jp.order_seed, template, order_seed_columns=jp.order_seed_columns, orders="both", price_per_1k=price,
                                       desc=f"{name} vs pi0 / {lang}", protocol=protocol)
                write_judgments(d / "h2h_vs_pi0.jsonl", recs)
                stats[f"{name}/{lang}/h2h"] = st.as_dict()
                artifacts.append(d / "h2h_vs_pi0.jsonl")
    # totals over the calls that did the work: the per-model sets read the all-models calls' judgments from the cache
    work = [v for k, v in stats.items() if k in ("validation", "alpacaeval_validation") or k.startswith("all-models/")]
    totals = {k: sum(s[k] for s in work) for k in ("calls", "cache_hits", "identical_outputs", "unjudgeable", "tokens_in", "tokens_out")}
    totals["cost_usd"] = round(sum(s["cost_usd"] for s in work), 6)
    run.finish_stage("judging", artifacts=artifacts, counts={"totals": totals, "per_set": stats, "judge_agreement": agreement["agreement"]}, judge=judge.id)
    return stats


def stage_metrics(params: Params, run: Run) -> dict[str, Any]:
    """WR / discrete WR / LC with CIs and head-to-head vs pi0 (where a judge ran), and the judge-free language fidelity
    (LPR / WPR / LCPR with CIs, McNemar vs pi0) of every model's X-AlpacaEval and LCB answers."""
    from xlr import data
    from xlr.evaluate import eval_dir, fidelity_rows, load_lc_files, load_outputs, model_metrics
    from xlr.runs import read_jsonl

    ev = params.evaluation
    rows = []
    artifacts = []
    models = list(_eval_models(params, run))
    judged = params.judge.backend != "none"
    if judged:
        difficulty, gamed = load_lc_files(ev.instruction_difficulty_csv, ev.gamed_csv, params.data.data_dir)
        for lang in params.languages.eval:
            refs = {r["id"]: r["reference_output"] for r in _eval_rows(params, lang)}
            for name in models:
                d = eval_dir(run.root, name, lang)
                h2h = read_jsonl(d / "h2h_vs_pi0.jsonl") if (d / "h2h_vs_pi0.jsonl").is_file() else None
                m = model_metrics(load_outputs(d), read_jsonl(d / "judgments.jsonl"), refs, lang, h2h=h2h, n_boot=ev.bootstrap,
                                  lc_boot=ev.lc_bootstrap, seed=params.seed, difficulty=difficulty, gamed=gamed)
                m["model"] = name
                atomic_write_json(d / "metrics.json", m)
                artifacts.append(d / "metrics.json")
                rows.append(m)
    outputs = {(name, "x-alpacaeval", lang): load_outputs(eval_dir(run.root, name, lang)) for name in models for lang in params.languages.eval}
    lcb, _ = lcb_rows(params)
    for task, by_lang in lcb.items():
        for lang in by_lang:
            outputs |= {(name, f"lcb-{task}", lang): load_outputs(lcb_dir(run.root, name, task, lang)) for name in models}
    fid, fid_items = fidelity_rows(outputs, detector=ev.fidelity_detector, n_boot=ev.bootstrap, seed=params.seed)
    atomic_write_json(run.root / "eval" / "fidelity.json", {"detector": ev.fidelity_detector, "rows": fid})
    atomic_write_jsonl(run.root / "eval" / "fidelity_items.jsonl", fid_items)
    artifacts += [run.root / "eval" / "fidelity.json", run.root / "eval" / "fidelity_items.jsonl"]
    summary: dict[str, Any] = {"n_prompts": len(data.xalpacaeval_ids(ev.n_prompts, ev.subset_seed)), "reference_generator": ev.reference_generator,
                               "rows": rows, "fidelity": {"detector": ev.fidelity_detector, "rows": fid}}
    if judged:
        from xlr.runs import read_json

        validation = json.loads((run.root / "eval" / "judge_validation.json").read_text())
        summary["judge"] = {"backend": params.judge.backend, "model": params.judge.model, "id": validation["judge"], "protocol": params.judge.protocol,
                            "same_language_clause": params.judge.same_language_clause, "orders": params.judge.orders,
                            "agreement_with_english_labels": validation, "alpacaeval_validation": read_json(run.root / "eval" / "judge_validation_alpacaeval" / "judge_validation.json")}
    atomic_write_json(run.root / "eval" / "summary.json", summary)
    from xlr.fidelity import unsupported_of

    run.finish_stage("metrics", artifacts=artifacts + [run.root / "eval" / "summary.json"],
                     counts={"rows": len(rows), "fidelity_rows": len(fid), "fidelity_not_scored": unsupported_of(fid)})
    return summary


# Stages whose runner is called on every rank under a multi-process launch (their work is split across ranks: the
# reward scoring by xlr.distributed, DPO by trl/accelerate, which needs every rank of the group); the main process alone
# writes their artifacts and record.
MULTI_PROCESS_STAGES = frozenset({"anchor", "rewards", "training"})

RUNNERS = {"data": stage_data, "models": stage_models, "anchor": stage_anchor, "probe": stage_probe, "generation": stage_generation, "judging": stage_judging, "metrics": stage_metrics}
ITERATION_RUNNERS = {"sampling": stage_sampling, "rewards": stage_rewards, "pairs": stage_pairs, "training": stage_training}


def plan(params: Params) -> list[tuple[str, int | None]]:
    """(stage, iteration) steps of the study in order; unbuilt stages are not in the plan."""
    steps: list[tuple[str, int | None]] = [("data", None), ("models", None)]
    if params.models.pi0 == "build":
        steps.append(("anchor", None))
    if params.probe.enabled:
        steps.append(("probe", None))
    for t in range(1, params.iterations + 1):
        steps += [(name, t) for name in ("sampling", "rewards", "pairs", "training")]
    steps.append(("generation", None))
    if params.judge.backend != "none":
        steps.append(("judging", None))
    steps.append(("metrics", None))  # language fidelity needs no judge
    return steps


def select_steps(params: Params, run: Run, only: str | None = None, start_from: str | None = None) -> list[tuple[str, int | None]]:
    """The (stage, iteration) steps to run for ``--only`` / ``--from`` (all by default), checking that the earlier
    stages they need are done."""
    steps = plan(params)
    names = [n for n, _ in steps]
    keys = [run.stage_key(n, i) for n, i in steps]
    for opt, value in (("--only", only), ("--from", start_from)):
        if value is not None and value not in names and value not in keys:
            raise StudyError(f"{opt} {value}: not a stage of this run; stages: {', '.join(dict.fromkeys(names))} "
                             f"(or one step of an iteration: {', '.join(k for k in keys if '/' in k)})")
    chosen = []
    started = start_from is None
    for (name, iteration), key in zip(steps, keys, strict=True):
        started = started or start_from in (name, key)
        if started and (only is None or only in (name, key)):
            chosen.append((name, iteration))
    if only is not None or start_from is not None:
        for step in chosen:  # every earlier stage not itself in the selection must be done already
            missing = [run.stage_key(n, i) for n, i in steps[: steps.index(step)] if (n, i) not in chosen and not run.stage_done(n, i)]
            if missing:
                raise StudyError(f"[{run.stage_key(*step)}] needs the earlier stages done first, and these are not: {', '.join(missing)}. "
                                 "Fix: run without --only/--from, or --from the first of them.")
    return chosen


def run_stage(params: Params, run: Run, name: str, iteration: int | None = None, echo: Any = print) -> bool:
    """Run one stage unless it is done with intact artifacts (then skip it); True when it ran."""
    key = run.stage_key(name, iteration)
    if run.stage_done(name, iteration):
        echo(f"[{key}] done earlier, artifacts intact: skipped")
        return False
    from xlr import faults

    moved = run.move_aside_corrupt(name, iteration)
    if moved:
        echo(f"[{key}] {len(moved)} artifact(s) no longer match their recorded sha256 (truncated or edited): moved aside to "
             f"{run.root / 'corrupt'} and redone: {', '.join(moved)}")
    echo(f"[{key}] {next(s.what for s in STAGES if s.name == name)}")
    faults.set_stage(key)
    run.start_stage(name, iteration)
    try:
        # under several processes (accelerate launch / torchrun) only the stages that split their work across ranks run
        # on every rank; the others run on the main process while the rest wait (sampling would repeat, paid judging too)
        if distributed.is_main() or name in MULTI_PROCESS_STAGES:
            if iteration is None:
                RUNNERS[name](params, run)
            else:
                ITERATION_RUNNERS[name](params, run, iteration)
    except Exception as e:
        run.fail_stage(name, f"{type(e).__name__}: {e}", iteration)
        raise
    run.sync()  # every rank: wait for the main process's record of the stage, then read it
    return True


def open_study(params_path: str | Path, overrides: dict[str, Any] | None = None, force: bool = False) -> tuple[Params, Run]:
    """Params (file + overrides) and their run directory, threads set: what each notebook starts with."""
    from xlr.config import load_params
    from xlr.runtime import set_threads

    params = load_params(params_path, overrides or {})
    threads = set_threads(params.runtime.threads)
    run = Run.open(params, force=force)
    run.manifest["runtime"]["threads"] = threads
    run.save()
    return params, run


def _silent(*args: Any, **kwargs: Any) -> None:
    """The echo of the non-main ranks: the main process reports for all."""


def run_study(params: Params, force: bool = False, echo: Any = print, only: str | None = None, start_from: str | None = None) -> Run:
    """All stages in-process, without notebooks (``xlr run --direct``; the tests' fast path)."""
    from xlr.runtime import set_threads

    distributed.init()  # several processes: join the launch's group before any model is loaded (one process: nothing)
    if not distributed.is_main():
        echo = _silent
    threads = set_threads(params.runtime.threads)
    run = Run.open(params, force=force)
    run.manifest["runtime"]["threads"] = threads
    run.save()
    run.sync()
    t0 = time.monotonic()
    for name, iteration in select_steps(params, run, only, start_from):
        run_stage(params, run, name, iteration, echo)
    missing = [s for s in STAGES if not s.built]
    echo(f"\nRun directory: {run.root}  ({time.monotonic() - t0:.0f} s)")
    if missing:
        echo("NOT BUILT YET (these stages of the method do not exist in xlr yet, so nothing was computed for them):")
        for s in missing:
            echo(f"  - {s.name}: {s.what}")
    return run
