"""X-AlpacaEval: generation, judging and metrics for every model of the study (pi_ref, pi0, pi^1, ..., pi^T).

Layout under the run directory (per model and language, as the issue asks)::

    eval/<model>/<lang>/shard-*.jsonl     generation shards (resumable, seeded per shard)
    eval/<model>/<lang>/outputs.json      AlpacaEval format: generator, dataset, id, instruction, output
    eval/<model>/<lang>/judgments.jsonl   vs the reference outputs (order, raw label log-probs, p_model)
    eval/<model>/<lang>/h2h_vs_pi0.jsonl  vs pi0's outputs, both orders (models other than pi0)
    eval/<model>/<lang>/metrics.json      WR, discrete WR, LC (variant named), 95% CIs, fidelity, lengths, counts
    eval/judge_validation.jsonl/.json     the judge's agreement with held-out English preference labels
    eval/summary.json                     one row per model and language (the report's headline table)

Generation follows the paper: one sample at temperature 0.6, top_p 0.9, max_new_tokens 2048 (params), the
instruction as the only user message through the model's chat template, no system prompt of ours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xlr.files import atomic_write_json

if TYPE_CHECKING:
    from xlr.config import EvalParams


def model_names(iterations: int) -> list[str]:
    return ["pi_ref", "pi0"] + [f"pi{t}" for t in range(1, iterations + 1)]


# ----------------------------------------------------------------------------------------------------------------
# generation


def generate_outputs(
    backend: Any, rows: list[dict[str, Any]], lang: str, out_dir: Path, generator: str, cfg: Any, seed: int, shard_size: int
) -> dict[str, Any]:
    """Answer X-AlpacaEval rows (id, instruction, dataset) with one sample each; write shards and outputs.json."""
    from xlr.sampling import sample_language

    counts = sample_language(
        backend,
        [{"instruction_id": r["id"], "instruction": r["instruction"]} for r in rows],
        lang,
        out_dir,
        cfg,
        seed=seed,
        shard_size=shard_size,
    )
    write_outputs(rows, lang, out_dir, generator)
    return counts


def write_outputs(rows: list[dict[str, Any]], lang: str, out_dir: Path, generator: str) -> None:
    """outputs.json (alpaca_eval's model_outputs shape, plus n_tokens / truncated) from the finished shards under ``out_dir``."""
    from xlr.sampling import load_samples

    by_id = {r["id"]: r for r in load_samples(out_dir)}
    outputs = [
        {
            "generator": generator,
            "dataset": r.get("dataset", ""),
            "id": r["id"],
            "lang": lang,
            "instruction": r["instruction"],
            "output": by_id[r["id"]]["response"],
            "n_tokens": by_id[r["id"]]["n_tokens"],
            "truncated": by_id[r["id"]]["truncated"],
        }
        for r in rows
    ]
    atomic_write_json(out_dir / "outputs.json", outputs)


def load_outputs(out_dir: Path) -> list[dict[str, Any]]:
    return json.loads((out_dir / "outputs.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# judging


def reference_items(outputs: list[dict[str, Any]], references: dict[int, str]) -> list[dict[str, Any]]:
    return [
        {
            "key": f"{o['lang']}:{o['id']}",
            "id": o["id"],
            "instruction": o["instruction"],
            "output": o["output"],
            "baseline_output": references[o["id"]],
        }
        for o in outputs
    ]


def head_to_head_items(outputs: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = {o["id"]: o["output"] for o in baseline}
    return [
        {
            "key": f"{o['lang']}:{o['id']}",
            "id": o["id"],
            "instruction": o["instruction"],
            "output": o["output"],
            "baseline_output": base[o["id"]],
        }
        for o in outputs
    ]


def validation_items(pairs: Any, n: int) -> list[dict[str, Any]]:
    """Held-out English preference pairs (ties excluded): 'output' is the chosen response, the baseline the rejected."""
    rows = [r for r in pairs if not r["tie"]][:n]
    return [
        {"key": f"validation:{k}", "id": k, "instruction": r["prompt"], "output": r["chosen"], "baseline_output": r["rejected"]}
        for k, r in enumerate(rows)
    ]


def per_item_preference(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean p_model per item key over its judged orders (NaN orders are left out; an item with none is NaN)."""
    acc: dict[str, list[float]] = {}
    for r in records:
        acc.setdefault(r["key"], [])
        if not math.isnan(r["p_model"]):
            acc[r["key"]].append(r["p_model"])
    return {k: (float(np.mean(v)) if v else math.nan) for k, v in acc.items()}


def judge_agreement(records: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """How often the judge prefers the known-better output (both orders counted; 0.5 for an exact tie), with a bootstrap
    CI over items, the soft agreement, and how often the two orders agree with each other (position consistency)."""
    from xlr.stats import bootstrap_ci

    by_item: dict[str, list[float]] = {}
    for r in records:
        if not math.isnan(r["p_model"]):
            by_item.setdefault(r["key"], []).append(r["p_model"])
    if not by_item:
        return {"n_items": 0, "agreement": math.nan, "ci95": [math.nan, math.nan]}
    hard = [float(np.mean([1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5 for p in ps])) for ps in by_item.values()]
    consistent = [(ps[0] > 0.5) == (ps[1] > 0.5) for ps in by_item.values() if len(ps) == 2]
    return {
        "n_items": len(by_item),
        "agreement": float(np.mean(hard)),
        "ci95": list(bootstrap_ci(hard, n_boot=n_boot, seed=seed)),
        "soft_agreement": float(np.mean([np.mean(ps) for ps in by_item.values()])),
        "position_consistency": float(np.mean(consistent)) if consistent else math.nan,
        "unjudgeable_orders": sum(math.isnan(r["p_model"]) for r in records),
    }


# ----------------------------------------------------------------------------------------------------------------
# metrics


def load_lc_files(difficulty_csv: Path | None, gamed_csv: Path | None, data_dir: Path | None = None) -> tuple[Any, Any]:
    """(instruction difficulty, df_gamed) for the LC GLM. Paths given: AlpacaEval's own files. Both None: the files
    rebuilt offline from the shipped AlpacaEval 2 annotations (``xlr.winrate.offline_lc_files``, cached), indexed by
    AlpacaEval's row order = X-AlpacaEval id - 1; df_gamed is None where the gamed baselines are not in the data (LC is
    then length_controlled_noreg), and both are None where the data root has no alpaca-eval/ (LC: minimal)."""
    import logging

    import pandas as pd

    log = logging.getLogger(__name__)
    if difficulty_csv is None and gamed_csv is None:
        from xlr.data import DataError
        from xlr.winrate import offline_lc_files

        try:
            difficulty, gamed, prov = offline_lc_files(data_dir)
        except (DataError, FileNotFoundError) as e:
            log.warning("LC files: none given and the offline rebuild is not possible (%s); LC is length_controlled_minimal", e)
            return None, None
        log.info("LC files rebuilt offline (%s): %s", prov["dir"], prov.get("df_gamed"))
        return difficulty, (gamed.drop(columns=["model"], errors="ignore") if gamed is not None else None)
    difficulty = pd.read_csv(difficulty_csv, index_col=0).squeeze("columns") if difficulty_csv else None
    gamed = pd.read_csv(gamed_csv).drop(columns=["model"], errors="ignore") if gamed_csv else None
    return difficulty, gamed


def model_metrics(
    outputs: list[dict[str, Any]],
    judgments: list[dict[str, Any]],
    references: dict[int, str],
    lang: str,
    ev: EvalParams,
    *,
    seed: int,
    h2h: list[dict[str, Any]] | None = None,
    lc_files: tuple[Any, Any] = (None, None),
) -> dict[str, Any]:
    """WR, discrete WR and LC against the reference with 95% bootstrap CIs; head-to-head vs pi0; fidelity; lengths.

    ``ev``: the params' evaluation section (``bootstrap`` resamples for the WR and head-to-head CIs, ``lc_bootstrap``
    for the LC CI, 0 = none); ``seed``: the study's (``params.seed``); ``lc_files``: (instruction difficulty, df_gamed)
    for the LC GLM, as :func:`load_lc_files` returns them ((None, None): length_controlled_minimal)."""
    from xlr import langid
    from xlr.stats import bootstrap_ci, bootstrap_statistic
    from xlr.winrate import WinRateError, length_controlled_winrate, win_rates

    n_boot, lc_boot = ev.bootstrap, ev.lc_bootstrap
    difficulty, gamed = lc_files

    pref = per_item_preference(judgments)
    by_id = {o["id"]: o for o in outputs}
    judged = [(int(k.split(":", 1)[1]), p) for k, p in pref.items() if not math.isnan(p)]
    ids = [i for i, _ in judged]
    p = np.array([v for _, v in judged])
    m: dict[str, Any] = {
        "lang": lang,
        "n_prompts": len(outputs),
        "n_judged": len(judged),
        "unjudgeable": len(pref) - len(judged),
        "identical_to_reference": sum(bool(r.get("identical")) for r in judgments),
    }
    if len(p):
        m.update(win_rates(p))
        m["win_rate_ci95"] = [100 * x for x in bootstrap_ci(p, n_boot=n_boot, seed=seed)]
        len_model = np.array([len(by_id[i]["output"]) for i in ids])
        len_base = np.array([len(references[i]) for i in ids])
        index = [i - 1 for i in ids]  # X-AlpacaEval ids 1..805 follow AlpacaEval's row order 0..804
        try:
            lc = length_controlled_winrate(p, len_model, len_base, index, difficulty=difficulty, gamed=gamed)
            m.update(
                length_controlled_winrate=lc["length_controlled_winrate"],
                lc_standard_error=lc["lc_standard_error"],
                lc_variant=lc["variant"],
                lc_weights=lc["weights"],
            )

            def lc_stat(idx: np.ndarray) -> float:
                try:
                    return length_controlled_winrate(
                        p[idx], len_model[idx], len_base[idx], [index[j] for j in idx], difficulty=difficulty, gamed=gamed
                    )["length_controlled_winrate"]
                except (WinRateError, ValueError):
                    return math.nan

            m["lc_ci95"] = list(bootstrap_statistic(lc_stat, len(p), n_boot=lc_boot, seed=seed)) if lc_boot else [math.nan, math.nan]
            m["lc_bootstrap"] = lc_boot
        except WinRateError as e:
            m.update(length_controlled_winrate=math.nan, lc_variant=f"not computed: {e}")
    if h2h:
        hp = np.array([v for v in per_item_preference(h2h).values() if not math.isnan(v)])
        if len(hp):
            m["h2h_vs_pi0"] = {
                "win_rate": float(hp.mean() * 100),
                "ci95": [100 * x for x in bootstrap_ci(hp, n_boot=n_boot, seed=seed)],
                "n": int(len(hp)),
                "unjudgeable_orders": sum(math.isnan(r["p_model"]) for r in h2h),
            }
    detected = langid.detect([o["output"] for o in outputs], extra_codes=[lang])
    unsupported = langid.unsupported_languages([lang], "lingua").get(lang)  # lingua cannot return this code: not scored, not 0
    m["fidelity"] = float(np.mean([d == lang for d in detected])) if outputs and not unsupported else math.nan
    m["fidelity_not_scored"] = unsupported
    m["undetermined_language"] = sum(d is None for d in detected)
    m["mean_output_chars"] = float(np.mean([len(o["output"]) for o in outputs])) if outputs else math.nan
    m["mean_reference_chars"] = float(np.mean([len(references[o["id"]]) for o in outputs])) if outputs else math.nan
    m["truncated"] = sum(bool(o.get("truncated")) for o in outputs)
    m["empty_outputs"] = sum(not o["output"].strip() for o in outputs)
    return m


# ----------------------------------------------------------------------------------------------------------------
# language fidelity (judge-free): the Language Confusion Benchmark's line- and word-level pass rates


def fidelity_rows(
    outputs: dict[tuple[str, str, str], list[dict[str, Any]]],
    detector: str = "fasttext",
    n_boot: int = 1000,
    seed: int = 0,
    baseline: str = "pi0",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """LPR / WPR / LCPR (percent, 95% bootstrap CIs) per (model, set, lang) of ``outputs`` ({key: [{id, output}]}), and
    for every model but ``baseline`` McNemar's paired test against the baseline's answers to the same prompts
    (per-prompt pass/fail; WPR only where it applies). Returns (rows, per-output items)."""
    from xlr.fidelity import fidelity_summary, output_passes, paired_test

    passes: dict[tuple[str, str, str], dict[Any, dict[str, Any]]] = {}
    items: list[dict[str, Any]] = []
    for (model, set_, lang), outs in outputs.items():
        found = output_passes([o["output"] for o in outs], lang, detector=detector)
        passes[(model, set_, lang)] = {o["id"]: p for o, p in zip(outs, found, strict=True)}
        items += [{"model": model, "set": set_, "lang": lang, "id": o["id"], **p} for o, p in zip(outs, found, strict=True)]
    rows = []
    for (model, set_, lang), by_id in passes.items():
        row: dict[str, Any] = {
            "model": model,
            "set": set_,
            "lang": lang,
            **fidelity_summary(list(by_id.values()), n_boot=n_boot, seed=seed),
        }
        base = passes.get((baseline, set_, lang))
        if base is not None and model != baseline:
            common = [i for i in by_id if i in base]
            tests = {}
            for field in ("line_pass", "word_pass"):
                both = [i for i in common if by_id[i].get(field) is not None and base[i].get(field) is not None]
                if both:
                    tests[field] = paired_test([by_id[i] for i in both], [base[i] for i in both], field=field)
            row[f"vs_{baseline}"] = tests
        rows.append(row)
    return rows, items
