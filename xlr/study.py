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
    Stage("sampling", "on-policy sampling of N responses per prompt and language", False),
    Stage("rewards", "implicit cross-lingual reward log pi0(y|G(x)) - log pi_ref(y|G(x))", False),
    Stage("pairs", "length-controlled chosen/rejected pairs (alpha search)", False),
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


RUNNERS = {"data": stage_data, "models": stage_models}


def run_study(params: Params, force: bool = False, echo: Any = print) -> Run:
    from xlr.runtime import set_threads

    threads = set_threads(params.runtime.threads)
    run = Run.open(params, force=force)
    run.manifest["runtime"]["threads"] = threads
    run.save()
    t0 = time.monotonic()
    for stage in STAGES:
        if not stage.built:
            continue
        if run.stage_done(stage.name):
            echo(f"[{stage.name}] done earlier, artifacts intact: skipped")
            continue
        echo(f"[{stage.name}] {stage.what}")
        run.start_stage(stage.name)
        try:
            RUNNERS[stage.name](params, run)
        except Exception as e:
            run.fail_stage(stage.name, f"{type(e).__name__}: {e}")
            raise
    missing = [s for s in STAGES if not s.built]
    echo(f"\nRun directory: {run.root}  ({time.monotonic() - t0:.0f} s)")
    if missing:
        echo("NOT BUILT YET (these stages of the method do not exist in xlr yet, so nothing was computed for them):")
        for s in missing:
            echo(f"  - {s.name}: {s.what}")
    return run
