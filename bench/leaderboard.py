"""AlpacaEval 2 leaderboard from the shipped annotations: our WR and LC beside the published ones, every shipped model.

    OMP_NUM_THREADS=1 .venv/bin/python bench/leaderboard.py [--data-dir DIR] [--lc auto|v1|noreg] [--json out.json]

WR: ``xlr.winrate.annotation_winrates`` (alpaca_eval's get_winrate). LC: the same function with ``--lc`` (default auto:
v1 where the offline df_gamed exists, else noreg with the offline instruction difficulty; both rebuilt by
``offline_lc_files``, timed here) and length_controlled_minimal beside it. The instruction index is matched by text;
files with missing rows are also shown with alpaca_eval's own convention (row position in the file), as a footnote.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from xlr import data as D
from xlr import winrate as W
from xlr.runtime import cpu_name


def fmt(x: float, nd: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def summary(diffs: list[float]) -> str:
    a = np.abs(np.asarray([d for d in diffs if not math.isnan(d)]))
    q = np.quantile(a, [0.5, 0.75, 0.9])
    return (
        f"n={a.size}, max {a.max():.2f}, median {q[0]:.2f}, p75 {q[1]:.2f}, p90 {q[2]:.2f}; within 0.5: {(a <= 0.5).sum()}/{a.size} "
        f"({(a <= 0.5).mean():.0%}), within 1: {(a <= 1).sum()}, within 2: {(a <= 2).sum()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--lc", default="auto", choices=["auto", "v1", "noreg"])
    ap.add_argument("--json", default=None, help="also write every row as JSON here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    _, gamed, prov = W.offline_lc_files(args.data_dir)
    t_files = time.perf_counter() - t0
    files = D.alpaca_annotation_files(args.data_dir)
    lb = D.load_alpaca_leaderboard(args.data_dir)
    t1 = time.perf_counter()
    main_rows = W.annotation_winrates(list(files.values()), variant=args.lc, data_dir=args.data_dir)
    t_main = time.perf_counter() - t1
    minimal = {r["name"]: r for r in W.annotation_winrates(list(files.values()), variant="minimal", data_dir=args.data_dir)}
    shifted = [m for m, r in minimal.items() if r["n_records"] < 805 and m in lb.index]
    row_order = {
        r["name"]: r for r in W.annotation_winrates([files[m] for m in shifted], variant=args.lc, data_dir=args.data_dir, index="row")
    }
    variants = sorted({r["lc_variant"] for r in main_rows})
    label = "/".join(v.removeprefix("length_controlled_") for v in variants)

    print(f"CPU: {cpu_name()}")
    print(
        f"offline LC files: {'reused' if prov['reused'] else 'built'} in {t_files:.1f} s ({prov['dir']}); "
        f"{prov['n_models']} models, {prov['n_rows']} judged rows, C={prov['C']:.3g}; df_gamed: {prov['df_gamed']}"
    )
    print(f"WR + LC ({label}) of {len(files)} files: {t_main:.1f} s\n")
    print(f"| model | n | WR ours | WR published | diff | LC {label} ours | LC published | diff | LC minimal | diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    dwr, dlc, dmin, out = [], [], [], []
    for r in sorted(main_rows, key=lambda r: -lb["length_controlled_winrate"].get(r["name"], -1)):
        m = r["name"]
        pub = lb.loc[m] if m in lb.index else None
        wr_p = float(pub["win_rate"]) if pub is not None else math.nan
        lc_p = float(pub["length_controlled_winrate"]) if pub is not None else math.nan
        mn = minimal[m]["length_controlled_winrate"]
        d1, d2, d3 = r["win_rate"] - wr_p, r["length_controlled_winrate"] - lc_p, mn - lc_p
        dwr.append(d1), dlc.append(d2), dmin.append(d3)
        mark = "*" if m in row_order else ""
        print(
            f"| {m}{mark} | {r['n']} | {fmt(r['win_rate'])} | {fmt(wr_p)} | {fmt(d1, 3)} | {fmt(r['length_controlled_winrate'])} | {fmt(lc_p)} | "
            f"{fmt(d2)} | {fmt(mn)} | {fmt(d3)} |"
        )
        out.append({**{k: v for k, v in r.items() if k != "lc_files"}, "published_win_rate": wr_p, "published_lc": lc_p, "lc_minimal": mn})
    print()
    print(f"WR |ours - published|: {summary(dwr)}")
    print(f"LC {label} |ours - published|: {summary(dlc)}")
    print(f"LC minimal |ours - published|: {summary(dmin)}")
    if row_order:
        print(
            "\n\\* files with missing rows (n < 805): alpaca_eval indexes instructions by row position, so after the gap its difficulty "
            "is that of the next instruction. With that convention (index='row'):"
        )
        for m, r in row_order.items():
            lc_p = float(lb.loc[m, "length_controlled_winrate"])
            print(
                f"  {m}: LC {fmt(r['length_controlled_winrate'])} (diff {fmt(r['length_controlled_winrate'] - lc_p)}) vs matched "
                f"{fmt(next(x for x in main_rows if x['name'] == m)['length_controlled_winrate'] - lc_p)}"
            )
    no_pub = [r["name"] for r in main_rows if r["name"] not in lb.index]
    if no_pub:
        print(f"\nNot on the AlpacaEval 2 leaderboard (no published numbers): {', '.join(no_pub)}")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
