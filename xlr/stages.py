"""The stage bodies of the study: each reads its inputs from the run directory (:mod:`xlr.runs`'s layout), calls the
stage's module and records what it wrote. The table of stages and the runner are :mod:`xlr.study`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from xlr import anchors, data, distributed, runtime
from xlr.config import Params
from xlr.errors import XlrError
from xlr.evaluate import (
    fidelity_rows,
    head_to_head_items,
    judge_agreement,
    load_lc_files,
    load_outputs,
    model_metrics,
    model_names,
    reference_items,
    validation_items,
    write_outputs,
)
from xlr.fidelity import unsupported_of
from xlr.files import atomic_write_json, atomic_write_jsonl, read_json, read_jsonl
from xlr.judge import JudgeCache, cache_path, judge_pairs, make_judge, protocol_template
from xlr.judge_validation import ValidationSettings, validate
from xlr.langid import detect, fidelity, unsupported_languages
from xlr.languages import CHECK_PROMPTS
from xlr.models import MODEL_MANIFEST, load_model, model_record
from xlr.pairs import select_pairs
from xlr.paths import runs_dir
from xlr.probe import run_probe
from xlr.rewards import annotate_sharded, reward_accuracy, translation_counts
from xlr.runs import Run
from xlr.runtime import dpo_head, resolve_device, resolve_dtype
from xlr.sampling import EngineConfig, GenConfig, HFBackend, SamplingTask, derive_seed, greedy_answers, load_samples, sample_tasks
from xlr.train import DPOLoss, to_conversational, train_dpo

log = logging.getLogger(__name__)


class StudyError(XlrError, ValueError):
    """A run that cannot proceed as asked; the message says why and what to do."""


def stage_data(params: Params, run: Run) -> dict[str, Any]:
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
    out = run.layout.data_summary
    atomic_write_json(out, {"counts": counts, "eval_ids": ids})
    run.finish_stage("data", artifacts=[out], counts=counts)
    return counts


def stage_models(params: Params, run: Run) -> dict[str, Any]:
    device = resolve_device(params.runtime.device)
    dtype, why = resolve_dtype(params.runtime.dtype, device, params.runtime.bf16)
    run.manifest["runtime"].update(device=device, dtype=str(dtype).removeprefix("torch."), dtype_reason=why)
    record_precision(
        run,
        "runtime.dtype",
        params.runtime.dtype,
        str(dtype).removeprefix("torch.").replace("float32", "fp32").replace("bfloat16", "bf16"),
        why,
    )
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
        log.warning(
            "model check: no check prompt for %s (CHECK_PROMPTS in xlr/study.py has %s); these languages are not checked",
            ", ".join(unchecked),
            ", ".join(CHECK_PROMPTS),
        )
    for role, spec in specs.items():
        model, tok = load_model(spec, dtype=dtype, device=device, trust_remote_code=params.models.trust_remote_code)
        run.manifest["models"][role] = model_record(spec)
        answers[role] = greedy_answers(model, tok, {lang: CHECK_PROMPTS[lang] for lang in langs})
        del model
    out = run.layout.greedy_check
    atomic_write_json(out, answers)
    run.finish_stage(
        "models", artifacts=[out], counts={"models": len(specs), "languages_checked": len(langs), "languages_not_checked": unchecked}
    )
    return answers


def _train_rows(params: Params, iteration: int) -> Any:
    offset = params.data.prompt_offset
    if params.training.prompts_per_iteration == "next_slice":
        offset += (iteration - 1) * params.data.n_train_prompts
    return data.load_train_prompts(params.languages.train, params.data.n_train_prompts, offset, params.data.data_dir)


def stage_sampling(params: Params, run: Run, iteration: int = 1) -> dict[str, Any]:
    """N samples per prompt and language from the current policy (pi0 at iteration 1)."""
    device = resolve_device(params.runtime.device)
    dtype, _ = resolve_dtype(params.runtime.dtype, device, params.runtime.bf16)
    policy_spec = policy_at(params, run, iteration - 1)  # iteration t samples from pi^(t-1)
    sp = params.sampling
    # one engine in this process, or sampling.data_parallel_size engines (worker processes, each on its own GPUs)
    engine = EngineConfig(
        sp.backend,
        policy_spec,
        dtype=dtype,
        device=device,
        trust_remote_code=params.models.trust_remote_code,
        seed=params.seed,
        tensor_parallel_size=sp.tensor_parallel_size,
        data_parallel_size=sp.data_parallel_size,
    )
    cfg = GenConfig(
        n=sp.n_samples,
        do_sample=True,
        temperature=sp.temperature,
        top_p=sp.top_p,
        top_k=sp.top_k,
        max_new_tokens=sp.max_new_tokens,
        batch_size=sp.batch_size,
    )
    rows = _train_rows(params, iteration)
    root = run.stage_dir("sampling", iteration)
    tasks = [
        SamplingTask(lang, [r for r in rows if r["lang"] == lang], lang, root / lang, cfg, derive_iteration_seed(params.seed, iteration))
        for lang in params.languages.train
    ]
    counts = sample_tasks(engine, tasks, sp.shard_size, root / "engines")
    artifacts = [p for lang in params.languages.train for p in sorted((root / lang).glob("shard-*.jsonl"))]
    run.finish_stage("sampling", iteration, artifacts=artifacts, counts=counts, policy=policy_spec)
    return counts


def derive_iteration_seed(seed: int, iteration: int) -> int:
    return derive_seed(seed, "iteration", iteration)


def stage_rewards(params: Params, run: Run, iteration: int = 1) -> dict[str, Any]:
    """Implicit cross-lingual reward of every sample under (pi0, pi_ref)."""
    device = distributed.local_device(resolve_device(params.runtime.device))  # under accelerate launch: this rank's GPU
    dtype, fp32_head, used = scoring_precision(params, params.reward.dtype, "reward.dtype", run)
    pol_spec, ref_spec = reward_models(params, run, iteration)
    policy, tok = load_model(pol_spec, dtype=dtype, device=device)
    reference, _ = load_model(ref_spec, dtype=dtype, device=device)
    rp = params.reward
    english = {r["instruction_id"]: r["instruction_en"] for r in _train_rows(params, iteration)}
    samples = [s for lang in params.languages.train for s in load_samples(run.layout.samples(iteration, lang))]
    r_t_reference = rp.variant == "R_t" and rp.rt_style == "reference"
    skipped_en = sum(s["lang"] == "en" for s in samples) if r_t_reference else 0
    if r_t_reference:  # the reference gives English no R_t reward (utils/generate_preference_pair.py); counted, and pairs says so
        samples = [s for s in samples if s["lang"] != "en"]
    # every rank scores its shard (one process: all); the main process gets every row back, in order, and writes
    rows = annotate_sharded(
        samples,
        english,
        policy,
        reference,
        tok,
        rp,
        params.languages.names,
        fp32_head=fp32_head,
        translator=HFBackend(policy, tok) if rp.variant == "R_t" else None,
    )
    if rows is None:  # another rank: its share went to the main process, which writes and records the stage
        return {}
    out = run.layout.rewards(iteration)
    atomic_write_jsonl(out, rows)
    counts: dict[str, Any] = {"samples": len(rows), "variant": rp.variant, "dtype": used, "dtype_requested": rp.dtype}
    if rp.variant == "R_t":
        counts["r_t"] = translation_counts(rows, rp.rt_style, rp.rt_max_new_tokens, skipped_en)
    run.finish_stage("rewards", iteration, artifacts=[out], counts=counts, policy=pol_spec, reference=ref_spec)
    return counts


def stage_pairs(params: Params, run: Run, iteration: int = 1) -> dict[str, Any]:
    """Language fidelity of the samples, then length-controlled pairs per language."""
    rewards = read_jsonl(run.layout.rewards(iteration))
    detected = detect([r.get("response_original", r["response"]) for r in rewards], params.languages.names)
    undetectable = unsupported_languages(params.languages.train, "lingua")
    if undetectable and params.pairs.language_filter:  # the filter would drop every sample of such a language as wrong-language
        raise StudyError(
            f"pairs.language_filter: lingua cannot detect {', '.join(undetectable)} ({'; '.join(undetectable.values())}). "
            "Fix: set pairs.language_filter: false, or train without these languages."
        )
    ok = {(r["id"], r["sample_idx"]): d == r["lang"] for r, d in zip(rewards, detected, strict=True)}
    rows = _train_rows(params, iteration)
    all_pairs, stats = [], {}
    for lang in params.languages.train:
        lang_rewards = [r for r in rewards if r["lang"] == lang]
        prompts = {r["instruction_id"]: r["instruction"] for r in rows if r["lang"] == lang}
        pairs, st = select_pairs(
            lang_rewards,
            prompts,
            params.pairs.alpha_grid,
            params.pairs.upper_bound,
            ok if params.pairs.language_filter else None,
            above_bound=params.pairs.above_bound,
        )
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
    out = run.layout.pairs(iteration)
    atomic_write_jsonl(out, all_pairs)
    sout = run.layout.pairs_stats(iteration)
    atomic_write_json(sout, stats)
    run.finish_stage(
        "pairs",
        iteration,
        artifacts=[out, sout],
        counts={lang: {"pairs": s["pairs"], "alpha": s["alpha"], "drops": s["drops"]} for lang, s in stats.items()},
    )
    return stats


def policy_at(params: Params, run: Run, t: int) -> str:
    """Spec of pi^t: pi0 for t = 0 (given, or built by the anchor stage), else iteration t's trained model."""
    if t == 0:
        return str(run.layout.policy(0)) if params.models.pi0 == "build" else params.models.pi0
    merged = params.training.save_merged or params.training.finetune == "full"
    return str(run.layout.policy(t, merged))


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
    dtype, fp32_head, used, why = runtime.scoring_precision(name, field, resolve_device(params.runtime.device), params.runtime.bf16)
    if run is not None:
        record_precision(run, field, name, used, why)
    return dtype, fp32_head, used


def record_precision(run: Run, field: str, requested: str, used: str, reason: str) -> None:
    """manifest runtime.precision[field] = {requested, used, reason}: the report's provenance shows each fallback."""
    fell_back = requested.startswith("bf16") and not used.startswith("bf16")  # "auto" resolving to fp32 is not a fallback
    run.manifest["runtime"].setdefault("precision", {})[field] = {
        "requested": requested,
        "used": used,
        "fell_back": fell_back,
        "reason": reason,
    }
    if fell_back:
        log.warning("%s: %s requested, %s used: %s", field, requested, used, reason)


def _runtime_dtype(params: Params) -> tuple[Any, str]:
    device = resolve_device(params.runtime.device)
    return resolve_dtype(params.runtime.dtype, device, params.runtime.bf16)[0], device


def _dpo_head(params: Params, run: Run, head: str, dtype: Any, device: str, field: str) -> str:
    head, why = dpo_head(head, dtype, field, device, params.runtime.bf16)
    record_precision(run, field, head, head, why)
    return head


def stage_anchor(params: Params, run: Run) -> dict[str, Any]:
    """pi0 = English DPO of pi_ref on held-in preference pairs; its implicit reward's accuracy on held-out pairs. A
    finished anchor is kept in the anchor cache (xlr.anchors) under a key of everything it is a function of; a later
    run with the same key restores it instead of training."""
    a = params.anchor
    reports = {split: data.LoadReport(params.data.english_preferences) for split in ("train", "eval")}
    train = data.load_english_preferences(params.data.english_preferences, "train", params.data.data_dir, report=reports["train"])
    held = data.load_english_preferences(params.data.english_preferences, "eval", params.data.data_dir, report=reports["eval"])
    train, below_margin = data.select_by_score_margin(train, a.min_score_margin, params.data.english_preferences)
    if len(train) < a.n_train:
        raise StudyError(
            f"anchor: {len(train)} usable train pairs ({below_margin} below anchor.min_score_margin {a.min_score_margin}), params ask {a.n_train} "
            "(anchor.n_train). Fix: lower anchor.n_train or anchor.min_score_margin."
        )
    n_eval = min(a.n_eval, len(held))  # all held-out pairs up to n_eval (the shipped file has 199 usable of 200)
    pairs = [to_conversational(r["messages"], r["chosen"], r["rejected"]) for r in train.select(range(a.n_train))]
    eval_rows = [
        {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "tie": r["tie"], "score_margin": r["score_margin"]}
        for r in held.select(range(n_eval))
    ]
    dtype, device = _runtime_dtype(params)
    head = _dpo_head(params, run, a.head, dtype, device, "anchor.head")
    # resolved before training: the scoring precision is part of the anchor cache's key
    score_dtype, fp32_head, score = scoring_precision(
        params, a.score_dtype or params.reward.dtype, "anchor.score_dtype" if a.score_dtype else "reward.dtype", run
    )
    precision = {
        "train_dtype": str(dtype).removeprefix("torch."),
        "dpo_head": head,
        "score_dtype": score,
        "device": device.split(":")[0],
        "processes": distributed.world()[1],
    }
    cache, inputs, hit = _anchor_cache_lookup(params, pairs, eval_rows, precision)
    out = run.stage_dir("anchor")
    if distributed.world()[1] > 1:  # the main process looked up; every rank follows its hit or miss (collective)
        reused = distributed.all_gather_object(hit is not None)[0]
    else:
        reused = hit is not None
    if reused:
        if not distributed.is_main():
            return {}
        anchors.restore(hit, out)
        acc = read_json(run.layout.reward_accuracy)
        record = {"pairs": len(pairs), "dropped_prompt_too_long": None, "truncated": None, **hit.get("train", {})}
        cache.update(status="reused", entry=hit["path"], built_at=hit.get("built_at"), built_by=hit.get("built_by"))
        line = f"reused anchor {anchors.describe(hit)}"
    else:
        # DPO sigmoid alone; the reference is pi_ref itself; the merged model is always written (AnchorParams.save_merged): it is pi0
        record = train_dpo(
            params.models.pi_ref,
            pairs,
            out,
            a.model_copy(update={"head": head}),
            loss=DPOLoss.sigmoid(),
            seed=params.seed,
            dtype=dtype,
            device=device,
        )
        if not distributed.is_main():  # a multi-process launch trained on every rank; the main process alone measures and records
            return {}
        pi0, tok = load_model(str(run.layout.policy(0)), dtype=score_dtype, device=device)
        pi_ref, _ = load_model(params.models.pi_ref, dtype=score_dtype, device=device)
        acc = reward_accuracy(
            pi0, pi_ref, tok, eval_rows, n_boot=a.bootstrap, seed=params.seed, batch_tokens=params.reward.batch_tokens, fp32_head=fp32_head
        )
        acc["score_dtype"] = score
        acc["score_dtype_requested"] = a.score_dtype or params.reward.dtype
        atomic_write_jsonl(run.layout.reward_accuracy_pairs, acc.pop("per_pair"))
        atomic_write_json(run.layout.reward_accuracy, acc)
        line = _anchor_cache_store(cache, inputs, out, run, {k: record[k] for k in ("pairs", "dropped_prompt_too_long", "truncated")})
    log.info("anchor: %s", line)
    print(f"[anchor] anchor cache: {line}")
    run.manifest["models"]["pi0"] = {
        "spec": str(run.layout.policy(0)),
        "built_from": params.models.pi_ref,
        "reward_accuracy": acc,
        "anchor_cache": cache,
    }
    run.finish_stage(
        "anchor",
        artifacts=[
            run.layout.reward_accuracy,
            run.layout.reward_accuracy_pairs,
            run.layout.training_metrics(0),
            run.layout.policy(0) / MODEL_MANIFEST,
        ],
        counts={
            "train_pairs": record["pairs"],
            "below_min_score_margin": below_margin,
            "dropped_prompt_too_long": record["dropped_prompt_too_long"],
            "truncated": record["truncated"],
            "eval_pairs": n_eval,
            "skipped_when_loaded": {k: dict(r.skipped) for k, r in reports.items()},
            "reward_accuracy": acc["accuracy"],
            "ci95": acc["ci95"],
            "anchor_cache": line,
        },
    )
    return acc


def _anchor_cache_lookup(
    params: Params, pairs: list[dict[str, Any]], eval_rows: list[dict[str, Any]], precision: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """(the manifest's anchor_cache record so far, the keyed inputs, the cached entry on a hit). The main process alone
    looks up (it alone may move a damaged entry aside); the others get no entry."""
    cache: dict[str, Any] = {"status": "off", "key": None, "entry": None, "built_at": None, "built_by": None}
    if anchors.cache_root() is None:
        return cache, None, None
    try:
        inputs = anchors.key_inputs(params, pairs, eval_rows, precision)
    except anchors.NotCacheable as e:
        cache["status"] = f"not cacheable: {e}"
        return cache, None, None
    cache["key"] = anchors.key(inputs)
    return cache, inputs, anchors.lookup(cache["key"], inputs) if distributed.is_main() else None


def _anchor_cache_store(cache: dict[str, Any], inputs: dict[str, Any] | None, out: Path, run: Run, train: dict[str, Any]) -> str:
    """Store the anchor just built (when the cache is on and the inputs keyable); update ``cache``; return the line the
    stage record and the log show. A failure to store (full disk...) is a warning, not a failed stage."""
    if inputs is None:
        return cache["status"]
    try:
        entry = anchors.store(cache["key"], inputs, out, run, train)
    except (OSError, anchors.AnchorCacheError) as e:
        log.warning("anchor cache: could not store anchor %s (%s); the run goes on without it", cache["key"], e)
        cache["status"] = f"not stored: {e}"
        return cache["status"]
    if entry is None:
        cache["status"] = "off"
        return "off"
    ours = (entry.get("built_by") or {}).get("root") == str(run.root)
    cache.update(status="stored", entry=entry["path"], built_at=entry.get("built_at"), built_by=entry.get("built_by"))
    return f"stored as {cache['key']}" if ours else f"stored as {cache['key']} (by {anchors.describe(entry)}, meanwhile)"


def stage_probe(params: Params, run: Run) -> dict[str, Any]:
    """The paper's claim tested directly with pi0 and pi_ref only (xlr.probe): per training language and reward variant,
    does the reward prefer the answer in the target language, and the stronger model's answer, as it does in English?"""
    _, device = _runtime_dtype(params)  # scored in reward.dtype, as the rewards stage
    scoring_precision(params, params.reward.dtype, "reward.dtype", run)  # recorded: the probe resolves the same precision
    result = run_probe(params, policy_at(params, run, 0), params.models.pi_ref, run.stage_dir("probe"), dtype=None, device=device)
    run.finish_stage("probe", artifacts=result["artifacts"], counts=result["counts"])
    return result


def stage_training(params: Params, run: Run, iteration: int) -> dict[str, Any]:
    """DPO (sigmoid, beta) + NLL on chosen (nll_weight) of pi^(t-1) on iteration t's pairs -> pi^t."""
    tp = params.training
    rows = read_jsonl(run.layout.pairs(iteration))
    if not rows:
        raise StudyError(f"iteration {iteration}: no pairs to train on (see {run.layout.pairs_stats(iteration)} for the drops).")
    pairs = [to_conversational(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    dtype, device = _runtime_dtype(params)
    head = _dpo_head(params, run, tp.head, dtype, device, "training.head")
    start = policy_at(params, run, iteration - 1)
    loss = DPOLoss.sigmoid_nll(tp.nll_weight)
    out = run.stage_dir("training", iteration)
    record = train_dpo(
        start,
        pairs,
        out,
        tp.model_copy(update={"head": head}),
        loss=loss,
        seed=params.seed + iteration,
        dtype=dtype,
        device=device,
        reference_spec=params.models.pi_ref if tp.dpo_reference == "pi_ref" else None,
    )
    run.finish_stage(
        "training",
        iteration,
        artifacts=[run.layout.training_metrics(iteration), Path(policy_at(params, run, iteration)) / MODEL_MANIFEST],
        counts={k: record[k] for k in ("pairs", "dropped_prompt_too_long", "truncated")},
        start=start,
        **loss.as_record(),
    )
    return record


def _eval_models(params: Params, run: Run) -> dict[str, str]:
    return {
        name: (params.models.pi_ref if name == "pi_ref" else policy_at(params, run, 0 if name == "pi0" else int(name[2:])))
        for name in model_names(params.iterations)
    }


def _eval_rows(params: Params, lang: str) -> list[dict[str, Any]]:
    ids = data.xalpacaeval_ids(params.evaluation.n_prompts, params.evaluation.subset_seed)
    return list(data.load_xalpacaeval(lang, ids, params.evaluation.reference_generator, params.data.data_dir))


def stage_generation(params: Params, run: Run) -> dict[str, Any]:
    """One answer per X-AlpacaEval prompt, model and eval language (paper: T 0.6, top_p 0.9, 2048 tokens)."""
    dtype, device = _runtime_dtype(params)
    ev, sp = params.evaluation, params.sampling
    cfg = GenConfig(
        n=1,
        do_sample=ev.temperature > 0,
        temperature=ev.temperature or 1.0,
        top_p=ev.top_p,
        max_new_tokens=ev.max_new_tokens,
        batch_size=ev.batch_size,
    )
    lcb_cfg = GenConfig(
        n=1,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=ev.lcb_max_new_tokens,
        batch_size=ev.batch_size,
    )
    counts: dict[str, Any] = {}
    artifacts = []
    rows = {lang: _eval_rows(params, lang) for lang in params.languages.eval}  # loaded once, answered by every model
    lcb, skipped = lcb_rows(params)
    for name, spec in _eval_models(params, run).items():
        # every answer set of a model in one call: its engine(s) start once (evaluation.* parallelism, None = sampling's)
        engine = EngineConfig(
            ev.backend or sp.backend,
            spec,
            dtype=dtype,
            device=device,
            trust_remote_code=params.models.trust_remote_code,
            seed=params.seed,
            field="evaluation.backend" if ev.backend else "sampling.backend",
            tensor_parallel_size=ev.tensor_parallel_size or sp.tensor_parallel_size,
            data_parallel_size=ev.data_parallel_size or sp.data_parallel_size,
        )
        jobs = [
            (f"{name}/{lang}", rows[lang], lang, run.layout.eval_dir(name, lang), cfg, derive_seed(params.seed, "eval", name))
            for lang in params.languages.eval
        ]
        jobs += [
            (
                f"{name}/lcb-{task}/{lang}",
                lrows,
                lang,
                run.layout.lcb_dir(name, task, lang),
                lcb_cfg,
                derive_seed(params.seed, "lcb", task, name),
            )
            for task, lang_rows in lcb.items()
            for lang, lrows in lang_rows.items()
        ]
        tasks = [
            SamplingTask(key, [{"instruction_id": r["id"], "instruction": r["instruction"]} for r in jrows], lang, out, c, seed)
            for key, jrows, lang, out, c, seed in jobs
        ]
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
    ev = params.evaluation
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    skipped: dict[str, list[str]] = {}
    for task in ev.lcb_sets:
        have = set(data.lcb_languages(task, params.data.data_dir))
        langs = [lang for lang in params.languages.eval if lang in have and not (task == "crosslingual" and lang == "en")]
        skipped[task] = [lang for lang in params.languages.eval if lang not in langs]
        rows = data.load_lcb_prompts(task, langs, ev.lcb_n_prompts, ev.subset_seed, params.data.data_dir)
        out[task] = {
            lang: [{"id": r["id"], "instruction": r["prompt"], "dataset": r["source"]} for r in rows if r["lang"] == lang] for lang in langs
        }
    return out, skipped


def stage_judging(params: Params, run: Run) -> dict[str, Any]:
    """Judge validation, then every model vs the references (random order per item), then pi^t vs pi0 (both orders)."""
    dtype, device = _runtime_dtype(params)
    jp = params.judge
    judge = make_judge(jp, dtype=dtype, device=device, trust_remote_code=params.models.trust_remote_code)
    cache = JudgeCache(cache_path(runs_dir(), judge.id))
    template = protocol_template(jp.same_language_clause)
    stats: dict[str, Any] = {}
    artifacts = []
    held = data.load_english_preferences(params.data.english_preferences, "eval", params.data.data_dir)
    # judge validation with the very prompt used for the evaluation (English pairs: the same-language clause is moot)
    recs, st = judge_pairs(
        judge, validation_items(held, jp.n_validation_pairs), cache, jp, template, orders="both", desc="judge validation"
    )
    atomic_write_jsonl(run.layout.judge_agreement_items, recs)
    agreement = judge_agreement(recs, n_boot=params.evaluation.bootstrap, seed=params.seed) | {"judge": judge.id, "stats": st.as_dict()}
    atomic_write_json(run.layout.judge_agreement, agreement)
    artifacts += [run.layout.judge_agreement_items, run.layout.judge_agreement]
    stats["validation"] = st.as_dict()
    # the judge (with the study's protocol) against GPT-4-turbo's own AlpacaEval 2 verdicts: balanced, length-matched, ranking
    # of models, and the three shipped models on X-AlpacaEval beside the paper's Table 2 (xlr.judge_validation)
    val = validate(
        params,
        ValidationSettings.from_params(params, uf_items=0, max_chars=jp.validation_max_chars),
        out_dir=run.layout.judge_validation_dir,
        judge=judge,
        cache=cache,
    )
    artifacts.append(run.layout.judge_validation)
    stats["alpacaeval_validation"] = {
        k: val["judge_stats"].get(k, 0)
        for k in ("calls", "cache_hits", "identical_outputs", "unjudgeable", "tokens_in", "tokens_out", "cost_usd")
    }
    names = list(_eval_models(params, run))
    for lang in params.languages.eval:
        refs = {r["id"]: r["reference_output"] for r in _eval_rows(params, lang)}
        outputs = {name: load_outputs(run.layout.eval_dir(name, lang)) for name in names}  # read once per language
        # Every model of a language in ONE judge call first (issue 15): the judge cache is keyed by rendered prompt, so
        # the per-model calls below find every judgment there, while the local judge shares the KV of what the models'
        # prompts of one item have in common (instruction; with the reference first, the reference too).
        everyone = [it for name in names for it in reference_items(outputs[name], refs)]
        _, st = judge_pairs(judge, everyone, cache, jp, template, desc=f"judging all models / {lang}")
        stats[f"all-models/{lang}"] = st.as_dict()
        h2h = params.evaluation.head_to_head and "pi0" in outputs
        if h2h:
            everyone = [it for name in names if name != "pi0" for it in head_to_head_items(outputs[name], outputs["pi0"])]
            _, st = judge_pairs(judge, everyone, cache, jp, template, orders="both", desc=f"all vs pi0 / {lang}")
            stats[f"all-models/{lang}/h2h"] = st.as_dict()
        for name in names:
            d = run.layout.eval_dir(name, lang)
            recs, st = judge_pairs(judge, reference_items(outputs[name], refs), cache, jp, template, desc=f"judging {name}/{lang}")
            atomic_write_jsonl(d / "judgments.jsonl", recs)
            stats[f"{name}/{lang}"] = st.as_dict()
            artifacts.append(d / "judgments.jsonl")
            if h2h and name != "pi0":  # pi_ref vs pi0 too: the anchor's own effect
                recs, st = judge_pairs(
                    judge,
                    head_to_head_items(outputs[name], outputs["pi0"]),
                    cache,
                    jp,
                    template,
                    orders="both",
                    desc=f"{name} vs pi0 / {lang}",
                )
                atomic_write_jsonl(d / "h2h_vs_pi0.jsonl", recs)
                stats[f"{name}/{lang}/h2h"] = st.as_dict()
                artifacts.append(d / "h2h_vs_pi0.jsonl")
    # totals over the calls that did the work: the per-model sets read the all-models calls' judgments from the cache
    work = [v for k, v in stats.items() if k in ("validation", "alpacaeval_validation") or k.startswith("all-models/")]
    totals = {k: sum(s[k] for s in work) for k in ("calls", "cache_hits", "identical_outputs", "unjudgeable", "tokens_in", "tokens_out")}
    totals["cost_usd"] = round(sum(s["cost_usd"] for s in work), 6)
    run.finish_stage(
        "judging",
        artifacts=artifacts,
        counts={"totals": totals, "per_set": stats, "judge_agreement": agreement["agreement"]},
        judge=judge.id,
    )
    return stats


def stage_metrics(params: Params, run: Run) -> dict[str, Any]:
    """WR / discrete WR / LC with CIs and head-to-head vs pi0 (where a judge ran), and the judge-free language fidelity
    (LPR / WPR / LCPR with CIs, McNemar vs pi0) of every model's X-AlpacaEval and LCB answers."""
    ev = params.evaluation
    rows = []
    artifacts = []
    models = list(_eval_models(params, run))
    judged = params.judge.backend != "none"
    if judged:
        lc_files = load_lc_files(ev.instruction_difficulty_csv, ev.gamed_csv, params.data.data_dir)
        for lang in params.languages.eval:
            refs = {r["id"]: r["reference_output"] for r in _eval_rows(params, lang)}
            for name in models:
                d = run.layout.eval_dir(name, lang)
                h2h = read_jsonl(d / "h2h_vs_pi0.jsonl") if (d / "h2h_vs_pi0.jsonl").is_file() else None
                m = model_metrics(
                    load_outputs(d), read_jsonl(d / "judgments.jsonl"), refs, lang, ev, seed=params.seed, h2h=h2h, lc_files=lc_files
                )
                m["model"] = name
                atomic_write_json(d / "metrics.json", m)
                artifacts.append(d / "metrics.json")
                rows.append(m)
    outputs = {
        (name, "x-alpacaeval", lang): load_outputs(run.layout.eval_dir(name, lang)) for name in models for lang in params.languages.eval
    }
    lcb, _ = lcb_rows(params)
    for task, by_lang in lcb.items():
        for lang in by_lang:
            outputs |= {(name, f"lcb-{task}", lang): load_outputs(run.layout.lcb_dir(name, task, lang)) for name in models}
    fid, fid_items = fidelity_rows(outputs, detector=ev.fidelity_detector, n_boot=ev.bootstrap, seed=params.seed)
    atomic_write_json(run.layout.fidelity, {"detector": ev.fidelity_detector, "rows": fid})
    atomic_write_jsonl(run.layout.fidelity_items, fid_items)
    artifacts += [run.layout.fidelity, run.layout.fidelity_items]
    summary: dict[str, Any] = {
        "n_prompts": len(data.xalpacaeval_ids(ev.n_prompts, ev.subset_seed)),
        "reference_generator": ev.reference_generator,
        "rows": rows,
        "fidelity": {"detector": ev.fidelity_detector, "rows": fid},
    }
    if judged:
        validation = json.loads(run.layout.judge_agreement.read_text())
        summary["judge"] = {
            "backend": params.judge.backend,
            "model": params.judge.model,
            "id": validation["judge"],
            "protocol": params.judge.protocol,
            "same_language_clause": params.judge.same_language_clause,
            "orders": params.judge.orders,
            "agreement_with_english_labels": validation,
            "alpacaeval_validation": read_json(run.layout.judge_validation),
        }
    atomic_write_json(run.layout.eval_summary, summary)
    run.finish_stage(
        "metrics",
        artifacts=artifacts + [run.layout.eval_summary],
        counts={"rows": len(rows), "fidelity_rows": len(fid), "fidelity_not_scored": unsupported_of(fid)},
    )
    return summary
