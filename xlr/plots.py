"""Figures of the study, read from a run directory's artifacts. Every figure has a title, axis labels and units.

Each function takes the run directory (and an iteration where it applies) and returns a matplotlib Figure, or None
when the artifacts it needs do not exist yet (a notebook shows that plainly).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from xlr.files import read_json, read_jsonl
from xlr.runs import Layout


def _closed(fn: Any) -> Any:
    """Close the figure before returning it: a notebook then shows it once (as the cell's value), and batch runs do
    not accumulate open figures."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fig = fn(*args, **kwargs)
        if fig is not None:
            plt.close(fig)
        return fig

    return wrapper


def _grouped_bars(ax: Any, groups: list[str], series: dict[str, list[tuple[float, Any]]]) -> None:
    """One bar per (group, series) with 95% CI error bars; ``series[name]`` = [(value, [lo, hi] or None) per group].
    A bootstrap percentile CI need not contain the point estimate (e.g. LC refits): the bars are clipped at 0."""
    width = 0.8 / len(series)
    for k, (name, vals) in enumerate(series.items()):
        y = np.array([v for v, _ in vals], dtype=float)
        ci = np.array([c if isinstance(c, list | tuple) else [math.nan, math.nan] for _, c in vals], dtype=float).reshape(len(vals), 2)
        err = np.nan_to_num(np.clip(np.vstack([y - ci[:, 0], ci[:, 1] - y]), 0, None))
        ax.bar(np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width, y, width, yerr=err, capsize=2, label=name)
    ax.set_xticks(np.arange(len(groups)), groups)


WR_LC = (("win_rate", "win_rate_ci95", "win rate"), ("length_controlled_winrate", "lc_ci95", "length-controlled win rate"))


def _wr_lc_panels(langs: list[str], frames: dict[str, pd.DataFrame]) -> tuple[plt.Figure, Any]:
    """Two panels, WR and LC, of grouped bars per language: one series per frame (rows indexed by language, with the
    value and CI columns of eval/summary.json). Returns the figure and the axes zipped with ``WR_LC``."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2), sharey=True)
    for ax, (col, ci, _) in zip(axes, WR_LC, strict=True):
        series = {}
        for name, f in frames.items():
            sub = f.reindex(langs)
            cis = sub[ci] if ci in sub else [None] * len(langs)
            series[name] = list(zip(sub[col].to_numpy(float), cis, strict=True))
        _grouped_bars(ax, langs, series)
    return fig, list(zip(axes, WR_LC, strict=True))


def _style() -> None:
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")


def rewards_frame(run_root: Path, iteration: int) -> pd.DataFrame | None:
    path = Layout(run_root).rewards(iteration)
    return pd.DataFrame(read_jsonl(path)) if path.is_file() else None


@_closed
def reward_distributions(run_root: Path, iteration: int) -> plt.Figure | None:
    """Implicit reward r = log pi0(y|G(x)) - log pi_ref(y|G(x)) of every sample, per language."""
    import seaborn as sns

    df = rewards_frame(run_root, iteration)
    if df is None or df.empty:
        return None
    _style()
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.histplot(df, x="reward", hue="lang", element="step", stat="density", common_norm=False, ax=ax, bins=30)
    ax.set(
        title=f"Implicit cross-lingual reward per sample, iteration {iteration} ({df['variant'].iloc[0]})",
        xlabel="reward r = Σ log π0(y|G(x)) − Σ log π_ref(y|G(x))  [nats]",
        ylabel="density [1/nat]",
    )
    fig.tight_layout()
    return fig


@_closed
def alpha_curves(run_root: Path, iteration: int, grid_max: float = 0.05, upper_bound: float | None = None) -> plt.Figure | None:
    """Mean length gap (chosen − rejected, characters) as a function of alpha, per language, with the alpha chosen."""
    from xlr.pairs import length_gap

    df = rewards_frame(run_root, iteration)
    stats = read_json(Layout(run_root).pairs_stats(iteration))
    if df is None or stats is None:
        return None
    _style()
    alphas = np.round(np.arange(0, grid_max + 1e-12, 0.001), 3)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    before, after = {}, {}
    for lang, g in df.groupby("lang"):
        groups = [grp.sort_values("sample_idx") for _, grp in g.groupby("id") if len(grp) >= 2]
        if not groups:
            continue
        R = [list(grp["reward"]) for grp in groups]
        L = [list(grp["len_chars"]) for grp in groups]
        gaps = [length_gap(R, L, float(a), upper_bound) for a in alphas]
        (line,) = axes[0].plot(alphas, gaps, label=lang)
        a = (stats.get(lang) or {}).get("alpha")
        if a is not None:
            axes[0].scatter([a], [length_gap(R, L, a, upper_bound)], color=line.get_color(), zorder=3)
            before[lang], after[lang] = stats[lang]["length_gap_before"], stats[lang]["length_gap_after"]
    axes[0].axhline(0, color="black", lw=0.8)
    axes[0].set(
        title=f"Length control: alpha search, iteration {iteration} (dot: alpha chosen)",
        xlabel="alpha [reward units per character]",
        ylabel="mean len(chosen) − len(rejected) [characters]",
    )
    axes[0].legend(title="language")
    langs = list(before)
    x = np.arange(len(langs))
    axes[1].bar(x - 0.2, [before[k] for k in langs], 0.4, label="alpha = 0")
    axes[1].bar(x + 0.2, [after[k] for k in langs], 0.4, label="alpha chosen")
    axes[1].set_xticks(x, langs)
    axes[1].axhline(0, color="black", lw=0.8)
    axes[1].set(title="Length gap before/after control", xlabel="language", ylabel="mean gap [characters]")
    axes[1].legend()
    fig.tight_layout()
    return fig


@_closed
def pair_lengths(run_root: Path, iteration: int) -> plt.Figure | None:
    """Length of chosen vs rejected responses per language."""
    import seaborn as sns

    path = Layout(run_root).pairs(iteration)
    if not path.is_file():
        return None
    rows = read_jsonl(path)
    if not rows:
        return None
    _style()
    df = pd.DataFrame([{"lang": r["lang"], "response": kind, "length": len(r[kind])} for r in rows for kind in ("chosen", "rejected")])
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.boxplot(df, x="lang", y="length", hue="response", ax=ax)
    ax.set(title=f"Chosen vs rejected response length, iteration {iteration}", xlabel="language", ylabel="response length [characters]")
    fig.tight_layout()
    return fig


@_closed
def fidelity(run_root: Path, iterations: int) -> plt.Figure | None:
    """Fraction of samples / chosen / rejected detected in the target language, per language and iteration (lingua)."""
    import seaborn as sns

    rows = []
    for t in range(1, iterations + 1):
        stats = read_json(Layout(run_root).pairs_stats(t))
        for lang, s in (stats or {}).items():
            for kind, f in (s.get("fidelity") or {}).items():
                if f and f.get("in_target") is not None:  # None: the detector cannot detect this language (not scored; the tables say why)
                    rows.append({"iteration": t, "lang": lang, "set": kind, "in target language": 100 * f["in_target"]})
    if not rows:
        return None
    _style()
    df = pd.DataFrame(rows)
    g = sns.catplot(df, x="lang", y="in target language", hue="set", col="iteration", kind="bar", height=3.5, aspect=1.2)
    g.set_axis_labels("language", "in the target language [%]")
    g.figure.suptitle("Language fidelity of sampled, chosen and rejected responses", y=1.04)
    return g.figure


@_closed
def dpo_curves(metrics_paths: dict[str, Path]) -> plt.Figure | None:
    """DPO loss, reward margin and reward accuracy per optimizer step (trl's logged metrics), one line per training run."""
    _style()
    data = {name: read_json(p) for name, p in metrics_paths.items()}
    data = {k: v for k, v in data.items() if v}
    if not data:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    specs = [
        ("loss", "loss [nats] (DPO; + NLL in iterations)"),
        ("rewards/margins", "reward margin β·Δlog-ratio [nats]"),
        ("rewards/accuracies", "reward accuracy [fraction]"),
    ]
    for ax, (key, label) in zip(axes, specs, strict=True):
        for name, hist in data.items():
            pts = [(h["step"], h[key]) for h in hist if key in h and "step" in h]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=name)
        ax.set(title=key, xlabel="optimizer step", ylabel=label)
    axes[0].legend()
    fig.suptitle("DPO training curves (trl DPOTrainer logs)", y=1.02)
    fig.tight_layout()
    return fig


def summary_frame(run_root: Path) -> pd.DataFrame | None:
    s = read_json(Layout(run_root).eval_summary)
    if not s:
        return None
    return pd.DataFrame(s["rows"])


@_closed
def winrates(run_root: Path) -> plt.Figure | None:
    """WR and LC against the reference outputs, per language and model, with 95% bootstrap CIs."""
    df = summary_frame(run_root)
    if df is None or "win_rate" not in df:
        return None
    _style()
    s = read_json(Layout(run_root).eval_summary)
    langs = list(dict.fromkeys(df["lang"]))
    fig, panels = _wr_lc_panels(langs, {m: df[df["model"] == m].set_index("lang") for m in dict.fromkeys(df["model"])})
    for ax, (col, _, label) in panels:
        variant = df["lc_variant"].iloc[0] if col != "win_rate" and "lc_variant" in df else ""
        ax.set(
            title=f"{label} vs {s['reference_generator']}" + (f"\n({variant})" if variant else ""), xlabel="language", ylabel=f"{label} [%]"
        )
    panels[0][0].legend(title="model")
    fig.suptitle(f"X-AlpacaEval, {s['n_prompts']} prompts per language, judge {s['judge']['model']} ({s['judge']['backend']})", y=1.03)
    fig.tight_layout()
    return fig


@_closed
def reward_variants(roots: dict[str, Path]) -> plt.Figure | None:
    """Paper Fig. 3 at this run's scale: the final policy's WR and LC per language under each reward variant
    (R_c / R_m / R_t), one run per variant with otherwise equal params (``report.variant_runs``), 95% CIs."""
    frames = {}
    for variant, root in roots.items():
        df = summary_frame(root)
        if df is not None and "win_rate" in df:
            final = list(dict.fromkeys(df["model"]))[-1]  # pi_ref, pi0, pi1 .. piT: the last is the final policy
            frames[variant] = (final, df[df["model"] == final].set_index("lang"))
    if len(frames) < 2:
        return None
    _style()
    langs = list(dict.fromkeys(lang for _, f in frames.values() for lang in f.index))
    fig, panels = _wr_lc_panels(langs, {f"{variant} ({final})": f for variant, (final, f) in frames.items()})
    for ax, (_, _, label) in panels:
        ax.set(title=f"{label} of the final policy", xlabel="language", ylabel=f"{label} [%]")
    panels[0][0].legend(title="reward variant (model)")
    fig.suptitle("Reward variants side by side (cf. paper Fig. 3): same params except reward.variant", y=1.03)
    fig.tight_layout()
    return fig


@_closed
def head_to_head(run_root: Path) -> plt.Figure | None:
    """Each model against pi0 (same judge, both orders), per language, with 95% CIs; 50% = no difference."""
    df = summary_frame(run_root)
    if df is None or "h2h_vs_pi0" not in df:
        return None
    rows = [(r["model"], r["lang"], r["h2h_vs_pi0"]) for _, r in df.iterrows() if isinstance(r.get("h2h_vs_pi0"), dict)]
    if not rows:
        return None
    _style()
    models = list(dict.fromkeys(m for m, _, _ in rows))
    langs = list(dict.fromkeys(lang for _, lang, _ in rows))
    fig, ax = plt.subplots(figsize=(10, 4))
    series = {}
    for m in models:
        vals = {lang: h for mm, lang, h in rows if mm == m}
        series[m] = [(vals[lang]["win_rate"], vals[lang]["ci95"]) if lang in vals else (math.nan, None) for lang in langs]
    _grouped_bars(ax, langs, series)
    ax.axhline(50, color="black", lw=0.8)
    ax.set(title="Head-to-head against π0 (both orders; 50% = tie)", xlabel="language", ylabel="win rate vs π0 [%]")
    ax.legend(title="model")
    fig.tight_layout()
    return fig


@_closed
def output_fidelity(run_root: Path) -> plt.Figure | None:
    """Fraction of X-AlpacaEval outputs in the prompt's language, per language and model."""
    import seaborn as sns

    df = summary_frame(run_root)
    if df is None or "fidelity" not in df:
        return None
    _style()
    d = df.assign(pct=100 * df["fidelity"])
    fig, ax = plt.subplots(figsize=(10, 4))
    sns.barplot(d, x="lang", y="pct", hue="model", ax=ax)
    ax.set(title="Language fidelity of X-AlpacaEval outputs (lingua)", xlabel="language", ylabel="outputs in the prompt's language [%]")
    fig.tight_layout()
    return fig


@_closed
def lcb_fidelity(run_root: Path) -> plt.Figure | None:
    """Line-level pass rate (LPR, the Language Confusion Benchmark's metric) per language and model, one panel per prompt
    set (X-AlpacaEval answers, LCB monolingual, LCB cross-lingual), with 95% bootstrap CIs."""
    f = read_json(Layout(run_root).fidelity)
    if not f or not f.get("rows"):
        return None
    _style()
    rows = f["rows"]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2), sharey=True, squeeze=False)
    for ax, set_ in zip(axes[0], sets, strict=True):
        langs = list(dict.fromkeys(r["lang"] for r in rows if r["set"] == set_))
        by = {(r["model"], r["lang"]): r for r in rows if r["set"] == set_}
        series = {
            m: [
                (
                    (by.get((m, lang)) or {}).get("lpr") if (by.get((m, lang)) or {}).get("lpr") is not None else math.nan,
                    (by.get((m, lang)) or {}).get("lpr_ci95"),
                )
                for lang in langs
            ]
            for m in models
        }
        _grouped_bars(ax, langs, series)
        ax.set(title=f"{set_}: line-level pass rate", xlabel="requested language", ylim=(0, 105))
    axes[0][0].set_ylabel("answers in the language [%]")
    axes[0][-1].legend(title="model", fontsize="small")
    fig.suptitle(f"Language fidelity (Language Confusion Benchmark LPR, detector {f.get('detector', '')}), 95% bootstrap CIs")
    fig.tight_layout()
    return fig


def figure_to_png_b64(fig: plt.Figure) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


PROBE_TITLES = {
    "language": "Language: answer in L vs the same answer in English\n(fraction where the L answer scores higher)",
    "quality": "Quality: GPT-4-turbo vs the weaker model, in L\n(fraction where GPT-4-turbo's answer scores higher)",
    "english_labels": "English labels: agreement with GPT-4-turbo's\nAlpacaEval 2 verdicts (clear, balanced)",
}


@_closed
def probe(run_root: Path) -> plt.Figure | None:
    """The cross-lingual reward probe (xlr.probe): per test, the fraction of items where the expected answer gets the
    higher score, per language, the variants (R_c, R_m, R_t, length) side by side, 95% bootstrap CIs; 0.5 = chance.
    ``run_root``: a run directory (reads ``probe/probe.json``), a probe directory or probe.json itself."""
    from xlr.probe import TESTS, read_probe

    doc = read_probe(Path(run_root))
    if not doc or not doc.get("summary"):
        return None
    _style()
    df = pd.DataFrame(doc["summary"])
    tests = [t for t in TESTS if t in set(df["test"])]
    widths = [max(2, df[df["test"] == t]["lang"].nunique()) for t in tests]
    fig, axes = plt.subplots(
        1, len(tests), figsize=(2 + 2.0 * sum(widths), 4.6), sharey=True, gridspec_kw={"width_ratios": widths}, squeeze=False
    )
    for ax, test in zip(axes[0], tests, strict=True):
        sub = df[df["test"] == test]
        langs = list(dict.fromkeys(sub["lang"]))
        variants = list(dict.fromkeys(sub["variant"]))
        series = {}
        for v in variants:
            rows = sub[sub["variant"] == v].set_index("lang")
            series[v] = [
                (float(rows.loc[lang, "fraction"]), list(rows.loc[lang, "ci95"])) if lang in rows.index else (math.nan, None)
                for lang in langs
            ]
        _grouped_bars(ax, [f"{lang}\n(n={int(sub[sub['lang'] == lang]['n'].max())})" for lang in langs], series)
        ax.axhline(0.5, color="black", lw=0.9, ls="--", label="chance (0.5)")
        ax.set_title(PROBE_TITLES.get(test, test), fontsize=10)
        ax.set(xlabel="language (items)", ylabel="", ylim=(0, 1.05))
    axes[0][0].set_ylabel("items won by the expected answer [fraction]")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="score", fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    m = doc.get("models", {})
    fig.suptitle(
        f"Cross-lingual reward probe: r = Σ log π0(y|prompt) − Σ log π_ref(y|prompt), π0 = {m.get('pi0', {}).get('spec', '?')}, "
        f"π_ref = {m.get('pi_ref', {}).get('spec', '?')} ({doc.get('dtype', '')}); 95% bootstrap CIs over instructions",
        y=1.02,
        fontsize=10,
    )
    fig.tight_layout()
    return fig
