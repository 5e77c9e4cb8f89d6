"""The notebook sequence under papermill, HTML reports, and the tables the notebooks show.

``xlr run params/X.yaml`` executes ``notebooks/NN_*.ipynb`` in order with papermill (the per-iteration ones once per
iteration), each with its ``parameters`` cell set (params path, overrides, iteration, the stages it may run). Executed
notebooks go to ``runs/<name>/notebooks/``, their HTML (code hidden unless ``--with-code``) to ``reports/<name>/``,
and ``reports/<name>/index.html`` gathers provenance, the headline tables and the figures.

A stage already done with intact artifacts is skipped inside its notebook (resume). A failing notebook stops the run:
the error names the notebook, the cell and the exception, and the partial executed notebook is kept.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from xlr.config import Params
from xlr.files import atomic_write_text, read_json
from xlr.runs import Run


def header(params: Params, run: Run) -> Any:
    """What this run is, on top of every notebook and report: model, judge, data sizes, seeds (never the paper's)."""
    from IPython.display import HTML

    return HTML(provenance_html(params, run))


def provenance_rows(params: Params, run: Run) -> list[tuple[str, str]]:
    m = run.manifest
    models = m.get("models", {})

    def model(role: str, spec: str) -> str:
        rec = models.get(role) or {}
        h = rec.get("source_gguf_sha256") or rec.get("weights_sha256")
        if isinstance(h, dict):  # per weight file: the first file's hash stands for the folder (all are in the manifest)
            h = next(iter(h.values()), None)
        return f"{spec}" + (f" (sha256 {str(h)[:12]}…)" if h else "")

    ev = params.evaluation
    judge = f"{params.judge.backend}: {params.judge.model}" + (" — a weak local judge" if params.judge.backend == "local" else "")
    return [
        ("run", f"{params.name} — {params.description}"),
        ("pi_ref", model("pi_ref", params.models.pi_ref)),
        (
            "pi0",
            model("pi0", params.models.pi0)
            if params.models.pi0 != "build"
            else f"built by English DPO of pi_ref on {params.anchor.n_train} pairs" + _anchor_cache_note(models.get("pi0") or {}),
        ),
        (
            "judge",
            judge
            + (" + same-language clause" if params.judge.same_language_clause else "")
            + f"; protocol {params.judge.protocol}"
            + ("; both orders averaged per item" if params.judge.orders == "both" else "; one random order per item (AlpacaEval)"),
        ),
        (
            "training data",
            f"{params.data.n_train_prompts} prompts/language/iteration × {len(params.languages.train)} languages ({', '.join(params.languages.train)}), N = {params.sampling.n_samples}, {params.iterations} iterations",
        ),
        (
            "evaluation",
            f"X-AlpacaEval {ev.n_prompts or 805} prompts/language ({', '.join(params.languages.eval)}), max_new_tokens {ev.max_new_tokens}, vs {ev.reference_generator}",
        ),
        (
            "language fidelity",
            f"LCB {', '.join(ev.lcb_sets) or 'none'}: {ev.lcb_n_prompts or 'all'} prompts/set/language, max_new_tokens {ev.lcb_max_new_tokens}; "
            f"detector {ev.fidelity_detector}; also every X-AlpacaEval answer",
        ),
        (
            "reward",
            f"{params.reward.variant}, {params.reward.models}, scored in {params.reward.dtype}; token mask "
            + (
                "'icr': the reference code's (first response token not scored, the closing end-of-turn token scored), as the paper was run"
                if params.reward.parity == "icr"
                else "'none': each response token scored from the position that predicts it (corrected; the reference code is off by one)"
            )
            + f"; alpha grid {params.pairs.alpha_grid}"
            + (f", upper bound {params.pairs.upper_bound}" if params.pairs.upper_bound is not None else ""),
        ),
        (
            "reward probe",
            f"{params.probe.n_items} X-AlpacaEval instructions/language, variants {', '.join(params.probe.variants)} + length"
            if params.probe.enabled
            else "off",
        ),
        ("seeds", f"seed {params.seed}, eval subset seed {ev.subset_seed}"),
        ("params hash", m.get("params_hash", "")[:16]),
        ("git SHA", str(m.get("git_sha"))),
        ("packages", ", ".join(f"{k} {v}" for k, v in (m.get("packages") or {}).items())),
        ("runtime", ", ".join(f"{k} {v}" for k, v in (m.get("runtime") or {}).items() if k != "precision")),
        (
            "precision",
            "; ".join(
                f"{f}: {p['used']}"
                + (f" (FELL BACK from {p['requested']})" if p.get("fell_back", p["requested"] != p["used"]) else "")
                + f" — {p['reason']}"
                for f, p in ((m.get("runtime") or {}).get("precision") or {}).items()
            )
            or "not recorded",
        ),
    ]


def _anchor_cache_note(pi0: dict[str, Any]) -> str:
    """The anchor cache's part in pi0 (xlr.anchors; the manifest's models.pi0.anchor_cache)."""
    c = pi0.get("anchor_cache") or {}
    if c.get("status") == "reused":
        return f"; REUSED from the anchor cache: {c.get('key')} built {c.get('built_at')} by run {(c.get('built_by') or {}).get('run')} ({c.get('entry')})"
    if c.get("status") == "stored":
        return f"; built in this run and stored in the anchor cache as {c.get('key')}"
    return f"; anchor cache: {c['status']}" if c.get("status") else ""


def provenance_html(params: Params, run: Run) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in provenance_rows(params, run)
    )
    return (
        "<div style='border:1px solid #888;padding:0.5em;margin-bottom:1em'><b>xlr CPU/GPU-scale run — these are OUR numbers, "
        "not the paper's.</b><table>" + rows + "</table></div>"
    )


def stage_times(run: Run) -> pd.DataFrame:
    rows = [
        {
            "stage": k,
            "status": v.get("status"),
            "wall time [min]": round(v.get("wall_s", float("nan")) / 60, 2),
            "peak RSS [GiB]": round(v.get("peak_rss_mib", float("nan")) / 1024, 2),
            "attempts": v.get("attempts"),
        }
        for k, v in run.manifest.get("stages", {}).items()
    ]
    return pd.DataFrame(rows)


def data_tables(run: Run) -> dict[str, pd.DataFrame]:
    s = json.loads(run.layout.data_summary.read_text())
    c = s["counts"]
    t = {"training prompts per language": pd.DataFrame([c["train_prompts"]], index=["prompts"])}
    rows = [{"item": "X-AlpacaEval prompts per language", "count": c["xalpacaeval_prompts_per_language"]}]
    for split in ("train", "eval"):
        if f"english_{split}" in c:
            rows.append({"item": f"English preference pairs ({split})", "count": c[f"english_{split}"]})
            for why, n in c.get(f"english_{split}_skipped", {}).items():
                rows.append({"item": f"  skipped ({split}): {why}", "count": n})
    t["evaluation and anchor data"] = pd.DataFrame(rows)
    greedy = read_json(run.layout.greedy_check)
    if greedy:
        t["greedy answers (model check)"] = pd.DataFrame(greedy).rename_axis("language")
    unchecked = ((run.manifest.get("stages", {}).get("models") or {}).get("counts") or {}).get("languages_not_checked")
    if unchecked:
        t["model check: languages not checked (no check prompt in xlr.languages.CHECK_PROMPTS)"] = pd.DataFrame({"language": unchecked})
    return t


def anchor_table(run: Run) -> pd.DataFrame | None:
    a = read_json(run.layout.reward_accuracy)
    if a is None:
        return None
    rows = [
        {
            "score": "implicit reward log pi0/pi_ref",
            "pairs": "all held-out (ties excluded)",
            "accuracy": a["accuracy"],
            "95% CI": f"{a['ci95'][0]:.3f}–{a['ci95'][1]:.3f}",
            "n": a["n"],
        }
    ]
    for k, label in (
        ("loglik_accuracy_policy", "log-likelihood of pi0 alone"),
        ("loglik_accuracy_reference", "log-likelihood of pi_ref alone"),
    ):
        if k in a:
            rows.append({"score": label, "pairs": "all held-out (ties excluded)", "accuracy": a[k], "95% CI": "", "n": a["n"]})
    for bin_, b in a.get("by_score_margin", {}).items():  # low rating margins are near coin flips for any reward
        rows.append(
            {
                "score": "implicit reward log pi0/pi_ref",
                "pairs": f"rating margin in {bin_}",
                "accuracy": b["accuracy"],
                "95% CI": "",
                "n": b["n"],
            }
        )
    return pd.DataFrame(rows).assign(ties_excluded=a["ties_excluded"])


def rewards_table(run: Run, iteration: int) -> pd.DataFrame | None:
    from xlr.plots import rewards_frame

    df = rewards_frame(run.root, iteration)
    if df is None:
        return None
    return (
        df.groupby("lang")
        .agg(
            samples=("reward", "size"),
            reward_mean=("reward", "mean"),
            reward_std=("reward", "std"),
            len_chars_mean=("len_chars", "mean"),
            tokens_mean=("n_tokens", "mean"),
        )
        .round(3)
    )


def pairs_table(run: Run, iteration: int) -> pd.DataFrame | None:
    stats = read_json(run.layout.pairs_stats(iteration))
    if stats is None:
        return None
    rows = []
    for lang, s in stats.items():
        fid = s.get("fidelity") or {}
        rows.append(
            {
                "lang": lang,
                "prompts": s["prompts"],
                "pairs": s["pairs"],
                "alpha": s.get("alpha"),
                "gap before [chars]": s.get("length_gap_before"),
                "gap after [chars]": s.get("length_gap_after"),
                "dropped": sum(s.get("drops", {}).values()),
                "drop reasons": "; ".join(f"{k}: {v}" for k, v in s.get("drops", {}).items()),
                "chosen in target lang": (fid.get("chosen") or {}).get("in_target"),
            }
        )
    return pd.DataFrame(rows).set_index("lang")


def training_metrics_paths(params: Params, run: Run, only: int | None = None) -> dict[str, Path]:
    """The trl metrics of the study's DPO runs for plots.dpo_curves: all of them (the anchor, then each iteration), or
    ``only`` one (0 = the anchor, t = iteration t)."""
    paths = {0: ("anchor (pi0)", run.layout.training_metrics(0))} | {
        t: (f"iteration {t}", run.layout.training_metrics(t)) for t in range(1, params.iterations + 1)
    }
    return dict(v for t, v in paths.items() if only is None or t == only)


def _fmt_ci(v: float, ci: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(ci, list | tuple) and not any(isinstance(c, float) and math.isnan(c) for c in ci):
        return f"{v:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"
    return f"{v:.1f}"


def headline_table(run: Run, params: Params | None = None) -> pd.DataFrame | None:
    """WR and LC (with 95% CIs) per model and language, head-to-head vs pi0; the paper's numbers, where params carry
    them, in separate columns labelled as the paper's."""
    s = read_json(run.layout.eval_summary)
    if s is None:
        return None
    rows = []
    for r in s["rows"]:
        h = r.get("h2h_vs_pi0")
        rows.append(
            {
                "model": r["model"],
                "lang": r["lang"],
                "WR [%]": _fmt_ci(r.get("win_rate"), r.get("win_rate_ci95")),
                f"LC [%] ({r.get('lc_variant', '')})": _fmt_ci(r.get("length_controlled_winrate"), r.get("lc_ci95")),
                "vs pi0 [%]": _fmt_ci(h["win_rate"], h["ci95"]) if h else "–",
                "in language [%]": round(100 * r["fidelity"], 1),
                "mean chars": round(r["mean_output_chars"]),
                "judged": r["n_judged"],
            }
        )
    df = pd.DataFrame(rows)
    verdict = judge_verdict(run)
    if verdict is not None:  # every win rate beside its judge's measured agreement; a judge that is not informative is labelled so
        b = verdict["balanced"]
        df["judge (balanced agreement vs GPT-4-turbo)"] = (
            ("" if verdict["informative"] else "NOT INFORMATIVE: ")
            + _fmt_ci(100 * b.get("agreement", math.nan), [100 * c for c in b.get("ci95", [math.nan, math.nan])])
            + " %"
        )
    paper = (params.paper_reference if params else {}) or {}
    if paper.get("x_alpacaeval"):
        ref = paper["x_alpacaeval"]
        df["paper's WR [%] (their setting)"] = [ref.get(r["model"], {}).get(r["lang"], {}).get("wr", "") for r in rows]
        df["paper's LC [%] (their setting)"] = [ref.get(r["model"], {}).get(r["lang"], {}).get("lc", "") for r in rows]
    return df


def _p(test: dict[str, Any] | None) -> str:
    if not test or test.get("p_value") is None:
        return "–"
    return f"{test['diff']:+.1f} (p {test['p_value']:.2g})"


def fidelity_table(run: Run) -> pd.DataFrame | None:
    """LPR / WPR / LCPR (percent, 95% CIs) per prompt set, language and model, with each model's paired difference from
    pi0 on the same prompts (McNemar p-value)."""
    f = read_json(run.layout.fidelity)
    if not f:
        return None
    rows = []
    for r in f["rows"]:
        t = r.get("vs_pi0") or {}
        if r.get("unsupported"):  # the detector cannot detect this language: said, not shown as 0 or a dash
            rows.append(
                {
                    "set": r["set"],
                    "lang": r["lang"],
                    "model": r["model"],
                    "n": r["n"],
                    "LPR [%]": f"not scored: {r['unsupported']}",
                    "WPR [%]": "not scored",
                    "LCPR [%]": "not scored",
                    "LPR vs pi0 [pts]": "",
                    "WPR vs pi0 [pts]": "",
                }
            )
            continue
        rows.append(
            {
                "set": r["set"],
                "lang": r["lang"],
                "model": r["model"],
                "n": r["n"],
                "LPR [%]": _fmt_ci(r.get("lpr"), r.get("lpr_ci95")),
                "WPR [%]": _fmt_ci(r.get("wpr"), r.get("wpr_ci95")),
                "LCPR [%]": _fmt_ci(r.get("lcpr"), r.get("lcpr_ci95")),
                "LPR vs pi0 [pts]": _p(t.get("line_pass")),
                "WPR vs pi0 [pts]": _p(t.get("word_pass")),
            }
        )
    return pd.DataFrame(rows)


def judge_validation(run: Run) -> dict[str, Any] | None:
    """The judge measured against GPT-4-turbo's AlpacaEval 2 verdicts (xlr.judge_validation), as the judging stage wrote it."""
    return read_json(run.layout.judge_validation)


def judge_verdict(run: Run) -> dict[str, Any] | None:
    """For the study's own protocol: informative or not (with the reason), balanced and length-matched agreement with CIs."""
    v = judge_validation(run)
    if not v or not v.get("protocols"):
        return None
    name, entry = next(iter(v["protocols"].items()))
    return {
        "protocol": name,
        "informative": entry.get("informative"),
        "reason": entry.get("reason"),
        "balanced": entry.get("balanced") or {},
        "length_matched": entry.get("length_matched") or {},
        "length_baseline": v["baselines"]["length"]["balanced"],
        "sizes": v.get("sizes", {}),
    }


def judge_validation_table(run: Run) -> pd.DataFrame | None:
    """The study's judge (its protocol) beside the baselines on GPT-4-turbo's own AlpacaEval 2 verdicts: balanced sample,
    length-matched subset, position consistency, Spearman of per-model win rates with the leaderboard."""
    v = judge_validation(run)
    if not v:
        return None

    def ci(m: dict[str, Any] | None, key: str = "agreement", c: str = "ci95") -> str:
        if not m or m.get(key) is None or (isinstance(m.get(key), float) and math.isnan(m[key])):
            return "–"
        lo, hi = (m.get(c) or [math.nan, math.nan])[:2]
        return f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]" if lo == lo else f"{m[key]:.3f}"

    rows = []
    for name, e in v.get("protocols", {}).items():
        rank = e.get("ranking") or {}
        rows.append(
            {
                "who": f"judge {v['judge']} ({name})",
                "balanced agreement": ci(e.get("balanced")),
                "soft agreement": ci(e.get("balanced"), "soft_agreement", "soft_ci95"),
                "length-matched agreement": ci(e.get("length_matched")),
                "position consistency": ci(e.get("balanced"), "position_consistency", "consistency_ci95"),
                "Spearman vs leaderboard": ci(rank, "spearman_wr", "ci95_wr") if rank else "–",
                "informative": ("yes" if e.get("informative") else "NOT INFORMATIVE") + f": {e.get('reason', '')}",
            }
        )
    for name, e in v.get("baselines", {}).items():
        rank = e.get("ranking") or {}
        rows.append(
            {
                "who": f"baseline: {name.replace('_', ' ')}",
                "balanced agreement": ci(e.get("balanced")),
                "soft agreement": ci(e.get("balanced"), "soft_agreement", "soft_ci95"),
                "length-matched agreement": ci(e.get("length_matched")),
                "position consistency": "–",
                "Spearman vs leaderboard": ci(rank, "spearman_wr", "ci95_wr") if rank else "–",
                "informative": "",
            }
        )
    sz = v.get("sizes", {})
    return pd.DataFrame(rows).assign(
        items=f"balanced {sz.get('balanced')}, length-matched {sz.get('length_matched')}, "
        f"ranking {sz.get('ranking_items')} comparisons of {sz.get('ranking_models')} models"
    )


def judge_table(run: Run) -> pd.DataFrame | None:
    v = read_json(run.layout.judge_agreement)
    if v is None:
        return None
    return pd.DataFrame(
        [
            {
                "judge": v["judge"],
                "held-out English pairs": v["n_items"],
                "agreement with labels": round(v["agreement"], 3),
                "95% CI": f"{v['ci95'][0]:.3f}–{v['ci95'][1]:.3f}",
                "position consistency": round(v.get("position_consistency", float("nan")), 3),
                "unjudgeable orders": v.get("unjudgeable_orders", 0),
            }
        ]
    )


def judging_costs(run: Run) -> pd.DataFrame | None:
    entry = run.manifest.get("stages", {}).get("judging")
    if not entry or "counts" not in entry:
        return None
    return pd.DataFrame([entry["counts"]["totals"]])


# ----------------------------------------------------------------------------------------------------------------
# executing the sequence


def variant_runs(params: Params, run: Run) -> dict[str, Path]:
    """This run and every run beside it whose params differ only in ``reward.variant`` (and name/description):
    {variant: run directory}, the comparison of the paper's Fig. 3. Make one with
    ``xlr run params/X.yaml --set reward.variant=R_m --set name=X-rm``."""

    def comparable(p: dict[str, Any]) -> dict[str, Any] | None:
        try:
            d = type(params).model_validate(p).model_dump(mode="json")  # fill fields added to the schema since
        except Exception:  # noqa: BLE001 - params the schema no longer accepts: not comparable
            return None
        for k in ("name", "description"):
            d.pop(k, None)
        d["reward"].pop("variant", None)
        return d

    mine = comparable(params.model_dump(mode="json"))
    found = {params.reward.variant: run.root}
    for manifest in sorted(run.root.parent.glob("*/manifest.json")):
        if manifest.parent == run.root:
            continue
        other = (read_json(manifest) or {}).get("params") or {}
        variant = other.get("reward", {}).get("variant")
        if variant and variant not in found and comparable(other) == mine:
            found[variant] = manifest.parent
    return found


def to_html(notebook: Path, out: Path, with_code: bool = False) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=not with_code, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    atomic_write_text(out, body)
    return out


@dataclass
class Answer:
    """One of the first screen's four answers: the question, its headline number(s) with CI and n, one sentence on what
    it means at this run's scale, what made it (stage, data, precision), and a small table whose every row carries a
    sentence of its own ("what it means here")."""

    number: int
    question: str
    headline: str
    reading: str
    made_by: str
    table: pd.DataFrame | None = None


def _ci_word(lo: float, hi: float, chance: float = 0.5) -> str:
    if lo > chance:
        return "above chance"
    if hi < chance:
        return "below chance (prefers the wrong one)"
    return "not distinguishable from chance"


def _answer_pi0(params: Params, run: Run) -> Answer:
    q = "1. Is pi0 a usable English reward here?"
    a = read_json(run.layout.reward_accuracy)
    pi0 = (run.manifest.get("models") or {}).get("pi0") or {}
    cache = pi0.get("anchor_cache") or {}
    if a is None:
        if params.models.pi0 != "build":
            return Answer(
                1,
                q,
                "not measured here",
                f"pi0 was given ({params.models.pi0}), not built: its held-out accuracy is not measured here.",
                "–",
            )
        return Answer(1, q, "not yet measured", "The anchor stage has not run.", "anchor stage")
    lo, hi = a["ci95"]
    word = _ci_word(lo, hi)
    reading = (
        f"pi0's implicit reward (log pi0 − log pi_ref) prefers the chosen answer of held-out English pairs {a['accuracy']:.2f} of the time: "
        f"{word}. The method rests on this (the paper's premise: an English DPO model whose reward ranks answers); "
        + (
            "it holds here, so the rewards of the iterations carry English signal."
            if lo > 0.5
            else "it is not shown here, so the iterations below train on rewards that may be noise."
        )
    )
    how = cache.get("status", "")
    made = (
        f"anchor stage: LoRA DPO of {params.models.pi_ref} on {params.anchor.n_train} UltraFeedback pairs "
        f"(beta {params.anchor.beta}, seed {params.seed}); {a['n']} held-out pairs without ties, scored in {a.get('score_dtype', '?')}"
        + (
            f"; reused anchor {cache.get('key')} built {cache.get('built_at', '?')[:16]} by {(cache.get('built_by') or {}).get('run', '?')}"
            if how == "reused"
            else ""
        )
        + (
            f"; anchor cache: {how}" + (f" ({cache.get('key')})" if cache.get("key") and how != "reused" else "")
            if how and how != "reused"
            else ""
        )
    )
    return Answer(1, q, f"accuracy {a['accuracy']:.2f} [95% CI {lo:.2f}, {hi:.2f}], n {a['n']}", reading, made)


def _answer_probe(params: Params, run: Run) -> Answer:
    from xlr.probe import read_probe

    q = "2. Does pi0's reward transfer across languages?"
    doc = read_probe(run.root)
    if not doc or not doc.get("summary"):
        return Answer(2, q, "not measured", "The probe has not run (probe.enabled, or the probe stage).", "probe stage")
    rows = doc["summary"]
    variants = [v for v in ("R_c", "R_m", "R_t") if any(r["variant"] == v for r in rows)]
    by: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        by.setdefault((r["lang"], r["test"]), {})[r["variant"]] = r
    table = []
    for lang in dict.fromkeys(r["lang"] for r in rows):
        row: dict[str, Any] = {"lang": lang}
        meaning = []
        for test, what in (("language", f"rewards answering in {lang}"), ("quality", "ranks quality")):
            cell = by.get((lang, test))
            if not cell or "R_c" not in cell:
                continue
            row.setdefault("n", cell["R_c"]["n"])
            for v in variants:
                if v in cell:
                    row[f"{test}: {v}"] = f"{cell[v]['fraction']:.2f} [{cell[v]['ci95'][0]:.2f}, {cell[v]['ci95'][1]:.2f}]"
            lo, hi = cell["R_c"]["ci95"]
            meaning.append(f"{what}: " + ("yes" if lo > 0.5 else "the opposite" if hi < 0.5 else "not shown"))
        row["what it means here (R_c)"] = "; ".join(meaning)
        table.append(row)
    df = pd.DataFrame(table) if table else None
    lang_rows = [by[k]["R_c"] for k in by if k[1] == "language" and "R_c" in by[k]]
    qual_rows = [by[k]["R_c"] for k in by if k[1] == "quality" and k[0] != "en" and "R_c" in by[k]]
    above_l = sum(r["ci95"][0] > 0.5 for r in lang_rows)
    above_q = sum(r["ci95"][0] > 0.5 for r in qual_rows)
    headline = (
        f"R_c above chance: language {above_l}/{len(lang_rows)}, quality {above_q}/{len(qual_rows)} languages; n {rows[0]['n']} per cell"
    )
    reading = (
        "Each cell: the fraction of X-AlpacaEval instructions where the expected answer gets the higher reward [95% CI]; 0.5 is chance. "
        "The paper's claim is that the English reward still ranks answers in other languages (quality) and rewards answering in the "
        "language asked for (language); Fig. 3 orders R_c > R_m > R_t."
    )
    made = (
        f"probe stage: pi0/pi_ref log-ratio on GPT-4-turbo's and gpt-3.5-turbo's shipped X-AlpacaEval answers, "
        f"{params.probe.n_items} instructions/language, variants {', '.join(variants)}, scored in {doc.get('dtype', '?')}; no judge, nothing generated"
        + (" (R_t: pi0's translations)" if "R_t" in variants else "")
    )
    vr = variant_runs(params, run)
    if len(vr) > 1:
        made += f"; full runs per reward variant: {', '.join(f'{v}: {p.name}' for v, p in vr.items())} (figures below)"
    return Answer(2, q, headline, reading, made, df)


def _fidelity_set(rows: list[dict[str, Any]]) -> str | None:
    sets = list(dict.fromkeys(r["set"] for r in rows))
    for s in ("lcb-crosslingual", "x-alpacaeval"):
        if s in sets:
            return s
    return sets[0] if sets else None


def _models(params: Params) -> list[str]:
    return ["pi_ref", "pi0", *(f"pi{t}" for t in range(1, params.iterations + 1))]


def _mean_win_rates(
    summary: dict[str, Any], models: list[str], langs: set[str] | None = None
) -> dict[str, tuple[float, float | None, int]]:
    """model -> (mean WR, mean LC or None, items judged) over its eval/summary.json rows (of ``langs`` when given)."""
    out = {}
    for m in models:
        mr = [r for r in summary["rows"] if r["model"] == m and (langs is None or r["lang"] in langs) and r.get("win_rate") is not None]
        if mr:
            lc = [r["length_controlled_winrate"] for r in mr if r.get("length_controlled_winrate") is not None]
            out[m] = (sum(r["win_rate"] for r in mr) / len(mr), sum(lc) / len(lc) if lc else None, sum(r["n_judged"] for r in mr))
    return out


def _answer_policy(params: Params, run: Run) -> Answer:
    q = "3. Did the iterations change the policy?"
    f = read_json(run.layout.fidelity)
    last = f"pi{params.iterations}" if params.iterations else "pi0"
    if not f or not f.get("rows"):
        return Answer(3, q, "not measured", "Evaluation has not run.", "generation, metrics stages")
    chosen = _fidelity_set(f["rows"])
    rows = [r for r in f["rows"] if r["set"] == chosen and not (chosen == "x-alpacaeval" and r["lang"] == "en")]
    models = [m for m in _models(params) if any(r["model"] == m for r in rows)]
    table = []
    n_sig = n_rows = 0
    for lang in dict.fromkeys(r["lang"] for r in rows):
        cell = {r["model"]: r for r in rows if r["lang"] == lang}
        row: dict[str, Any] = {"lang": lang, "n": (cell.get("pi0") or next(iter(cell.values())))["n"]}
        for m in models:
            r = cell.get(m)
            if r is None:
                row[m] = "–"
            elif r.get("unsupported"):
                row[m] = "not scored"
            else:
                wpr = f" / {r['wpr']:.0f}" if r.get("wpr") is not None else ""
                row[m] = f"{r['lpr']:.0f}{wpr}" + (f" [{r['lpr_ci95'][0]:.0f}, {r['lpr_ci95'][1]:.0f}]" if r.get("lpr_ci95") else "")
        t = ((cell.get(last) or {}).get("vs_pi0") or {}).get("line_pass")
        if last != "pi0" and t and t.get("p_value") is not None:
            n_rows += 1
            sig = t["p_value"] < 0.05
            n_sig += sig
            row[f"{last} − pi0 LPR [pts] (p)"] = f"{t['diff']:+.0f} (p {t['p_value']:.2g})"
            row["what it means here"] = (
                (f"{last} answers in {lang} more often than pi0" if t["diff"] > 0 else f"{last} answers in {lang} less often than pi0")
                if sig
                else "no change shown on these prompts"
            )
        table.append(row)
    verdict = judge_verdict(run)
    s = read_json(run.layout.eval_summary)
    judge_line = ""
    if s is not None:
        avg = _mean_win_rates(s, models)
        label = (
            "informative"
            if verdict and verdict["informative"]
            else f"NOT INFORMATIVE ({verdict['reason']})"
            if verdict
            else "judge not validated"
        )
        judge_line = (
            f" Judge WR / LC vs GPT-4-turbo, mean over languages [%], {label}: "
            + "; ".join(f"{m} {w:.1f} / " + (f"{lc:.1f}" if lc is not None else "–") + f" (n {n})" for m, (w, lc, n) in avg.items())
            + "."
        )
    headline = (
        f"{last} vs pi0, language fidelity: changed (p < 0.05) in {n_sig} of {n_rows} languages"
        if n_rows
        else "no paired test (one model only)"
    )
    reading = (
        f"LPR / WPR [%] (line- / word-level pass rate, answers wholly in the requested language; 95% CI of LPR); the "
        f"paired McNemar test of {last} against pi0 on the same prompts.{judge_line}"
    )
    made = (
        f"generation + metrics stages: {chosen} prompts, {f.get('detector')} language ID; "
        f"{params.evaluation.lcb_n_prompts or 'all'} LCB / {params.evaluation.n_prompts or 805} X-AlpacaEval prompts per language, "
        f"T {params.evaluation.temperature}, ≤ {params.evaluation.lcb_max_new_tokens} / {params.evaluation.max_new_tokens} new tokens; "
        f"judge {params.judge.backend} {params.judge.model} ({params.judge.protocol})"
    )
    return Answer(3, q, headline, reading, made, pd.DataFrame(table) if table else None)


PAPER_ROWS = {  # our rows -> the paper's Table 2 rows (Llama-3-8B; its KTO variant of pi0 has no counterpart here)
    "pi_ref": "Llama-3-8B-SFT (pi_I)",
    "pi0": "Llama-3-8B-SFT-DPO (pi0)",
    "pi1": "ICR iteration 1 (pi1)",
    "pi2": "ICR iteration 2 (pi2)",
}


def paper_rows(models: list[str], data_dir: Any = None) -> pd.DataFrame | None:
    """The paper's Table 2 rows (Llama-3-8B, GPT-4-turbo judge, 805 prompts: THEIR setting) for the study's models:
    pi0 -> the paper's pi0, pi1/pi2 -> its ICR iterations. None where the table is not found."""
    from xlr import data

    try:
        t = data.load_paper_table2(data_dir)
    except (data.DataError, FileNotFoundError):
        return None
    rows = []
    for m in models:
        sub = t[t["model"] == PAPER_ROWS[m]] if m in PAPER_ROWS else t.iloc[:0]
        for r in sub.itertuples():
            rows.append({"our row": m, "paper's model": r.model, "lang": r.lang, "paper's LC [%]": r.lc, "paper's WR [%]": r.wr})
    return pd.DataFrame(rows) if rows else None


def _answer_paper(params: Params, run: Run) -> Answer:
    q = "4. The paper's numbers for the same rows (their setting, not ours)"
    models = _models(params)
    pr = paper_rows(models, params.data.data_dir)
    made = "the paper's Table 2 (x-alpacaeval/paper-table2.csv): Llama-3-8B SFT/DPO, GPT-4-turbo judge, 805 prompts × en/es/ru/de/fr"
    if pr is None:
        return Answer(
            4, q, "paper-table2.csv not found", "The paper's numbers are not available here (xlr data check lists the file).", made
        )
    avg = (
        pr[pr["lang"] == "avg"]
        .set_index("our row")
        .rename(columns={"paper's LC [%]": "lc", "paper's WR [%]": "wr", "paper's model": "model"})
    )
    s = read_json(run.layout.eval_summary)
    ours = _mean_win_rates(s, models, set(params.languages.train)) if s is not None else {}
    base = avg.loc["pi0"] if "pi0" in avg.index else None
    table = []
    for m in models:
        if m not in avg.index:
            continue
        p = avg.loc[m]
        row: dict[str, Any] = {"row": m, "paper's model": p["model"], "PAPER: LC / WR [%] (avg)": f"{p['lc']:.2f} / {p['wr']:.2f}"}
        w = ours.get(m)
        row["ours: LC / WR [%] (avg, our judge)"] = ("–" if w[1] is None else f"{w[1]:.1f}") + f" / {w[0]:.1f}" if w else "–"
        if base is not None and m not in ("pi0", "pi_ref"):
            row["what it means here"] = (
                f"the paper gains {p['lc'] - base['lc']:+.2f} LC over its pi0 with 8B models and 3000 prompts/language; "
                "our number comes from another model, judge and size and is not comparable to it"
            )
        elif m == "pi0":
            row["what it means here"] = "the paper's starting point: its English DPO model"
        else:
            row["what it means here"] = "the SFT model both rewards are measured against"
        table.append(row)
    headline = (
        f"paper, avg over 5 languages: pi0 {base['lc']:.2f} / {base['wr']:.2f} LC / WR"
        + "".join(f"; {m} {avg.loc[m]['lc']:.2f} / {avg.loc[m]['wr']:.2f}" for m in models[2:] if m in avg.index)
        if base is not None
        else "–"
    )
    reading = (
        "The paper's own numbers, in their own column; never pooled or compared as equals with ours (per language: the paper-table2.csv)."
    )
    return Answer(4, q, headline, reading, made, pd.DataFrame(table) if table else None)


def first_screen(params: Params, run: Run) -> list[Answer]:
    """The answers a reader needs first, in order, each with its CI, n and what made it: (1) is pi0 a usable English
    reward here, (2) does its reward transfer across languages (the probe), (3) did the iterations change the policy
    where it shows (language fidelity vs pi0; judge WR/LC labelled "not informative" unless the judge is), (4) the
    paper's numbers for the same rows, in their own column."""
    return [_answer_pi0(params, run), _answer_probe(params, run), _answer_policy(params, run), _answer_paper(params, run)]


FIRST_SCREEN_CSS = (
    "#first-screen{display:grid;grid-template-columns:1fr 1fr;gap:8px;font-size:12px}"
    ".answer{border:1px solid #999;border-radius:4px;padding:4px 8px;overflow:hidden}"
    ".answer h3{margin:2px 0;font-size:14px} .answer .headline{font-size:15px;font-weight:bold;margin:2px 0}"
    ".answer p{margin:2px 0} .answer .made{color:#555;font-size:11px} .answer table{font-size:11px;margin-top:3px}"
    ".setup{font-size:12px;margin:2px 0 6px 0;padding:3px 6px;background:#f3f3f3;border:1px solid #bbb}"
)


def setup_line(params: Params, run: Run) -> str:
    """One line on top: what made every number below (model, judge, data sizes, seeds), OUR run, not the paper's."""
    ev = params.evaluation
    pi0 = params.models.pi0 if params.models.pi0 != "build" else f"built by English DPO on {params.anchor.n_train} pairs"
    return (
        f"OUR run ({params.name}), not the paper's: pi_ref {params.models.pi_ref}; pi0 {pi0}; judge {params.judge.backend} "
        f"{params.judge.model}; train {params.data.n_train_prompts} prompts/language/iteration × {len(params.languages.train)} languages, "
        f"N {params.sampling.n_samples}, {params.iterations} iterations; eval {ev.n_prompts or 805} X-AlpacaEval + {ev.lcb_n_prompts or 'all'} LCB "
        f"prompts/language; probe {params.probe.n_items if params.probe.enabled else 0}/language; seed {params.seed}. Full provenance below."
    )


def first_screen_html(params: Params, run: Run) -> str:
    parts = [f"<style>{FIRST_SCREEN_CSS}</style><p class='setup'>{html.escape(setup_line(params, run))}</p>", "<div id='first-screen'>"]
    for a in first_screen(params, run):
        parts.append(
            f"<section class='answer' data-answer='{a.number}'><h3>{html.escape(a.question)}</h3>"
            f"<p class='headline'>{html.escape(a.headline)}</p><p>{html.escape(a.reading)}</p>"
            f"<p class='made'>Made by: {html.escape(a.made_by)}</p>"
        )
        if a.table is not None and not a.table.empty:
            parts.append(a.table.to_html(index=False, na_rep="–", escape=True))
        parts.append("</section>")
    return "\n".join(parts) + "</div>"


def index_html(params: Params, run: Run, timings: dict[str, float], pages: list[str]) -> str:
    from xlr import plots

    parts = [
        f"<html><head><meta charset='utf-8'><title>xlr: {html.escape(params.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1380px;margin:auto} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:1px 5px}</style>",
        f"</head><body><h1 style='font-size:20px;margin:4px 0'>xlr report: {html.escape(params.name)}</h1>",
        first_screen_html(params, run),  # the four answers first (a 1400x900 screen holds them: tests/test_browser.py)
        "<h2>Provenance</h2>",
        provenance_html(params, run),
    ]

    def table(title: str, df: pd.DataFrame | None) -> None:
        if df is not None and not df.empty:
            parts.append(f"<h2>{html.escape(title)}</h2>" + df.to_html(index=False, na_rep="–", escape=True))

    table(
        "X-AlpacaEval: win rate (WR) and length-controlled win rate (LC) vs the reference, 95% bootstrap CIs", headline_table(run, params)
    )
    table("Language fidelity (Language Confusion Benchmark metrics), 95% CIs, paired vs pi0", fidelity_table(run))
    table(
        "How far the judge can be trusted: against GPT-4-turbo's own AlpacaEval 2 verdicts (balanced, length-matched), beside baselines",
        judge_validation_table(run),
    )
    table("... and agreement with held-out English preference labels (second check)", judge_table(run))
    table("pi0 as a reward: held-out English reward accuracy", anchor_table(run))
    table("Judging: calls, cache hits, tokens, estimated cost", judging_costs(run))
    st = stage_times(run)
    table("Wall time and peak memory per stage", st)
    table("Wall time per notebook [s]", pd.DataFrame([timings]) if timings else None)
    figs = [
        ("X-AlpacaEval win rates", plots.winrates(run.root)),
        ("Head-to-head vs pi0", plots.head_to_head(run.root)),
        ("Language fidelity of outputs", plots.output_fidelity(run.root)),
        ("Line-level pass rate (LCB metric)", plots.lcb_fidelity(run.root)),
        ("Cross-lingual reward probe", plots.probe(run.root)),
    ]
    figs.append(("DPO training curves", plots.dpo_curves(training_metrics_paths(params, run))))
    figs.append(("Reward variants side by side (cf. paper Fig. 3)", plots.reward_variants(variant_runs(params, run))))
    for t in range(1, params.iterations + 1):
        figs += [
            (f"Rewards, iteration {t}", plots.reward_distributions(run.root, t)),
            (f"Alpha search, iteration {t}", plots.alpha_curves(run.root, t)),
            (f"Pair lengths, iteration {t}", plots.pair_lengths(run.root, t)),
        ]
    figs.append(("Language fidelity of training samples", plots.fidelity(run.root, params.iterations)))
    parts.append("<h2>Figures</h2>")
    for title, fig in figs:
        if fig is not None:
            parts.append(
                f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{plots.figure_to_png_b64(fig)}'>"
            )
    parts.append("<h2>Notebooks</h2><ul>" + "".join(f"<li><a href='{p}.html'>{p}</a></li>" for p in pages) + "</ul></body></html>")
    return "\n".join(parts)


def probe_table(run_root: Path, kind: str = "fractions") -> pd.DataFrame | None:
    """The cross-lingual reward probe (xlr.probe) as a table; None before the probe ran. ``run_root``: a run directory
    (reads ``probe/probe.json``), a probe directory or probe.json itself.

    kind='fractions' (default): one row per test and language, one column per score (R_c, R_m, R_t, length) holding
    "fraction [95% CI]" (fraction of items where the expected answer scores higher; 0.5 = chance), and n.
    kind='transfer': the quality test's transfer from English per language and score: acc_L / acc_en and
    (acc_L − 0.5) / (acc_en − 0.5), with 95% CIs. kind='paired': each pair of scores on the same items: the difference
    of fractions, its paired bootstrap CI, the sign-flip p-value, and the items each one wins."""
    from xlr.probe import read_probe

    doc = read_probe(Path(run_root))
    if not doc or not doc.get("summary"):
        return None

    def fmt(v: Any, ci: Any, digits: int = 2) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        if isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(c, int | float) and not math.isnan(c) for c in ci):
            return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
        return f"{v:.{digits}f}"

    rows = doc["summary"]
    if kind == "fractions":
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            row = out.setdefault((r["test"], r["lang"]), {"test": r["test"], "lang": r["lang"], "n": r["n"]})
            row[r["variant"]] = fmt(r["fraction"], r["ci95"])
        return pd.DataFrame(list(out.values()))
    if kind == "transfer":
        t = [
            {
                "lang": r["lang"],
                "score": r["variant"],
                "n (both languages)": r.get("transfer_n"),
                "acc_L": round(r["fraction"], 3),
                "acc_en (same items)": round(r["acc_en_common"], 3) if r.get("acc_en_common") is not None else None,
                "acc_L / acc_en [95% CI]": fmt(r.get("transfer_ratio"), r.get("transfer_ratio_ci95")),
                "(acc_L − 0.5) / (acc_en − 0.5) [95% CI]": fmt(r.get("transfer_excess"), r.get("transfer_excess_ci95")),
            }
            for r in rows
            if r["test"] == "quality" and r["lang"] != "en" and "transfer_n" in r
        ]
        return pd.DataFrame(t) if t else None
    if kind == "paired":
        p = [
            {
                "test": r["test"],
                "lang": r["lang"],
                "a − b": f"{r['variant_a']} − {r['variant_b']}",
                "n": r["n"],
                "diff [95% CI]": fmt(r["diff"], r["ci95"], 3),
                "p (sign-flip)": round(r["p_value"], 4) if r["p_value"] == r["p_value"] else None,
                "a better": r["a_better"],
                "b better": r["b_better"],
                "equal": r["equal"],
            }
            for r in doc.get("paired", [])
        ]
        return pd.DataFrame(p) if p else None
    raise ValueError(f"probe_table kind {kind!r}: use fractions, transfer or paired")
