"""The study: its table of stages and the runner (``xlr run``).

:data:`STAGES` is the one list of the study's stages, in the paper's order: what each does, the module that does the
work, the notebook that shows it. :func:`plan` (the steps of a run), :func:`notebook_plan` (the notebook sequence
papermill runs) and each notebook's ``run_stages`` cell come from it (tests/test_notebooks.py checks the cells).
The stage bodies are :mod:`xlr.stages`. A stage already done with intact artifacts is skipped (resume); a failing
notebook stops the run, naming the notebook, the cell and the exception, and the partial executed notebook is kept.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlr import distributed, faults, stages
from xlr.config import Params, load_params
from xlr.errors import XlrError
from xlr.files import atomic_write_json, atomic_write_text, read_json
from xlr.paths import reports_dir
from xlr.report import index_html, to_html
from xlr.runs import Run
from xlr.runtime import set_threads
from xlr.stages import StudyError

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


@dataclass(frozen=True)
class Stage:
    """One stage of the study: ``xlr.stages.stage_<name>`` runs it; ``module`` does its work; ``notebook`` shows it."""

    name: str
    what: str
    module: str
    notebook: str
    per_iteration: bool = False  # run once per DPO iteration (iter<t>/<name>/)
    multi_process: bool = False  # under a multi-process launch every rank runs it (its work is split across ranks:
    # the reward scoring by xlr.rewards' sharding, DPO by trl/accelerate); the main process alone writes its artifacts


STAGES = (
    Stage("data", "load and align training prompts, X-AlpacaEval and English preference pairs", "xlr.data", "01_data.ipynb"),
    Stage("models", "prepare pi_ref (and the local judge), check they load and answer", "xlr.models", "01_data.ipynb"),
    Stage(
        "anchor", "build pi0 by English DPO of pi_ref; pi0's held-out reward accuracy", "xlr.train", "02_anchor.ipynb", multi_process=True
    ),
    Stage(
        "probe",
        "cross-lingual reward probe: does pi0/pi_ref's reward prefer the target language and the stronger answer? (no judge)",
        "xlr.probe",
        "02_anchor.ipynb",
    ),
    Stage(
        "sampling",
        "on-policy sampling of N responses per prompt and language",
        "xlr.sampling",
        "03_sampling_rewards.ipynb",
        per_iteration=True,
    ),
    Stage(
        "rewards",
        "implicit cross-lingual reward log pi0(y|G(x)) - log pi_ref(y|G(x))",
        "xlr.rewards",
        "03_sampling_rewards.ipynb",
        per_iteration=True,
        multi_process=True,
    ),
    Stage(
        "pairs",
        "length-controlled chosen/rejected pairs (alpha search), language fidelity",
        "xlr.pairs",
        "04_pairs_dpo.ipynb",
        per_iteration=True,
    ),
    Stage("training", "iterative multilingual DPO + NLL", "xlr.train", "04_pairs_dpo.ipynb", per_iteration=True, multi_process=True),
    Stage(
        "generation",
        "X-AlpacaEval and Language Confusion Benchmark answers of every model (pi_ref, pi0, pi^1..pi^T) in every eval language",
        "xlr.evaluate",
        "05_xalpacaeval.ipynb",
    ),
    Stage(
        "judging",
        "judge validation against GPT-4-turbo's AlpacaEval 2 judgments and on English labels; each model vs GPT-4-turbo references; "
        "pi^t vs pi0 head-to-head",
        "xlr.judge",
        "05_xalpacaeval.ipynb",
    ),
    Stage(
        "metrics",
        "WR and length-controlled WR with bootstrap CIs, head-to-head, language fidelity (LPR/WPR/LCPR) with paired tests vs pi0",
        "xlr.winrate",
        "05_xalpacaeval.ipynb",
    ),
)
# The last notebook runs no stage: it gathers the results (and reports/<name>/index.html is written after it).
SUMMARY_NOTEBOOK = "06_summary.ipynb"
BY_NAME = {s.name: s for s in STAGES}


class NotebookFailed(XlrError, RuntimeError):
    pass


def in_plan(stage: Stage, params: Params) -> bool:
    """Whether the study's params run this stage at all."""
    if stage.name == "anchor":
        return params.models.pi0 == "build"
    if stage.name == "probe":
        return params.probe.enabled
    if stage.name == "judging":
        return params.judge.backend != "none"
    return True  # metrics too: language fidelity needs no judge


def plan(params: Params) -> list[tuple[str, int | None]]:
    """(stage, iteration) steps of the study in order: the stages of :data:`STAGES` the params run, the per-iteration
    block once per iteration."""
    steps: list[tuple[str, int | None]] = []
    for block in _blocks(STAGES):
        block = [s for s in block if in_plan(s, params)]
        if block and block[0].per_iteration:
            steps += [(s.name, t) for t in range(1, params.iterations + 1) for s in block]
        else:
            steps += [(s.name, None) for s in block]
    return steps


def _blocks(items: Any) -> list[list[Any]]:
    """Consecutive runs of stages (or notebooks) with the same per_iteration flag."""
    out: list[list[Any]] = []
    for s in items:
        if out and out[-1][0].per_iteration == s.per_iteration:
            out[-1].append(s)
        else:
            out.append([s])
    return out


@dataclass(frozen=True)
class NotebookStep:
    """One papermill execution: a notebook, the stages it runs, its iteration (per-iteration notebooks)."""

    notebook: str  # file name under notebooks/
    stages: tuple[str, ...]
    iteration: int | None = None

    @property
    def out_name(self) -> str:
        stem = self.notebook.removesuffix(".ipynb")
        return f"{stem}-iter{self.iteration}" if self.iteration is not None else stem


@dataclass(frozen=True)
class _Notebook:
    notebook: str
    stages: tuple[str, ...]
    per_iteration: bool


def notebook_stages() -> dict[str, tuple[str, ...]]:
    """{notebook: the stages its ``run_stages`` cell runs}, from :data:`STAGES` (the summary notebook: none)."""
    out: dict[str, tuple[str, ...]] = {}
    for s in STAGES:
        out[s.notebook] = out.get(s.notebook, ()) + (s.name,)
    return out | {SUMMARY_NOTEBOOK: ()}


def notebook_plan(params: Params) -> list[NotebookStep]:
    """The notebooks papermill runs, in order (the per-iteration ones once per iteration)."""
    nbs = [_Notebook(nb, names, BY_NAME[names[0]].per_iteration if names else False) for nb, names in notebook_stages().items()]
    steps: list[NotebookStep] = []
    for block in _blocks(nbs):
        if block[0].per_iteration:
            steps += [NotebookStep(nb.notebook, nb.stages, t) for t in range(1, params.iterations + 1) for nb in block]
        else:
            steps += [NotebookStep(nb.notebook, nb.stages) for nb in block]
    return steps


def select_steps(params: Params, run: Run, only: str | None = None, start_from: str | None = None) -> list[tuple[str, int | None]]:
    """The (stage, iteration) steps to run for ``--only`` / ``--from`` (all by default), checking that the earlier
    stages they need are done."""
    steps = plan(params)
    names = [n for n, _ in steps]
    keys = [run.stage_key(n, i) for n, i in steps]
    for opt, value in (("--only", only), ("--from", start_from)):
        if value is not None and value not in names and value not in keys:
            raise StudyError(
                f"{opt} {value}: not a stage of this run; stages: {', '.join(dict.fromkeys(names))} "
                f"(or one step of an iteration: {', '.join(k for k in keys if '/' in k)})"
            )
    chosen = []
    started = start_from is None
    for (name, iteration), key in zip(steps, keys, strict=True):
        started = started or start_from in (name, key)
        if started and (only is None or only in (name, key)):
            chosen.append((name, iteration))
    if only is not None or start_from is not None:
        for step in chosen:  # every earlier stage not itself in the selection must be done already
            missing = [run.stage_key(n, i) for n, i in steps[: steps.index(step)] if (n, i) not in chosen and not run.stage_done(n, i)]
            if missing:
                raise StudyError(
                    f"[{run.stage_key(*step)}] needs the earlier stages done first, and these are not: {', '.join(missing)}. "
                    "Fix: run without --only/--from, or --from the first of them."
                )
    return chosen


def run_stage(params: Params, run: Run, name: str, iteration: int | None = None, echo: Any = print) -> bool:
    """Run one stage unless it is done with intact artifacts (then skip it); True when it ran."""
    key = run.stage_key(name, iteration)
    if run.stage_done(name, iteration):
        echo(f"[{key}] done earlier, artifacts intact: skipped")
        return False
    moved = run.move_aside_corrupt(name, iteration)
    if moved:
        echo(
            f"[{key}] {len(moved)} artifact(s) no longer match their recorded sha256 (truncated or edited): moved aside to "
            f"{run.root / 'corrupt'} and redone: {', '.join(moved)}"
        )
    echo(f"[{key}] {BY_NAME[name].what}")
    faults.set_stage(key)
    run.start_stage(name, iteration)
    try:
        # under several processes (accelerate launch / torchrun) only the stages that split their work across ranks run
        # on every rank; the others run on the main process while the rest wait (sampling would repeat, paid judging too)
        if distributed.is_main() or BY_NAME[name].multi_process:
            runner = getattr(stages, f"stage_{name}")
            runner(params, run) if iteration is None else runner(params, run, iteration)
    except Exception as e:
        run.fail_stage(name, f"{type(e).__name__}: {e}", iteration)
        raise
    run.sync()  # every rank: wait for the main process's record of the stage, then read it
    return True


def run_stages(
    params: Params, run: Run, names: list[str], iteration: int | None = None, allowed: list[str] | None = None
) -> dict[str, str]:
    """Run the notebook's stages in order (skipping done ones). ``allowed``: stage keys this invocation may run
    (``xlr run --only/--from``); others are left as they are. Returns each stage's status afterwards."""
    out = {}
    planned = plan(params)
    for name in names:
        key = run.stage_key(name, iteration)
        if (name, iteration) not in planned:
            out[key] = "not in this study's plan"
            continue
        if allowed is not None and key not in allowed:
            out[key] = "done" if run.stage_done(name, iteration) else "not run (outside --only/--from)"
            continue
        run_stage(params, run, name, iteration)
        out[key] = "done"
    return out


def open_study(params_path: str | Path, overrides: dict[str, Any] | None = None, force: bool = False) -> tuple[Params, Run]:
    """Params (file + overrides) and their run directory, threads set: what each notebook starts with."""
    params = load_params(params_path, overrides or {})
    threads = set_threads(params.runtime.threads)
    run = Run.open(params, force=force)
    run.manifest["runtime"]["threads"] = threads
    run.save()
    return params, run


def _silent(*args: Any, **kwargs: Any) -> None:
    """The echo of the non-main ranks: the main process reports for all."""


def run_study(params: Params, force: bool = False, echo: Any = print, only: str | None = None, start_from: str | None = None) -> Run:
    """All stages in-process, without notebooks (``xlr run --direct``; the tests' fast path)."""
    distributed.init()  # several processes: join the launch's group before any model is loaded (one process: nothing)
    if not distributed.is_main():
        echo = _silent
    threads = set_threads(params.runtime.threads)
    run = Run.open(params, force=force)
    run.manifest["runtime"]["threads"] = threads
    run.save()
    run.sync()
    t0 = time.monotonic()
    for name, iteration in select_steps(params, run, only, start_from):
        run_stage(params, run, name, iteration, echo)
    echo(f"\nRun directory: {run.root}  ({time.monotonic() - t0:.0f} s)")
    return run


def execute_sequence(
    params_path: str | Path,
    overrides: dict[str, Any],
    params: Params,
    run: Run,
    allowed: list[str] | None,
    with_code: bool = False,
    echo: Any = print,
) -> Path:
    """Run every notebook of the plan (papermill), convert each to HTML, then write index.html; return its path."""
    nb_out = run.layout.notebooks
    nb_out.mkdir(parents=True, exist_ok=True)
    rep = reports_dir() / params.name
    rep.mkdir(parents=True, exist_ok=True)
    timings_path = nb_out / "timings.json"
    timings = read_json(timings_path) or {}
    for step in notebook_plan(params):
        keys = [run.stage_key(s, step.iteration) for s in step.stages]
        if allowed is not None and step.stages and not any(k in allowed for k in keys):
            if (nb_out / f"{step.out_name}.ipynb").is_file():
                continue  # nothing to run here this time; keep its executed notebook and report
        src = NOTEBOOK_DIR / step.notebook
        dst = nb_out / f"{step.out_name}.ipynb"
        parameters = notebook_parameters(params_path, overrides, allowed, step.iteration)
        echo(f"\n=== {step.out_name} ({', '.join(step.stages) or 'summary'}) ===")
        t0 = time.monotonic()
        execute_notebook(src, dst, parameters, progress_bar=True, stderr_file=sys.stderr)
        timings[step.out_name] = round(time.monotonic() - t0, 1)
        atomic_write_json(timings_path, timings)
        to_html(dst, rep / f"{step.out_name}.html", with_code)
        faults.set_stage("report")
        faults.point("page")
    fresh = Run.open(params)  # the kernels wrote the manifest; read it back
    index = rep / "index.html"
    atomic_write_text(index, index_html(params, fresh, timings, [s.out_name for s in notebook_plan(params)]))
    return index


def notebook_parameters(
    params_path: str | Path, overrides: dict[str, Any], allowed: list[str] | None, iteration: int | None
) -> dict[str, Any]:
    """What the notebook's ``parameters`` cell is given: the params file, its overrides, the stage keys it may run
    (None: every stage of the notebook not done yet) and, for the per-iteration notebooks, the iteration."""
    parameters: dict[str, Any] = {"params_path": str(Path(params_path).resolve()), "overrides": overrides, "run_stages": allowed}
    if iteration is not None:
        parameters["iteration"] = iteration
    return parameters


def execute_notebook(src: Path, dst: Path, parameters: dict[str, Any], **papermill_options: Any) -> Path:
    """Execute one notebook with papermill (cwd notebooks/, the kernel is this interpreter), as ``xlr run`` and
    tests/test_notebooks.py do; a failing cell is :class:`NotebookFailed` naming the notebook, the cell, the error
    and the head of the cell's source, and the partial executed notebook is kept at ``dst``."""
    import papermill as pm

    # the kernel is this interpreter (jupyter_client maps the kernelspec's "python" to sys.executable); make sure
    # its scripts are first on PATH for anything the kernel launches
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:  # once, not once per notebook
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    options = {"progress_bar": False, "log_output": False, "stdout_file": None} | papermill_options
    try:
        pm.execute_notebook(str(src), str(dst), parameters=parameters, cwd=str(NOTEBOOK_DIR), **options)
    except pm.PapermillExecutionError as e:
        head = "\n".join((e.source or "").strip().splitlines()[:3])
        raise NotebookFailed(
            f"notebook {src.name} (as {dst}) failed in cell {e.exec_count} ({e.ename}: {e.evalue}). "
            f"The partial executed notebook is kept at {dst}; fix the cause and rerun the same command (done stages are skipped).\n"
            f"The cell begins:\n{head}"
        ) from None
    return dst
