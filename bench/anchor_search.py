"""pi0 settings search (issue 4): train the English anchor with given overrides and record its held-out reward accuracy.

Each try is a real run of the study's `anchor` stage (xlr.study.stage_anchor: trl DPOTrainer on the first n_train
UltraFeedback train pairs, then the accuracy of log pi0/pi_ref on the held-out eval pairs, ties excluded, with a
bootstrap CI), in its own run directory `runs/anchor-search-<tag>/`. One JSON line per try is appended to
bench/anchor_search.jsonl (settings, accuracy, CI, wall time), so the table in bench/RESULTS.md can be regenerated.

    .venv/bin/python bench/anchor_search.py --tag lr2e-4-n384 --set anchor.learning_rate=2e-4 --set anchor.n_train=384
    .venv/bin/python bench/anchor_search.py --table          # print the tries so far
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
    print(f"{'tag':<24} {'n_train':>7} {'margin':>6} {'lr':>8} {'beta':>5} {'ep':>3} {'r':>3} {'scored':>13} {'acc':>6} {'95% CI':>13} {'n':>4} "
          f"{'acc by rating margin (0,1] (1,2] >2':>36} {'min':>6}")
    for r in rows:
        a = r["anchor"]
        by = r.get("by_score_margin")
        saved = Path(r["run"]) / "anchor" / "reward_accuracy.json"
        if by is None and saved.exists():  # rows written before this column existed: read it from the try's run directory
            by = json.loads(saved.read_text()).get("by_score_margin")
        bins = "  ".join(f"{b['accuracy']:.3f} ({b['n']})" for b in (by or {}).values()) or "-"
        print(f"{r['tag']:<24} {a['n_train']:>7} {a.get('min_score_margin', 0.0):>6} {a['learning_rate']:>8.1e} {a['beta']:>5} {a['epochs']:>3} {a['lora']['r']:>3} "
              f"{str(a.get('score_dtype') or '?'):>13} {r['accuracy']:>6.3f} {r['ci95'][0]:>6.3f}-{r['ci95'][1]:<6.3f} {r['n']:>4} {bins:>36} {r['wall_s'] / 60:>6.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params/cpu.yaml")
    ap.add_argument("--tag")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.table:
        return table()
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
    row = {"tag": args.tag, "overrides": args.set, "anchor": params.anchor.model_dump(), "pi_ref": params.models.pi_ref,
           "accuracy": acc["accuracy"], "ci95": acc["ci95"], "n": acc["n"], "by_score_margin": acc.get("by_score_margin"), "wall_s": round(time.monotonic() - t0, 1),
           "run": str(run.root), "machine": f"{platform.processor() or platform.machine()}, threads {params.runtime.threads}"}
    with LOG.open("a") as f:
        f.write(json.dumps(row) + "\n")
    table()


if __name__ == "__main__":
    main()
