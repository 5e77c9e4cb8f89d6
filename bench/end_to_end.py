"""End-to-end wall time and peak memory of a finished `xlr run`, per stage and per notebook, against the goals
(issue 8: `xlr run params/cpu.yaml` within 60 minutes and 12 GiB on the 2-core machine).

    .venv/bin/python bench/end_to_end.py runs/cpu [--total-s SECONDS] [--max-rss-kib KIB]

Stage times and peak RSS come from the run's manifest (each stage records its wall time and the peak resident
memory of the process that ran it: under papermill, the notebook's kernel); notebook times (kernel start, stages,
tables, figures, HTML) from notebooks/timings.json. ``--total-s`` / ``--max-rss-kib``: the whole command's wall
time and peak RSS as measured outside it (e.g. by `/usr/bin/time -v make study`), printed beside the goals.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GOAL_MIN, GOAL_GIB = 60.0, 12.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--total-s", type=float, default=None, help="wall time of the whole command, measured outside it")
    ap.add_argument("--max-rss-kib", type=float, default=None, help="peak RSS of the whole command (largest process), KiB")
    a = ap.parse_args()
    m = json.loads((a.run / "manifest.json").read_text())
    print(f"run {a.run} (params {m['params_hash'][:12]}, git {m.get('git_sha')}), threads {m['runtime'].get('threads')}\n")
    print("| stage | wall time [min] | peak RSS of its process [GiB] |\n|---|---|---|")
    total = 0.0
    peak = 0.0
    for key, s in m["stages"].items():
        w = s.get("wall_s", float("nan"))
        r = s.get("peak_rss_mib", float("nan")) / 1024
        total += w
        peak = max(peak, r) if r == r else peak
        print(f"| {key} | {w / 60:.2f} | {r:.2f} |")
    print(f"| **all stages** | **{total / 60:.1f}** | **{peak:.2f}** |")
    timings = a.run / "notebooks" / "timings.json"
    if timings.is_file():
        t = json.loads(timings.read_text())
        nb = sum(t.values())
        print("\n| notebook (papermill: kernel, stages, tables, figures) | wall time [min] |\n|---|---|")
        for k, v in t.items():
            print(f"| {k} | {v / 60:.2f} |")
        print(f"| **all notebooks** | **{nb / 60:.1f}** (of which outside the stages: {(nb - total) / 60:.1f}) |")
    print()
    if a.total_s is not None:
        mins = a.total_s / 60
        print(f"whole command: {mins:.1f} min against the goal of {GOAL_MIN:.0f} min: {'met' if mins <= GOAL_MIN else 'NOT met'}")
    if a.max_rss_kib is not None:
        gib = a.max_rss_kib / 1024**2
        print(f"largest process peak RSS: {gib:.2f} GiB against the goal of {GOAL_GIB:.0f} GiB: {'met' if gib <= GOAL_GIB else 'NOT met'}")
    print(f"largest stage peak RSS: {peak:.2f} GiB against the goal of {GOAL_GIB:.0f} GiB: {'met' if peak <= GOAL_GIB else 'NOT met'}")


if __name__ == "__main__":
    main()
