"""Language Confusion Benchmark metrics (xlr.fidelity) on the shipped completions of four models, against the figures
the benchmark's own script (for-ai/language-confusion compute_metrics.py, fastText lid.176.bin) gives on the same
files; and how far lingua, the other detector, differs from fastText on them.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fidelity.py [--no-lingua] [--reference-tokenizers DIR]

Goal: every "all" LPR and WPR within 1.5 points of the published figure. ``--reference-tokenizers DIR`` (a folder
holding the benchmark's own tokenizers, e.g. ``pip install --target DIR jieba==0.42.1 fugashi==1.5.2
unidic-lite==1.0.8``; none of them is an xlr dependency) also compares xlr's Chinese (rjieba) and Japanese (Janome)
tokenisation with jieba and MeCab + UniDic-lite: tokens per line, and ja LPR/WPR with each.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from xlr import fidelity as F
from xlr.data import _root, load_lcb_outputs
from xlr.langid import fasttext_scores, line_languages

MODELS = ("command-r", "llama-3-instruct", "gpt-3.5-turbo", "llama-2-instruct")
# (task, metric) -> published figure: the benchmark's compute_metrics.py on these files (as the issue gives them)
PUBLISHED = {
    "command-r": {
        ("monolingual", "lpr"): 98.56,
        ("monolingual", "wpr"): 96.25,
        ("crosslingual", "lpr"): 68.08,
        ("crosslingual", "wpr"): 93.95,
    },
    "llama-3-instruct": {
        ("monolingual", "lpr"): 46.01,
        ("monolingual", "wpr"): 93.01,
        ("crosslingual", "lpr"): 30.25,
        ("crosslingual", "wpr"): 94.40,
    },
    "gpt-3.5-turbo": {
        ("monolingual", "lpr"): 99.07,
        ("monolingual", "wpr"): 99.83,
        ("crosslingual", "lpr"): 89.83,
        ("crosslingual", "wpr"): 98.75,
    },
    "llama-2-instruct": {
        ("monolingual", "lpr"): 48.27,
        ("monolingual", "wpr"): 97.94,
        ("crosslingual", "lpr"): 38.38,
        ("crosslingual", "wpr"): 84.20,
    },
}
GOAL = 1.5


def path_of(model: str) -> str:
    return str(_root(None) / "language-confusion" / "outputs" / f"{model}.csv.gz")


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-lingua", action="store_true", help="skip the lingua comparison (~30 s per model)")
    ap.add_argument("--reference-tokenizers", metavar="DIR", help="folder with jieba, fugashi and unidic-lite to compare tokenisers with")
    ap.add_argument(
        "--xalpacaeval",
        type=int,
        default=0,
        metavar="N",
        help="also: LPR/WPR of the first N GPT-4-turbo X-AlpacaEval references per language, with each detector (long answers)",
    )
    args = ap.parse_args()
    if args.xalpacaeval:
        xalpacaeval_references(args.xalpacaeval)
        return 0

    rows, agreement, worst = [], [], 0.0
    prior = fasttext_scores([""])[0]  # lid.176.ftz on a line it has no features for (its pruned n-gram buckets)
    no_features = {}
    for model in MODELS:
        df = load_lcb_outputs(path_of(model))
        t0 = time.perf_counter()
        ft_rates = F.group_rates(df, "fasttext")
        t_ft = time.perf_counter() - t0
        ours = F.aggregate(ft_rates)
        pub = PUBLISHED[model]
        for task in ("monolingual", "crosslingual"):
            p_lcpr = F.harmonic_mean(pub[(task, "lpr")], pub[(task, "wpr")])
            for metric, p in (("lpr", pub[(task, "lpr")]), ("wpr", pub[(task, "wpr")]), ("lcpr", p_lcpr)):
                o = ours[task]["all"][metric]
                d = o - p
                if metric != "lcpr":
                    worst = max(worst, abs(d))
                rows.append((model, task, metric, o, p, d))
        lines = [
            (lang, line)
            for (_t, _s, lang), g in df.groupby(["task", "source", "language"])
            for text in g["completion"]
            for line, _ in F.scored_lines(text, lang)
        ]
        no_features[model] = (sum(s == prior for s in fasttext_scores([line for _, line in lines])), len(lines))
        if not args.no_lingua:
            t0 = time.perf_counter()
            li_rates = F.group_rates(df, "lingua")
            t_li = time.perf_counter() - t0
            li = F.aggregate(li_rates)
            ft_lab = line_languages([line for _, line in lines], "fasttext")
            li_lab = line_languages([line for _, line in lines], "lingua")
            same_label = sum(a == b for a, b in zip(ft_lab, li_lab, strict=True))
            texts = [
                (a["line_pass"], b["line_pass"])
                for k in ft_rates
                for a, b in zip(ft_rates[k]["passes"], li_rates[k]["passes"], strict=True)
            ]
            scored = [(a, b) for a, b in texts if a is not None]
            same_pass = sum(a == b for a, b in scored)
            ft_only = sum(a and not b for a, b in scored)
            li_only = sum(b and not a for a, b in scored)
            confusions = Counter((a, b) for a, b in zip(ft_lab, li_lab, strict=True) if a != b).most_common(3)
            agreement.append(
                (
                    model,
                    len(lines),
                    100 * same_label / len(lines),
                    len(scored),
                    100 * same_pass / len(scored),
                    ft_only,
                    li_only,
                    {t: (ours[t]["all"]["lpr"], li[t]["all"]["lpr"], ours[t]["all"]["wpr"], li[t]["all"]["wpr"]) for t in ours},
                    confusions,
                    t_ft,
                    t_li,
                )
            )
        print(f"{model}: fasttext {t_ft:.1f} s", file=sys.stderr)

    print("### Ours (fastText lid.176.ftz) vs published (the benchmark's script, lid.176.bin); 'all', percent\n")
    print("| model | task | metric | ours | published | ours - published |")
    print("|---|---|---|---|---|---|")
    for model, task, metric, o, p, d in rows:
        print(f"| {model} | {task} | {metric.upper()}{'*' if metric == 'lcpr' else ''} | {o:.2f} | {p:.2f} | {d:+.2f} |")
    print("\n\\* published LCPR = the harmonic mean of the published LPR and WPR (the paper's definition); not part of the goal.")
    print(
        f"\nLargest |ours - published| over the 16 LPR/WPR figures: {worst:.2f} points; goal <= {GOAL}: {'met' if worst <= GOAL else 'NOT met'}."
    )
    print("\nScored lines on which lid.176.ftz has no features (its prediction is the empty line's, en 0.12, so 'unknown'):")
    for model, (k, n) in no_features.items():
        print(f"- {model}: {k} of {n} lines")
    if agreement:
        print("\n### fastText vs lingua on the same completions\n")
        print(
            "| model | scored lines | same line label [%] | scored texts | same line verdict [%] | pass only with fastText | pass only with lingua "
            "| mono LPR ft / lingua | cross LPR ft / lingua | mono WPR ft / lingua | cross WPR ft / lingua | top label disagreements (ft, lingua) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for model, nl, sl, nt, sp, fo, lo, by_task, conf, _t_ft, _t_li in agreement:
            m, c = by_task["monolingual"], by_task["crosslingual"]
            print(
                f"| {model} | {nl} | {sl:.2f} | {nt} | {sp:.2f} | {fo} | {lo} | {m[0]:.2f} / {m[1]:.2f} | {c[0]:.2f} / {c[1]:.2f} "
                f"| {m[2]:.2f} / {m[3]:.2f} | {c[2]:.2f} / {c[3]:.2f} | {', '.join(f'{a}/{b} x{k}' for (a, b), k in conf)} |"
            )
        print("\nTime per file (6.5k completions): " + ", ".join(f"{a[0]} fastText {a[9]:.1f} s, lingua {a[10]:.1f} s" for a in agreement))
    if args.reference_tokenizers:
        compare_tokenizers(args.reference_tokenizers)
    return 0 if worst <= GOAL else 1


def xalpacaeval_references(n: int) -> None:
    """The metrics on long answers (X-AlpacaEval's GPT-4-turbo references, what the study's outputs look like)."""
    from xlr.data import load_xalpacaeval

    print(f"### X-AlpacaEval GPT-4-turbo references (first {n} per language): LPR / WPR, percent\n")
    print("| lang | scored | fastText LPR | lingua LPR | fastText WPR | lingua WPR |")
    print("|---|---|---|---|---|---|")
    root = _root(None) / "x-alpacaeval" / "references" / "gpt-4-turbo-2024-04-09"
    for lang in sorted(p.stem for p in root.glob("*.json")):
        texts = list(load_xalpacaeval(lang, list(range(1, n + 1)))["reference_output"])
        s = {d: F.fidelity_summary(F.output_passes(texts, lang, d), n_boot=0) for d in ("fasttext", "lingua")}
        print(
            f"| {lang} | {s['fasttext']['n_scored']} | {fmt(s['fasttext']['lpr'])} | {fmt(s['lingua']['lpr'])} | {fmt(s['fasttext']['wpr'])} "
            f"| {fmt(s['lingua']['wpr'])} |"
        )


def compare_tokenizers(folder: str) -> None:
    """xlr's rjieba / Janome against the benchmark's jieba / MeCab (fugashi, here with UniDic-lite: the benchmark's full
    UniDic is a run-time download)."""
    import logging

    sys.path.insert(0, folder)
    import jieba
    from fugashi import Tagger

    jieba.setLogLevel(logging.WARNING)
    tagger = Tagger("-O wakati -b 50000")
    orig = F.tokenize
    print("\n### Tokenisers: xlr's against the benchmark's\n")
    zh = [
        line
        for m in MODELS
        for t in load_lcb_outputs(path_of(m)).query("language == 'zh'")["completion"]
        for line in F.normalize(t).split("\n")
    ]
    same = sum(tuple(jieba.cut(line)) == orig(line, "zh") for line in zh)
    print(f"- zh: rjieba and jieba 0.42.1 give the same tokens on {same} of {len(zh)} normalised lines of the four files.")

    def mecab(line: str, lang: str) -> tuple[str, ...]:
        return tuple(tagger.parse(line).split()) if lang == "ja" else orig(line, lang)

    ja_lines = same5 = 0
    for m in MODELS:
        df = load_lcb_outputs(path_of(m)).query("language == 'ja'")
        for t in df["completion"]:
            for line in F.normalize(t).split("\n"):
                ja_lines += 1
                same5 += (len(orig(line, "ja")) >= F.MIN_LINE_TOKENS) == (len(mecab(line, "ja")) >= F.MIN_LINE_TOKENS)
        res = {}
        for name, fn in (("Janome", orig), ("MeCab+UniDic-lite", mecab)):
            F.tokenize = fn
            try:
                agg = F.aggregate(F.group_rates(df))
            finally:
                F.tokenize = orig
            res[name] = ", ".join(f"{task} {b['ja']['lpr']:.2f}/{b['ja']['wpr']:.2f}" for task, b in agg.items())
        print(f"- ja {m}: LPR/WPR with Janome: {res['Janome']}; with MeCab+UniDic-lite: {res['MeCab+UniDic-lite']}")
    print(f"- ja: the >= 5-token line filter decides the same on {same5} of {ja_lines} normalised lines.")


if __name__ == "__main__":
    raise SystemExit(main())
