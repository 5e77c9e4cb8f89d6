"""Judges measured against the real judge: agreement with GPT-4-turbo's own AlpacaEval 2 verdicts.

The shipped annotations (``alpaca-eval/annotations/<model>.json.gz``) hold GPT-4-turbo's soft preference (the
``weighted_alpaca_eval_gpt4_turbo`` annotator) between the baseline ``gpt4_1106_preview`` (output_1) and each of 52
models (output_2) on AlpacaEval's 805 instructions. Raw agreement on them means little: GPT-4-turbo preferred the
baseline in ~90% of its clear verdicts, so "always the baseline" agrees 0.89 and "the longer output wins" 0.87. So:

- **balanced sample**: clear verdicts only (``|preference - 1.5| >= margin``, default 0.2), as many items where the
  model's output won as where the baseline's did, seeded, stratified over models (equal shares, round robin) and,
  within a model, over AlpacaEval's ``dataset`` (round robin); identical outputs and the baseline model itself are
  left out (counted). Each item is presented in a random order (drawn as alpaca_eval draws it,
  :func:`xlr.judge.model_shown_first`, with ``judge.order_seed`` and ``judge.order_seed_columns``: by default the order
  GPT-4-turbo was shown), and pairwise protocols judge it in both orders to measure position consistency.
- **length-matched subset**: a balanced sample, drawn the same way, of the clear verdicts whose two outputs are within
  ``length_tol`` (20%) of each other's length in characters (``|a - b| <= tol * max(a, b)``), taking the balanced
  sample's own length-matched items first (they are judged already). There "the longer output wins" cannot help.
- **ranking sample**: ``rank_items`` instructions (seeded), every model's comparison on each, all verdicts (not
  balanced): the judge's win rate per model, and the Spearman correlation across models with the published leaderboard
  win rate (and LC). GPT-4-turbo's own verdicts on the same items give the ceiling at that sample size.

Metrics per protocol (:data:`xlr.judge.PROTOCOLS`), with 95% percentile bootstrap CIs over items (over instructions
for the Spearman): hard agreement (same winner; a judge's exact 0.5 counts half), soft agreement (mean of
``1 - |p - p_gpt4|``, p_gpt4 = preference - 1), position consistency (pairwise: both orders name the same winner),
unjudgeable items (counted, left out). Baselines on the same items: "the longer output wins", "always the first
output" (in the presented order) and "always the baseline". A judge is *informative* when its balanced agreement CI
lies above the length baseline's point estimate there, or its length-matched agreement CI lies above 0.5.

Beside those, the existing validation on held-out UltraFeedback labels (:func:`xlr.evaluate.judge_agreement`), and,
on X-AlpacaEval itself, the shipped answers of three models judged against the gpt-4-turbo references: WR (LC from
10 items) per language beside the paper's Table 2, and whether the judge orders the three models as the paper's judge.

Entry points: :func:`validate` (everything, JSON/JSONL under ``out_dir``) and :func:`format_report` (text tables).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xlr.errors import XlrError
from xlr.stats import bootstrap_ci, bootstrap_statistic, spearman, wilson_ci

if TYPE_CHECKING:
    from xlr.config import JudgeParams

log = logging.getLogger(__name__)

BASELINE_MODEL = "gpt4_1106_preview"
CLEAR_MARGIN = 0.2
LENGTH_TOL = 0.2
XAE_REFERENCE = "gpt-4-turbo-2024-04-09"


class ValidationError(XlrError, ValueError):
    pass


# ----------------------------------------------------------------------------------------------------------------
# data


def load_comparisons(data_dir: str | Path | None = None, exclude: Sequence[str] = (BASELINE_MODEL,)) -> tuple[Any, dict[str, Any]]:
    """Every shipped AlpacaEval 2 comparison as one DataFrame (via :func:`xlr.data.load_alpaca_annotations`):
    columns key (``model:record``), model, record, dataset, instruction, output (the model's, output_2),
    baseline_output (gpt4_1106_preview's, output_1), preference, p_gpt4 (= preference - 1: GPT-4-turbo's probability
    that the model's output is better), len_model, len_baseline. Rows without a preference, with identical outputs,
    or of an excluded model are left out and counted in the report."""
    import pandas as pd

    from xlr import data

    frames = []
    report: dict[str, Any] = {"files": 0, "rows": 0, "skipped": {"no preference": 0, "identical outputs": 0, "excluded model": 0}}
    for model, path in data.alpaca_annotation_files(data_dir).items():
        df, rep = data.load_alpaca_annotations(path)
        report["files"] += 1
        report["rows"] += len(df)
        if model in exclude:
            report["skipped"]["excluded model"] += len(df)
            continue
        df = df.assign(model=model)
        if "dataset" not in df.columns:
            df["dataset"] = ""
        no_pref = df["preference"].isna()
        same = df["output_1"] == df["output_2"]
        report["skipped"]["no preference"] += int(no_pref.sum())
        report["skipped"]["identical outputs"] += int((same & ~no_pref).sum())
        frames.append(df[~no_pref & ~same])
    if not frames:
        raise ValidationError("no AlpacaEval comparisons left after the exclusions")
    df = pd.concat(frames, ignore_index=True)
    out = pd.DataFrame(
        {
            "key": df["model"] + ":" + df["record"].astype(str),
            "model": df["model"],
            "record": df["record"].astype(int),
            "dataset": df["dataset"].fillna("").astype(str),
            "instruction": df["instruction"],
            "output": df["output_2"],
            "baseline_output": df["output_1"],
            "preference": df["preference"].astype(float),
        }
    )
    out["p_gpt4"] = out["preference"] - 1.0
    out["len_model"] = out["output"].str.len()
    out["len_baseline"] = out["baseline_output"].str.len()
    report["kept"] = len(out)
    return out, report


def length_matched(len_a: Any, len_b: Any, tol: float = LENGTH_TOL) -> Any:
    """Whether two outputs are within ``tol`` of each other's length: ``|a - b| <= tol * max(a, b)``."""
    a, b = np.asarray(len_a, dtype=float), np.asarray(len_b, dtype=float)
    return np.abs(a - b) <= tol * np.maximum(a, b)


def _rng(seed: int, *tags: Any) -> np.random.Generator:
    from xlr.sampling import derive_seed

    return np.random.default_rng(derive_seed(seed, *tags))


def _stratified(pool: Any, k: int, rng: np.random.Generator) -> list[int]:
    """``k`` row labels of ``pool``: models in a seeded order take turns (equal shares while they last); each model's
    items come round robin over its datasets (seeded order), items shuffled within a (model, dataset) cell."""
    per_model: list[list[int]] = []
    models = sorted(pool["model"].unique())
    for m in [models[i] for i in rng.permutation(len(models))]:
        sub = pool[pool["model"] == m]
        cells = [list(sub.index[sub["dataset"] == d]) for d in sorted(sub["dataset"].unique())]
        cells = [[c[i] for i in rng.permutation(len(c))] for c in cells]
        cells = [cells[i] for i in rng.permutation(len(cells))]
        order = [c[j] for j in range(max(map(len, cells), default=0)) for c in cells if j < len(c)]
        per_model.append(order)
    picked: list[int] = []
    depth = 0
    while len(picked) < k and any(depth < len(o) for o in per_model):
        for o in per_model:
            if depth < len(o) and len(picked) < k:
                picked.append(o[depth])
        depth += 1
    return picked


def _presented(frame: Any, seed: int, jp: JudgeParams | None) -> list[bool]:
    """Per row (instruction, output, baseline_output): the model's output first in the one-order protocol, as
    :func:`xlr.judge.judge_pairs` draws it with ``jp`` (its order_seed and order_seed_columns; None: ``seed``, by
    instruction)."""
    from xlr.judge import model_shown_first

    order_seed, order_seed_columns = (seed, "instruction") if jp is None else (jp.order_seed, jp.order_seed_columns)
    return [
        model_shown_first(i, o, b, order_seed, order_seed_columns)
        for i, o, b in zip(frame["instruction"], frame["output"], frame["baseline_output"], strict=True)
    ]


def balanced_sample(
    df: Any,
    n_items: int,
    seed: int = 0,
    margin: float = CLEAR_MARGIN,
    length_tol: float | None = None,
    prefer: Sequence[str] = (),
    max_chars: int | None = None,
    *,
    jp: JudgeParams | None = None,
) -> Any:
    """A balanced sample of clear verdicts: ``n_items // 2`` where GPT-4-turbo preferred the model's output and as many
    where it preferred the baseline's (both fewer when a class runs short: the counts stay equal), stratified
    (:func:`_stratified`), seeded. ``length_tol``: only length-matched pairs. ``prefer``: keys taken first (in the
    given order) before the stratified draw fills the rest. ``max_chars``: only pairs whose two outputs are both at
    most that long (cheaper to judge; the baselines are then measured on the same, shorter population). A smaller
    sample is a prefix of a larger one with the same seed (per class), so sizes nest. Adds ``model_wins`` (GPT-4-turbo's verdict) and
    ``model_first`` (the presented order, as :func:`xlr.judge.judge_pairs` draws it with the judge params ``jp``:
    ``jp.order_seed`` and ``jp.order_seed_columns``; None: ``seed``, by instruction)."""
    if n_items < 2:
        raise ValidationError(f"n_items={n_items}: a balanced sample needs at least 2 items")
    pool = df[np.abs(df["p_gpt4"] - 0.5) >= margin]
    if max_chars is not None:
        pool = pool[(pool["len_model"] <= max_chars) & (pool["len_baseline"] <= max_chars)]
    if length_tol is not None:
        pool = pool[length_matched(pool["len_model"], pool["len_baseline"], length_tol)]
    wins = pool["p_gpt4"] > 0.5
    k = min(n_items // 2, int(wins.sum()), int((~wins).sum()))
    if k == 0:
        raise ValidationError("no clear verdict of one side in the pool: cannot balance")
    chosen: list[int] = []
    for cls in (True, False):
        part = pool[wins == cls]
        pos = {key: n for n, key in enumerate(prefer)}
        first = sorted(part.index[part["key"].isin(pos)], key=lambda i: pos[part.at[i, "key"]])[:k]
        rest = part.drop(index=first)
        chosen += first + _stratified(rest, k - len(first), _rng(seed, "balanced", cls, length_tol))
    out = pool.loc[chosen].copy()
    out["model_wins"] = out["p_gpt4"] > 0.5
    out["model_first"] = _presented(out, seed, jp)
    return out.reset_index(drop=True)


def ranking_sample(
    df: Any,
    rank_items: int,
    seed: int = 0,
    models: Sequence[str] | None = None,
    max_chars: int | None = None,
    *,
    jp: JudgeParams | None = None,
) -> Any:
    """Every (listed) model's comparison on ``rank_items`` instructions drawn with ``seed`` among those all of them
    answered (and, with ``max_chars``, whose baseline output is at most that long): all verdicts, not balanced (a
    model's win rate on them estimates its leaderboard win rate). ``model_first`` as in :func:`balanced_sample`."""

    sub = df if models is None else df[df["model"].isin(list(models))]
    n_models = sub["model"].nunique()
    counts = sub.groupby("instruction")["model"].nunique()
    ok = counts.index[counts == n_models]
    if max_chars is not None:
        short = set(sub.loc[sub["len_baseline"] <= max_chars, "instruction"])
        ok = [i for i in ok if i in short]
    common = sorted(ok)
    if not common:
        raise ValidationError("no instruction is answered by every model of the ranking")
    rng = _rng(seed, "ranking")
    picked = [common[i] for i in rng.permutation(len(common))[:rank_items]]
    out = sub[sub["instruction"].isin(set(picked))].drop_duplicates(["model", "instruction"]).copy()
    out["model_first"] = _presented(out, seed, jp)
    return out.reset_index(drop=True)


def spread_models(models: Sequence[str], leaderboard: Any, k: int) -> list[str]:
    """``k`` of ``models`` spread evenly over the leaderboard's win rates (the weakest, the strongest and evenly
    between), so that a small ranking sample still spans the whole range."""
    ordered = sorted(models, key=lambda m: float(leaderboard.loc[m, "win_rate"]))
    if k >= len(ordered):
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / (k - 1))] for i in range(k)] if k > 1 else ordered[-1:]


# ----------------------------------------------------------------------------------------------------------------
# metrics


def hard_agreement(p_judge: Any, p_ref: Any) -> np.ndarray:
    """Per item: 1 when the judge names the reference's winner, 0 when the other, 0.5 for a judge's exact tie (the
    reference's own ties, p_ref = 0.5, count half too)."""
    p, q = np.asarray(p_judge, dtype=float), np.asarray(p_ref, dtype=float)
    j = np.sign(p - 0.5)
    r = np.sign(q - 0.5)
    return np.where((j == 0) | (r == 0), 0.5, (j == r).astype(float))


def soft_agreement(p_judge: Any, p_ref: Any) -> np.ndarray:
    return 1.0 - np.abs(np.asarray(p_judge, dtype=float) - np.asarray(p_ref, dtype=float))


def agreement_metrics(p_judge: Any, p_ref: Any, orders: Any = None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Agreement of the judge's preferences with the reference judge's on the same items (NaN = unjudgeable: counted,
    left out), with 95% bootstrap CIs over items. ``orders``: per item the (model first, baseline first) preferences
    of a pairwise judge, for position consistency (both orders name the same winner)."""
    p, q = np.asarray(p_judge, dtype=float), np.asarray(p_ref, dtype=float)
    ok = ~np.isnan(p)
    out: dict[str, Any] = {"n_items": int(ok.sum()), "unjudgeable": int((~ok).sum())}
    if not ok.any():
        return out | {
            "agreement": math.nan,
            "ci95": [math.nan, math.nan],
            "soft_agreement": math.nan,
            "soft_ci95": [math.nan, math.nan],
            "position_consistency": math.nan,
            "consistency_ci95": [math.nan, math.nan],
        }
    hard, soft = hard_agreement(p[ok], q[ok]), soft_agreement(p[ok], q[ok])
    out |= {
        "agreement": float(hard.mean()),
        "ci95": list(bootstrap_ci(hard, n_boot, seed)),
        "soft_agreement": float(soft.mean()),
        "soft_ci95": list(bootstrap_ci(soft, n_boot, seed)),
        "judge_prefers_model": float(np.mean(p[ok] > 0.5)),
    }
    if orders is not None:
        o = np.asarray(orders, dtype=float).reshape(-1, 2)
        both = ~np.isnan(o).any(axis=1)
        cons = ((o[both, 0] > 0.5) == (o[both, 1] > 0.5)).astype(float)
        out |= {
            "position_consistency": float(cons.mean()) if cons.size else math.nan,
            "consistency_ci95": list(bootstrap_ci(cons, n_boot, seed)),
            "prefers_first": float(np.mean(np.concatenate([o[both, 0] > 0.5, o[both, 1] < 0.5]))) if both.any() else math.nan,
        }
    else:
        out |= {"position_consistency": math.nan, "consistency_ci95": [math.nan, math.nan]}
    return out


def baseline_preferences(sample: Any) -> dict[str, np.ndarray]:
    """The baselines' p_model on the items: the longer output wins (0.5 on equal length), always the first output (in
    the presented order), always the baseline."""
    lm, lb = sample["len_model"].to_numpy(float), sample["len_baseline"].to_numpy(float)
    return {
        "length": np.where(lm > lb, 1.0, np.where(lm < lb, 0.0, 0.5)),
        "always_first": sample["model_first"].to_numpy(bool).astype(float),
        "always_baseline": np.zeros(len(sample)),
    }


def population_baselines(df: Any, margin: float = CLEAR_MARGIN, max_chars: int | None = None) -> dict[str, Any]:
    """The length baseline's balanced agreement over ALL clear verdicts (no sampling: the mean of its agreement on
    model-won and on baseline-won items), uncapped and with ``max_chars``; and the share of clear verdicts the baseline
    won (what "always the baseline" agrees on raw, unbalanced data)."""
    pool = df[np.abs(df["p_gpt4"] - 0.5) >= margin]
    out: dict[str, Any] = {"clear_verdicts": len(pool), "baseline_won_share": float((pool["p_gpt4"] < 0.5).mean())}

    def bal_len(d: Any) -> float:
        w, lost = d[d["p_gpt4"] > 0.5], d[d["p_gpt4"] < 0.5]
        return float((np.mean(w["len_model"] > w["len_baseline"]) + np.mean(lost["len_model"] < lost["len_baseline"])) / 2)

    out["length_balanced"] = bal_len(pool)
    out["length_raw"] = float(np.mean((pool["len_model"] > pool["len_baseline"]) == (pool["p_gpt4"] > 0.5)))
    if max_chars is not None:
        capped = pool[(pool["len_model"] <= max_chars) & (pool["len_baseline"] <= max_chars)]
        out |= {"max_chars": max_chars, "clear_verdicts_capped": len(capped), "length_balanced_capped": bal_len(capped)}
    return out


def _lower(entry: dict[str, Any] | None) -> float:
    """The lower end the informative rule uses: the bootstrap CI's, and where the number of judged items is known, no
    higher than the Wilson interval's (a percentile bootstrap collapses at small n: 2 of 2 agreeing gives [1, 1])."""
    if not entry:
        return math.nan
    lo = entry.get("ci95", [math.nan])[0]
    n = entry.get("n_items", 0)  # judged items (unjudgeable ones are counted apart)
    if n > 0 and entry.get("agreement") == entry.get("agreement") and entry.get("agreement") is not None:
        lo = min(lo, wilson_ci(round(entry["agreement"] * n), n)[0])
    return lo


def informative(balanced: dict[str, Any], matched: dict[str, Any] | None, length_point: float) -> dict[str, Any]:
    """Is the judge informative? Yes when its balanced agreement CI lies above the length baseline's point estimate on
    the balanced sample, or its length-matched agreement CI lies above 0.5; the reason says which (or why not). The lower
    end is the bootstrap CI's, or the Wilson interval's where that is lower (:func:`_lower`)."""
    lo = _lower(balanced)
    mlo = _lower(matched)
    if lo == lo and lo > length_point:
        return {
            "informative": True,
            "reason": f"balanced agreement CI [{lo:.3f}, {balanced['ci95'][1]:.3f}] lies above the length baseline's {length_point:.3f}",
        }
    if mlo == mlo and mlo > 0.5:
        return {"informative": True, "reason": f"length-matched agreement CI [{mlo:.3f}, {matched['ci95'][1]:.3f}] lies above 0.5"}
    parts = [
        f"balanced CI lower end {lo:.3f} <= length baseline {length_point:.3f}" if lo == lo else "no balanced judgments",
        f"length-matched CI lower end {mlo:.3f} <= 0.5" if mlo == mlo else "no length-matched judgments",
    ]
    return {"informative": False, "reason": "; ".join(parts)}


def ranking_metrics(sample: Any, p_judge: Any, leaderboard: Any, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per-model win rate (mean p x 100 over its judged items) and its Spearman correlation across models with the
    leaderboard's win rate and LC win rate; CI by resampling instructions (every model's items of one instruction move
    together)."""
    s = sample.assign(p=np.asarray(p_judge, dtype=float))
    s = s[s["model"].isin(leaderboard.index) & ~s["p"].isna()]
    if s.empty or s["model"].nunique() < 3:
        return {"n_models": int(s["model"].nunique()), "spearman_wr": math.nan, "spearman_lc": math.nan, "ci95_wr": [math.nan, math.nan]}
    instr = s["instruction"].to_numpy()
    models = s["model"].to_numpy()
    pv = s["p"].to_numpy()

    def rho(idx: np.ndarray, col: str = "win_rate") -> float:
        import pandas as pd

        wr = pd.Series(pv[idx]).groupby(models[idx]).mean()
        if len(wr) < 3:
            return math.nan
        return spearman(wr.to_numpy(), leaderboard.loc[wr.index, col].to_numpy(float))

    all_idx = np.arange(len(s))
    wr = s.groupby("model")["p"].mean() * 100
    return {
        "n_models": int(wr.size),
        "n_instructions": int(len(set(instr))),
        "n_items": int(len(s)),
        "spearman_wr": rho(all_idx),
        "ci95_wr": list(bootstrap_statistic(rho, len(s), n_boot, seed, clusters=instr)),
        "spearman_lc": rho(all_idx, "length_controlled_winrate"),
        "win_rate": {m: float(v) for m, v in wr.items()},
    }


# ----------------------------------------------------------------------------------------------------------------
# judging


@dataclass(frozen=True)
class _Judging:
    """What every judge call of one validation shares: the judge, its cache, the params' judge section (its
    order_seed / order_seed_columns draw the one-order protocol's order; prices zeroed, see :func:`validate`) and the
    pairwise prompt template."""

    judge: Any
    cache: Any
    jp: JudgeParams
    template: str


def _judge_items(j: _Judging, rows: Any, protocol: Any, both_orders: bool, desc: str) -> tuple[dict[str, dict[str, Any]], Any, float]:
    """Judge the rows (DataFrame with key, instruction, output, baseline_output) with one protocol; ``j.jp``'s
    order_seed and order_seed_columns draw the one-order protocol's order. Returns per key {"p": the protocol's
    preference, "orders": (p model first, p baseline first) for pairwise}, the stats, seconds."""
    from xlr.judge import judge_pairs, model_shown_first

    items = [
        {"key": r.key, "instruction": r.instruction, "output": r.output, "baseline_output": r.baseline_output} for r in rows.itertuples()
    ]
    t0 = time.perf_counter()
    recs, st = judge_pairs(
        j.judge, items, j.cache, j.jp, j.template, orders="both" if both_orders else "random", desc=desc, protocol=protocol
    )
    seconds = time.perf_counter() - t0
    seed, columns = j.jp.order_seed, j.jp.order_seed_columns
    presented = {it["key"]: model_shown_first(it["instruction"], it["output"], it["baseline_output"], seed, columns) for it in items}

    out: dict[str, dict[str, Any]] = {}
    if protocol.pairwise:
        for r in recs:
            e = out.setdefault(r["key"], {"orders": [math.nan, math.nan], "label_mass": []})
            e["orders"][0 if r["model_first"] else 1] = r["p_model"]
            if r.get("logprob_m") is not None:
                e["label_mass"].append(math.exp(r["logprob_m"]) + math.exp(r["logprob_M"]))
        for key, e in out.items():
            if protocol.name == "pairwise":  # the item's random order (as judge_pairs draws it)
                e["p"] = e["orders"][0 if presented[key] else 1]
            else:
                vals = [v for v in e["orders"] if not math.isnan(v)]
                e["p"] = float(np.mean(vals)) if len(vals) == 2 else math.nan  # both orders or unjudgeable
            e["label_mass"] = float(np.mean(e["label_mass"])) if e["label_mass"] else math.nan
    else:
        for r in recs:
            out[r["key"]] = {
                "p": r["p_model"],
                "score_model": r.get("score_model"),
                "score_baseline": r.get("score_baseline"),
                "label_mass": r.get("label_mass", math.nan),
            }
    return out, st, seconds


def _xae_section(j: _Judging, protocol: Any, xae_items: int, seed: int, data_dir: Any) -> dict[str, Any]:
    """X-AlpacaEval: the shipped answers of the three models vs the gpt-4-turbo references, per language, beside the
    paper's Table 2 (WR, and LC from 10 judged items). ``seed`` draws the prompts; the order is drawn as
    :func:`_judge_items` draws it; pairwise judges one order, pairwise_both both."""
    import pandas as pd

    from xlr import data
    from xlr.paths import data_root
    from xlr.winrate import WinRateError, length_controlled_winrate

    gens = data.xalpacaeval_output_generators(data_dir)
    try:
        paper = data.load_paper_table2(data_dir)
    except (
        data.DataError,
        FileNotFoundError,
    ) as e:  # a transcription, not a public file: a fetched root lacks it (xlr.data_sources.NOT_FETCHABLE)
        log.warning("X-AlpacaEval judge validation without the paper's Table 2 (its columns are NaN): %s", e)
        paper = pd.DataFrame(columns=["model", "lang", "lc", "wr"])
    ids = data.xalpacaeval_ids(xae_items, seed)
    root = data_root(data_dir)
    langs = sorted({p.name.removesuffix(".json") for g in gens for p in (root / data.XAE_OUTPUTS / g).glob("*.json")})
    out: dict[str, Any] = {"ids": ids, "generators": gens, "languages": {}}
    for lang in langs:
        rows_xae = list(data.load_xalpacaeval(lang, ids, XAE_REFERENCE, data_dir))
        refs = {r["id"]: r["reference_output"] for r in rows_xae}
        instr = {r["id"]: r["instruction"] for r in rows_xae}
        stats, seconds = [], 0.0
        per: dict[str, Any] = {}
        for g in gens:
            outs = data.load_xalpacaeval_outputs(g, lang, ids, data_dir)
            df = pd.DataFrame(
                [
                    {"key": f"xae:{g}:{lang}:{i}", "id": i, "instruction": instr[i], "output": outs[i], "baseline_output": refs[i]}
                    for i in ids
                ]
            )
            res, st, sec = _judge_items(j, df, protocol, protocol.name == "pairwise_both", f"X-AlpacaEval {g}/{lang}")
            stats.append(st.as_dict())
            seconds += sec
            p = np.array([res[k]["p"] for k in df["key"]])
            ok = ~np.isnan(p)
            m: dict[str, Any] = {
                "n": int(ok.sum()),
                "unjudgeable": int((~ok).sum()),
                "win_rate": float(p[ok].mean() * 100) if ok.any() else math.nan,
            }
            if ok.sum() >= 10:
                try:
                    lc = length_controlled_winrate(
                        p[ok],
                        df["output"].str.len().to_numpy()[ok],
                        df["baseline_output"].str.len().to_numpy()[ok],
                        [i - 1 for i in df["id"].to_numpy()[ok]],
                    )
                    m |= {"lc": lc["length_controlled_winrate"], "lc_variant": lc["variant"]}
                except WinRateError as e:
                    m |= {"lc": math.nan, "lc_variant": f"not computed: {e}"}
            else:
                m |= {"lc": math.nan, "lc_variant": f"not computed: {int(ok.sum())} judged items (< 10)"}
            row = paper[(paper["model"] == g) & (paper["lang"] == lang)]
            m["paper_wr"] = float(row["wr"].iloc[0]) if len(row) else math.nan
            m["paper_lc"] = float(row["lc"].iloc[0]) if len(row) else math.nan
            m["items"] = [{"id": int(i), "p": float(v)} for i, v in zip(df["id"], p, strict=True)]
            per[g] = m
        ours = [per[g]["win_rate"] for g in gens]
        theirs = [per[g]["paper_wr"] for g in gens]
        rank = {
            "spearman_wr": spearman(ours, theirs) if len(gens) >= 2 and not any(map(math.isnan, ours + theirs)) else math.nan,
            "order_ours": [g for _, g in sorted(zip(ours, gens, strict=True), reverse=True)],
            "order_paper": [g for _, g in sorted(zip(theirs, gens, strict=True), reverse=True)],
        }
        rank["same_order"] = rank["order_ours"] == rank["order_paper"]
        out["languages"][lang] = {
            "models": per,
            **rank,
            "seconds": seconds,
            "judge_stats": sum_stats(stats),
            "calls": sum(s["calls"] for s in stats),
            "scores_reused": sum(s.get("scores_reused", 0) for s in stats),
        }
    out["same_order_languages"] = sum(v["same_order"] for v in out["languages"].values())
    return out


def sum_stats(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """JudgeStats dicts added up key by key (calls, cache hits, tokens, cost, ...): what a validation cost in all."""
    out: dict[str, Any] = {}
    for st in stats:
        for k, v in st.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    return out


def _calls_per_comparison(protocol: Any, rows: Any) -> float:
    """Judge calls the protocol itself needs per comparison: 1 (pairwise, one order), 2 (both orders), and for pointwise
    protocols the distinct outputs per comparison of these rows (below 2 where outputs recur, e.g. a shared baseline)."""
    if not len(rows):
        return math.nan
    if protocol.pairwise:
        return 1.0 if protocol.name == "pairwise" else 2.0
    outs = {(r.instruction, o) for r in rows.itertuples() if r.output != r.baseline_output for o in (r.output, r.baseline_output)}
    return len(outs) / len(rows)


def available_protocols(judge: Any) -> list[str]:
    from xlr.judge import PROTOCOLS, APIJudge

    return [p for p in PROTOCOLS if not (isinstance(judge, APIJudge) and p == "loglik")]


@dataclass(frozen=True)
class ValidationSettings:
    """What one :func:`validate` measures. :meth:`from_params` takes every size from the params (the defaults live in
    the schema: ``judge.validation_items``, ``validation_xae_items``, ``validation_rank_items``, ``n_validation_pairs``,
    ``judge.protocol``, ``seed``, ``evaluation.bootstrap``); its overrides (the CLI's options, the judging stage's, a
    test's) replace single fields.

    ``n_items``: the balanced sample; ``n_length_matched``: its length-matched subset (None: n_items // 2);
    ``protocols``: names, or ("all",) for every protocol the backend can run (empty: ``judge.protocol``);
    ``rank_items``: instructions of the ranking sample x every model, or ``rank_models``: these models or that many
    spread evenly over the leaderboard (None: all); ``uf_items``: held-out UltraFeedback labels (0 skips);
    ``xae_items``: X-AlpacaEval prompts per language, the three shipped models vs the references (0 skips);
    ``margin``: a clear verdict's distance from a tie; ``length_tol``: length-matched within this fraction;
    ``max_chars``: only AlpacaEval pairs whose two outputs are at most this long (None: all); ``seed``: the samples'
    draw; ``n_boot``: bootstrap resamples of every CI."""

    n_items: int
    protocols: tuple[str, ...]
    xae_items: int
    rank_items: int
    uf_items: int
    seed: int
    n_boot: int
    n_length_matched: int | None = None
    rank_models: int | tuple[str, ...] | None = None
    margin: float = CLEAR_MARGIN
    length_tol: float = LENGTH_TOL
    max_chars: int | None = None

    def __post_init__(self) -> None:
        for name in ("protocols", "rank_models"):  # one name or a sequence of names -> a tuple (frozen, hashable)
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif value is not None and not isinstance(value, int):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_params(cls, params: Any, **overrides: Any) -> ValidationSettings:
        """The settings of ``params``, with ``overrides`` (field names of this class; a None override keeps the params'
        value, so a CLI option left unset changes nothing)."""
        jp = params.judge
        base = cls(
            n_items=jp.validation_items,
            protocols=(jp.protocol,),
            xae_items=jp.validation_xae_items,
            rank_items=jp.validation_rank_items,
            uf_items=jp.n_validation_pairs,
            seed=params.seed,
            n_boot=params.evaluation.bootstrap,
        )
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def validate(
    params: Any, settings: ValidationSettings | None = None, *, out_dir: str | Path | None = None, judge: Any = None, cache: Any = None
) -> dict[str, Any]:
    """Measure the judge that ``params.judge`` names, with each protocol of ``settings`` (None:
    :meth:`ValidationSettings.from_params`), against GPT-4-turbo's AlpacaEval 2 verdicts (balanced sample,
    length-matched subset, ranking sample), on held-out UltraFeedback labels, and on X-AlpacaEval (the three shipped
    models vs the references, beside the paper's Table 2).
    Judgments go through the judge cache (``runs/.judge-cache``): a rerun costs nothing. ``judge``/``cache``: use
    these instead of building them from params (tests, or a judge already loaded). Returns the whole result (see
    :func:`format_report`); with ``out_dir`` it is written there as ``judge_validation.json`` beside per-item JSONL.
    The judge calls are drawn in the order ``judge.order_seed`` / ``judge.order_seed_columns`` give (as the study's)
    and are not priced: their stats' ``cost_usd`` is 0 whatever ``judge.price_per_1k_*`` say."""
    import pandas as pd

    from xlr import data
    from xlr.evaluate import judge_agreement, validation_items
    from xlr.files import atomic_write_json, atomic_write_jsonl
    from xlr.judge import JudgeCache, Protocol, cache_path, make_judge, protocol_template
    from xlr.paths import runs_dir

    vs = ValidationSettings.from_params(params) if settings is None else settings
    jp = params.judge
    seed, n_boot, margin, length_tol, max_chars = vs.seed, vs.n_boot, vs.margin, vs.length_tol, vs.max_chars
    n_items, xae_items, rank_items, rank_models = vs.n_items, vs.xae_items, vs.rank_items, vs.rank_models
    # the one-order protocol's order, drawn as judge_pairs draws it for the study (xlr.judge.model_shown_first)
    order = {"order_seed": jp.order_seed, "order_seed_columns": jp.order_seed_columns}
    data_dir = params.data.data_dir
    t_start = time.perf_counter()
    if judge is None:
        from xlr.runtime import resolve_device, resolve_dtype

        device = resolve_device(params.runtime.device)
        dtype = resolve_dtype(params.runtime.dtype, device, params.runtime.bf16)[0]
        judge = make_judge(jp, dtype=dtype, device=device, trust_remote_code=params.models.trust_remote_code)
    cache = cache if cache is not None else JudgeCache(cache_path(runs_dir(), judge.id))
    # the validation's judge calls have never been priced (cost_usd 0); judge_pairs prices by its jp: a copy without prices
    unpriced = jp.model_copy(update={"price_per_1k_input": 0.0, "price_per_1k_output": 0.0})
    j = _Judging(judge, cache, unpriced, protocol_template(jp.same_language_clause))
    if not vs.protocols:
        names = [jp.protocol]
    elif list(vs.protocols) == ["all"]:
        names = available_protocols(judge)
    else:
        names = list(dict.fromkeys(vs.protocols))
    if "loglik" in names and "loglik" not in available_protocols(judge):
        raise ValidationError("protocol 'loglik' needs a local judge (an endpoint returns no log-likelihood of a given text)")
    specs = {n: Protocol(n, same_language_clause=jp.same_language_clause, score_max=jp.score_max, loglik_tau=jp.loglik_tau) for n in names}

    df, load_report = load_comparisons(data_dir)
    bal = balanced_sample(df, n_items, seed, margin, max_chars=max_chars, jp=jp)
    n_lm = n_items // 2 if vs.n_length_matched is None else vs.n_length_matched
    lm = (
        balanced_sample(df, n_lm, seed, margin, length_tol=length_tol, prefer=list(bal["key"]), max_chars=max_chars, jp=jp)
        if n_lm >= 2
        else bal.iloc[:0]
    )
    leaderboard = data.load_alpaca_leaderboard(data_dir)
    ranked = df[df["model"].isin(leaderboard.index)]
    if isinstance(rank_models, int):
        rank_models = spread_models(sorted(set(ranked["model"])), leaderboard, rank_models)
    rank = ranking_sample(ranked, rank_items, seed, rank_models, max_chars, jp=jp) if rank_items else bal.iloc[:0]
    union = (
        pd.concat([bal.drop(columns=["model_wins"]), lm.drop(columns=["model_wins"]), rank], ignore_index=True)
        .drop_duplicates("key")
        .reset_index(drop=True)
    )
    sizes = {
        "balanced": len(bal),
        "balanced_model_won": int(bal["model_wins"].sum()),
        "length_matched": len(lm),
        "length_matched_model_won": int(lm["model_wins"].sum()) if len(lm) else 0,
        "length_matched_from_balanced": int(lm["key"].isin(set(bal["key"])).sum()) if len(lm) else 0,
        "ranking_items": len(rank),
        "ranking_models": int(rank["model"].nunique()) if len(rank) else 0,
        "judged_comparisons": len(union),
    }
    result: dict[str, Any] = {
        "judge": judge.id,
        "judge_params": jp.model_dump(mode="json") if hasattr(jp, "model_dump") else dict(jp),
        "seed": seed,
        "order": order,
        "margin": margin,
        "length_tol": length_tol,
        "max_chars": max_chars,
        "n_boot": n_boot,
        "sizes": sizes,
        "data": load_report,
        "population_baselines": population_baselines(df, margin, max_chars),
        "sample_composition": {
            "balanced_by_model": bal.groupby("model").size().to_dict(),
            "balanced_by_dataset": bal.groupby("dataset").size().to_dict(),
        },
        "baselines": {},
        "protocols": {},
    }
    lb_bal = baseline_preferences(bal)
    lb_lm = baseline_preferences(lm) if len(lm) else None
    for name, pb in lb_bal.items():
        entry = {"balanced": agreement_metrics(pb, bal["p_gpt4"], n_boot=n_boot, seed=seed)}
        if lb_lm is not None:
            entry["length_matched"] = agreement_metrics(lb_lm[name], lm["p_gpt4"], n_boot=n_boot, seed=seed)
        if len(rank) and name != "always_baseline":
            entry["ranking"] = ranking_metrics(rank, baseline_preferences(rank)[name], leaderboard, n_boot, seed)
        result["baselines"][name] = entry
    if len(rank):
        result["baselines"]["gpt4_turbo_itself"] = {"ranking": ranking_metrics(rank, rank["p_gpt4"], leaderboard, n_boot, seed)}
    length_point = result["baselines"]["length"]["balanced"]["agreement"]
    held = None
    n_uf = vs.uf_items
    if n_uf:
        held = data.load_english_preferences(params.data.english_preferences, "eval", data_dir)
    per_item_rows: dict[str, list[dict[str, Any]]] = {}
    all_stats: list[dict[str, Any]] = []  # every judge call this validation made or found cached (its total cost)
    for name, spec in specs.items():
        res, st, seconds = _judge_items(j, union, spec, both_orders=spec.pairwise, desc=f"AlpacaEval ({name})")
        all_stats.append(st.as_dict())
        p_of = lambda frame: np.array([res[k]["p"] for k in frame["key"]])  # noqa: E731, B023 (used in this iteration)
        orders_of = (lambda frame: np.array([res[k]["orders"] for k in frame["key"]])) if spec.pairwise else (lambda frame: None)  # noqa: E731, B023
        entry: dict[str, Any] = {
            "balanced": agreement_metrics(p_of(bal), bal["p_gpt4"], orders_of(bal), n_boot, seed),
            "length_matched": agreement_metrics(p_of(lm), lm["p_gpt4"], orders_of(lm), n_boot, seed) if len(lm) else None,
            "ranking": ranking_metrics(rank, p_of(rank), leaderboard, n_boot, seed) if len(rank) else None,
            "label_mass": float(np.nanmean([res[k]["label_mass"] for k in union["key"]])) if spec.name != "loglik" else math.nan,
            "stats": st.as_dict(),
            "seconds": seconds,
            "calls_per_s": st.calls / seconds if st.calls and seconds > 0 else math.nan,
            "calls_per_comparison": _calls_per_comparison(spec, union),
        }
        if entry["calls_per_s"] != entry["calls_per_s"] and spec.pairwise:  # made by the other pairwise protocol (same prompts)
            entry["calls_per_s"] = next((e["calls_per_s"] for n, e in result["protocols"].items() if specs[n].pairwise), math.nan)
        entry["comparisons_per_s"] = entry["calls_per_s"] / entry["calls_per_comparison"]
        entry |= informative(entry["balanced"], entry["length_matched"], length_point)
        if n_uf and held is not None:
            uitems = validation_items(held, n_uf)
            ures, ust, _ = _judge_items(j, pd.DataFrame(uitems), spec, both_orders=spec.pairwise, desc=f"UltraFeedback ({name})")
            if spec.name == "pairwise":  # both orders, each counted (as the study's validation)
                recs = [{"key": k, "p_model": v} for k, e in ures.items() for v in e["orders"]]
            else:
                recs = [{"key": k, "p_model": e["p"]} for k, e in ures.items()]
            entry["ultrafeedback"] = judge_agreement(recs, n_boot=n_boot, seed=seed) | {"calls": ust.calls}
            all_stats.append(ust.as_dict())
            if spec.name == "pairwise_both":  # consistency of the two orders behind each mean
                o = np.array([e["orders"] for e in ures.values()], dtype=float)
                both = ~np.isnan(o).any(axis=1)
                entry["ultrafeedback"]["position_consistency"] = (
                    float(np.mean((o[both, 0] > 0.5) == (o[both, 1] > 0.5))) if both.any() else math.nan
                )
        if xae_items:
            entry["xalpacaeval"] = _xae_section(j, spec, xae_items, seed, data_dir)
            all_stats += [v["judge_stats"] for v in entry["xalpacaeval"]["languages"].values()]
        result["protocols"][name] = entry
        per_item_rows[name] = [
            {
                "key": k,
                "model": m,
                "in_balanced": k in set(bal["key"]),
                "in_length_matched": k in set(lm["key"]),
                "in_ranking": k in set(rank["key"]),
                "p_gpt4": float(pg),
                **{kk: vv for kk, vv in res[k].items()},
            }
            for k, m, pg in zip(union["key"], union["model"], union["p_gpt4"], strict=True)
        ]
    result["seconds"] = time.perf_counter() - t_start
    result["judge_stats"] = sum_stats(all_stats)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "judge_validation.json", result)
        atomic_write_jsonl(
            out / "judge_validation_sample.jsonl",
            [
                {
                    "key": r.key,
                    "model": r.model,
                    "dataset": r.dataset,
                    "p_gpt4": r.p_gpt4,
                    "len_model": int(r.len_model),
                    "len_baseline": int(r.len_baseline),
                    "model_first": bool(r.model_first),
                    "in_balanced": r.key in set(bal["key"]),
                    "in_length_matched": r.key in set(lm["key"]),
                    "in_ranking": r.key in set(rank["key"]),
                }
                for r in union.itertuples()
            ],
        )
        for name, rows in per_item_rows.items():
            atomic_write_jsonl(out / f"judge_validation_{name}.jsonl", rows)
    return result


# ----------------------------------------------------------------------------------------------------------------
# report


def _ci(m: dict[str, Any] | None, key: str = "agreement", ci: str = "ci95") -> str:
    if not m or key not in m or m[key] != m[key]:
        return "-"
    lo, hi = m.get(ci, [math.nan, math.nan])
    return f"{m[key]:.3f} [{lo:.2f}, {hi:.2f}]" if lo == lo else f"{m[key]:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_report(result: dict[str, Any]) -> str:
    """Plain-text tables of a :func:`validate` result."""
    s = result["sizes"]
    out = [
        f"Judge {result['judge']} vs GPT-4-turbo (AlpacaEval 2 annotations), seed {result['seed']}",
        f"balanced sample: {s['balanced']} clear verdicts (|pref - 1.5| >= {result['margin']}), {s['balanced_model_won']} model won; "
        f"length-matched (within {result['length_tol']:.0%}): {s['length_matched']} ({s['length_matched_model_won']} model won, "
        f"{s['length_matched_from_balanced']} shared with the balanced sample); ranking: {s['ranking_items']} comparisons, "
        f"{s['ranking_models']} models; 95% bootstrap CIs ({result['n_boot']} resamples).",
        "",
    ]
    rows = []
    for name, e in result["protocols"].items():
        r = e.get("ranking") or {}
        rows.append(
            [
                name,
                _ci(e["balanced"]),
                _ci(e["balanced"], "soft_agreement", "soft_ci95"),
                _ci(e["length_matched"]),
                _ci(e["balanced"], "position_consistency", "consistency_ci95"),
                _ci(r, "spearman_wr", "ci95_wr"),
                str(e["balanced"]["unjudgeable"] + ((e["length_matched"] or {}).get("unjudgeable", 0))),
                "yes" if e["informative"] else "no",
            ]
        )
    for name, e in result["baselines"].items():
        r = e.get("ranking") or {}
        rows.append(
            [
                f"({name.replace('_', ' ')})",
                _ci(e.get("balanced")),
                _ci(e.get("balanced"), "soft_agreement", "soft_ci95"),
                _ci(e.get("length_matched")),
                "-",
                _ci(r, "spearman_wr", "ci95_wr"),
                "-",
                "-",
            ]
        )
    out.append(
        _table(
            [
                "protocol",
                "agreement (balanced)",
                "soft agreement",
                "agreement (length-matched)",
                "position consistency",
                "Spearman vs leaderboard WR",
                "unjudgeable",
                "informative",
            ],
            rows,
        )
    )
    out += ["", "informative: " + "; ".join(f"{n}: {e['reason']}" for n, e in result["protocols"].items())]
    rows = [
        [
            n,
            f"{e['calls_per_s']:.2f}" if e["calls_per_s"] == e["calls_per_s"] else "cached",
            f"{e['calls_per_comparison']:.2f}",
            f"{e['comparisons_per_s']:.3f}" if e["comparisons_per_s"] == e["comparisons_per_s"] else "cached",
            f"{e['label_mass']:.3f}" if e["label_mass"] == e["label_mass"] else "-",
            str(e["stats"]["calls"]),
            str(e["stats"].get("scores_reused", 0)),
        ]
        for n, e in result["protocols"].items()
    ]
    out += [
        "",
        _table(["protocol", "calls/s", "calls per comparison", "comparisons/s", "mass on labels", "new calls", "scores reused"], rows),
    ]
    uf = [
        [
            n,
            _ci(e["ultrafeedback"]),
            f"{e['ultrafeedback'].get('soft_agreement', math.nan):.3f}",
            f"{e['ultrafeedback'].get('position_consistency', math.nan):.3f}",
            str(e["ultrafeedback"]["n_items"]),
        ]
        for n, e in result["protocols"].items()
        if e.get("ultrafeedback")
    ]
    if uf:
        out += [
            "",
            "Held-out UltraFeedback labels (chosen vs rejected):",
            _table(["protocol", "agreement", "soft", "position consistency", "items"], uf),
        ]
    for n, e in result["protocols"].items():
        x = e.get("xalpacaeval")
        if not x:
            continue
        rows = []
        for lang, v in x["languages"].items():
            for g, m in v["models"].items():
                lc = f"{m['lc']:.1f}" if m["lc"] == m["lc"] else "-"
                rows.append([lang, g, f"{m['win_rate']:.1f}", lc, f"{m['paper_wr']:.2f}", f"{m['paper_lc']:.2f}", str(m["n"])])
            rows.append([lang, "order same as paper?", "yes" if v["same_order"] else "no", f"Spearman {v['spearman_wr']:.2f}", "", "", ""])
        out += [
            "",
            f"X-AlpacaEval ({n}; {len(x['ids'])} prompts per language vs {XAE_REFERENCE}): ours vs the paper's Table 2 (GPT-4-turbo judge, 805 prompts); "
            f"same model order in {x['same_order_languages']}/{len(x['languages'])} languages",
            _table(["lang", "model", "WR", "LC", "paper WR", "paper LC", "n"], rows),
        ]
    return "\n".join(out)
