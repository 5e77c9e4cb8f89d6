"""pi0 settings search (issue 4): train the English anchor with given overrides and record its held-out reward accuracy.

Each try is a real run of the study's `anchor` stage (xlr.stages.stage_anchor: trl DPOTrainer on the first n_train
UltraFeedback train pairs, then the accuracy of log pi0/pi_ref on the held-out eval pairs, ties excluded, with a
bootstrap CI), in its own run directory `runs/anchor-search-<tag>/`. One JSON line per try is appended to
bench/anchor_search.jsonl (settings, accuracy, CI, wall time), so the table in bench/RESULTS.md can be regenerated.

    .venv/bin/python bench/anchor_search.py --tag lr2e-4-n384 --set anchor.learning_rate=2e-4 --set anchor.n_train=384
    .venv/bin/python bench/anchor_search.py --table          # print the tries so far
    .venv/bin/python bench/anchor_search.py --paired m1.5-n500 m0-n500   # two tries, pair by pair
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOG = HERE / "anchor_search.jsonl"


def table() -> None:
    rows = [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()] if LOG.exists() else []
    print(
        f"{'tag':<24} {'n_train':>7} {'margin':>6} {'lr':>8} {'beta':>5} {'ep':>3} {'r':>3} {'scored':>13} {'acc':>6} {'95% CI':>13} {'n':>4} "
        f"{'acc by rating margin (0,1] (1,2] >2':>36} {'min':>6}"
    )
    for r in rows:
        a = r["anchor"]
        by = r.get("by_score_margin")
        saved = Path(r["run"]) / "anchor" / "reward_accuracy.json"
        if by is None and saved.exists():  # rows written before this column existed: read it from the try's run directory
            by = json.loads(saved.read_text()).get("by_score_margin")
        bins = "  ".join(f"{b['accuracy']:.3f} ({b['n']})" for b in (by or {}).values()) or "-"
        print(
            f"{r['tag']:<24} {a['n_train']:>7} {a.get('min_score_margin', 0.0):>6} {a['learning_rate']:>8.1e} {a['beta']:>5} {a['epochs']:>3} {a['lora']['r']:>3} "
            f"{str(a.get('score_dtype') or '?'):>13} {r['accuracy']:>6.3f} {r['ci95'][0]:>6.3f}-{r['ci95'][1]:<6.3f} {r['n']:>4} {bins:>36} {r['wall_s'] / 60:>6.1f}"
        )


def paired(tag_a: str, tag_b: str, n_boot: int = 10000) -> None:
    """Two tries on the same held-out pairs, pair by pair: agreement, discordant pairs, and the accuracy difference
    (b - a) with a paired bootstrap CI (resampling pairs, both tries together)."""
    import numpy as np

    rows = {json.loads(line)["tag"]: json.loads(line) for line in LOG.read_text().splitlines() if line.strip()}
    per = []
    for tag in (tag_a, tag_b):
        path = Path(rows[tag]["run"]) / "anchor" / "reward_accuracy_pairs.jsonl"
        per.append([json.loads(line) for line in path.read_text().splitlines()])
    if [q["row"] for q in per[0]] != [q["row"] for q in per[1]]:
        raise SystemExit(f"{tag_a} and {tag_b} were scored on different held-out pairs: no paired comparison.")
    a, b = (np.array([q["correct"] for q in p], dtype=float) for p in per)
    idx = np.random.default_rng(0).integers(0, len(a), size=(n_boot, len(a)))
    lo, hi = np.quantile((b[idx] - a[idx]).mean(axis=1), [0.025, 0.975])
    margins = [np.array([q["reward_chosen"] - q["reward_rejected"] for q in p]) for p in per]
    print(
        f"{len(a)} pairs: both right {int((a * b).sum())}, only {tag_a} {int((a * (1 - b)).sum())}, only {tag_b} {int(((1 - a) * b).sum())}, "
        f"neither {int(((1 - a) * (1 - b)).sum())}"
    )
    print(
        f"accuracy {tag_a} {a.mean():.3f}, {tag_b} {b.mean():.3f}; difference {b.mean() - a.mean():+.3f} (paired bootstrap 95% CI {lo:+.3f} to {hi:+.3f}); "
        f"correlation of reward margins {np.corrcoef(*margins)[0, 1]:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params/cpu.yaml")
    ap.add_argument("--tag")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--paired", nargs=2, metavar=("TAG_A", "TAG_B"), help="compare two tries pair by pair")
    args = ap.parse_args()
    if args.table:
        return table()
    if args.paired:
        return paired(*args.paired)
    if not args.tag:
        ap.error("--tag is required for a try")

    from xlr.config import deep_merge, load_params, parse_override
    from xlr.runs import Run
    from xlr.runtime import set_threads
    from xlr.study import stage_anchor

    overrides: dict = {"name": f"anchor-search-{args.tag}"}
    for item in args.set:
        overrides = deep_merge(overrides, parse_override(item))
    params = load_params(args.params, overrides)
    set_threads(params.runtime.threads)
    run = Run.open(params)
    t0 = time.monotonic()
    if not run.stage_done("anchor"):
        run.start_stage("anchor")
        acc = stage_anchor(params, run)
    else:
        acc = json.loads((run.stage_dir("anchor") / "reward_accuracy.json").read_text())
    row = {
        "tag": args.tag,
        "overrides": args.set,
        "anchor": params.anchor.model_dump(),
        "pi_ref": params.models.pi_ref,
        "accuracy": acc["accuracy"],
        "ci95": acc["ci95"],
        "n": acc["n"],
        "by_score_margin": acc.get("by_score_margin"),
        "wall_s": round(time.monotonic() - t0, 1),
        "run": str(run.root),
        "machine": f"{platform.processor() or platform.machine()}, threads {params.runtime.threads}",
    }
    with LOG.open("a") as f:
        f.write(json.dumps(row) + "\n")
    table()


if __name__ == "__main__":
    main()
