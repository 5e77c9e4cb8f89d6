"""Each notebook of the study, alone, under papermill (the way recommenders-team/recommenders tests its examples,
tests/unit/examples/test_notebooks_python.py): the smoke run is built ONCE per session, in-process and without
notebooks (``xlr run --direct``), then every step of the notebook plan (``notebook_plan``; 03 and 04 once per
iteration) is executed on it with the parameters ``xlr run`` passes. Every stage is already done, so a notebook only
reads, shows and plots; its stage records in the manifest must not change. A failing notebook fails its own test id,
and the message names the notebook, the cell number, the exception and the head of the cell's source.

The whole sequence under ``xlr run`` (kill/resume) stays in tests/test_resume.py."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import Smoke

from xlr import study
from xlr.config import load_params

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
SMOKE = REPO / "params" / "smoke.yaml"
MANIFEST = "manifest.json"
CELL_TIMEOUT_S = 900  # per cell; a hung kernel fails the test instead of the session


@dataclass(frozen=True)
class Case:
    notebook: str  # file name under notebooks/
    iteration: int | None
    planned: bool  # False: a notebook in notebooks/ that the plan never runs (a failure)

    @property
    def label(self) -> str:
        return self.notebook + (f" [iteration {self.iteration}]" if self.iteration is not None else "")


def _cases() -> tuple[list[Case], list[str]]:
    steps = study.notebook_plan(load_params(SMOKE))
    cases = [Case(s.notebook, s.iteration, True) for s in steps]
    ids = [s.out_name for s in steps]
    planned = {s.notebook for s in steps}
    for nb in sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")):
        if nb not in planned:  # gets its own (failing) test id rather than going unnoticed
            cases.append(Case(nb, None, False))
            ids.append(f"{nb.removesuffix('.ipynb')}-NOT-IN-PLAN")
    return cases, ids


CASES, IDS = _cases()


# ----------------------------------------------------------------------------------------------------------------
# the one helper every notebook (and the failure test) goes through


def execute_notebook(src: Path, dst: Path, label: str, parameters: dict[str, Any]) -> nbformat.NotebookNode:
    """Execute ``src`` into ``dst`` through ``xlr.study.execute_notebook``, the very call ``xlr run`` makes (cwd
    notebooks/, this interpreter as the kernel); a failing cell fails the test with xlr's message (the notebook, the
    cell, the exception and the head of the cell's source)."""
    try:
        study.execute_notebook(src, dst, parameters, execution_timeout=CELL_TIMEOUT_S)
    except study.NotebookFailed as e:
        pytest.fail(f"{label}: {e}", pytrace=False)
    return nbformat.read(dst, as_version=4)


def check_executed(nb: nbformat.NotebookNode, src: Path, label: str) -> None:
    """No error output anywhere and every non-empty code cell of the source executed (papermill's injected
    parameters cell included)."""
    errors = [
        (c.get("execution_count"), o.get("ename"), o.get("evalue"))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{label}: error outputs in cells {errors}"
    source = nbformat.read(src, as_version=4)
    want = sum(1 for c in source.cells if c.cell_type == "code" and c.source.strip())
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    injected = [c for c in code if "injected-parameters" in (c.metadata.get("tags") or [])]
    assert len(injected) == 1, f"{label}: papermill did not inject the parameters cell (no cell tagged 'parameters'?)"
    assert len(code) == want + 1, f"{label}: {len(code)} code cells executed, the notebook has {want} (+1 injected)"
    not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip() and c.get("execution_count") is None]
    assert not not_run, f"{label}: cells {not_run} never ran"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{label}: cells ran out of order or not all ran: execution counts {counts}"
    assert not (nb.metadata.get("papermill") or {}).get("exception"), f"{label}: papermill recorded an exception"


# ----------------------------------------------------------------------------------------------------------------
# fixtures


# smoke_run (the smoke study, built once per session) lives in conftest.py: tests/test_browser.py renders its report.


@pytest.fixture
def smoke_env(_isolated_runs, smoke_run, monkeypatch) -> Smoke:
    """After the autouse per-test isolation (requested explicitly so it runs first): XLR_RUNS_DIR/XLR_REPORTS_DIR
    back to the session's smoke run, for the kernel (a subprocess inheriting os.environ); this interpreter's scripts
    first on PATH, as execute_sequence does."""
    monkeypatch.setenv("XLR_RUNS_DIR", str(smoke_run.runs))
    monkeypatch.setenv("XLR_REPORTS_DIR", str(smoke_run.reports))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return smoke_run


def _parameters(iteration: int | None) -> dict[str, Any]:
    """What execute_sequence passes for a plain ``xlr run params/smoke.yaml``."""
    return study.notebook_parameters(SMOKE, {}, None, iteration)


# ----------------------------------------------------------------------------------------------------------------
# tests


def test_plan_covers_every_notebook():
    steps = study.notebook_plan(load_params(SMOKE))
    on_disk = {p.name for p in NOTEBOOK_DIR.glob("*.ipynb")}
    planned = {s.notebook for s in steps}
    assert on_disk, f"no notebooks in {NOTEBOOK_DIR}"
    assert not on_disk - planned, f"notebooks never run by notebook_plan: {sorted(on_disk - planned)}"
    assert not planned - on_disk, f"notebook_plan names notebooks that do not exist: {sorted(planned - on_disk)}"
    per_iteration = {s.notebook for s in steps if s.iteration is not None}
    for nb in per_iteration:  # the per-iteration notebooks run once for each iteration, in order
        assert [s.iteration for s in steps if s.notebook == nb] == list(range(1, load_params(SMOKE).iterations + 1)), nb


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_notebook_runs(case: Case, smoke_env: Smoke, tmp_path):
    assert case.planned, f"notebooks/{case.notebook} is not in notebook_plan: `xlr run` never executes it"
    src = NOTEBOOK_DIR / case.notebook
    assert src.is_file(), f"notebook_plan names {case.notebook}, which is not in {NOTEBOOK_DIR}"
    before = json.loads((smoke_env.root / MANIFEST).read_text())

    dst = tmp_path / f"{src.stem}{f'-iter{case.iteration}' if case.iteration is not None else ''}.ipynb"
    nb = execute_notebook(src, dst, case.label, _parameters(case.iteration))
    check_executed(nb, src, case.label)

    after = json.loads((smoke_env.root / MANIFEST).read_text())
    changed = sorted(k for k in set(before["stages"]) | set(after["stages"]) if before["stages"].get(k) != after["stages"].get(k))
    assert not changed, (
        f"{case.label}: every stage was done, yet the notebook changed the stage records of {changed} "
        f"(recomputed or re-recorded): {[(k, before['stages'].get(k, {}).get('finished'), after['stages'].get(k, {}).get('finished')) for k in changed]}"
    )
    assert after["params_hash"] == before["params_hash"], f"{case.label}: the notebook changed the run's params"
    replaced = sorted(p.name for p in smoke_env.root.parent.glob(f"{smoke_env.root.name}.replaced-*"))
    assert not replaced, f"{case.label}: the notebook moved the run aside as made from other params: {replaced}"


def test_failure_names_notebook_and_cell(tmp_path, monkeypatch):
    """A raising cell injected into a copy of a real notebook fails through the same helper with a message that names
    the notebook, the cell's execution count, the exception and the cell's source. The cell sits right after the
    parameters cell, so nothing of the study runs (no smoke run needed)."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    name = CASES[0].notebook
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in (c.metadata.get("tags") or [])) + 1
    bad = nbformat.v4.new_code_cell("# injected by test_notebooks\nraise ValueError('boom from the injected cell')")
    bad.pop("id", None)  # like the notebooks' own cells (they carry no ids)
    nb.cells.insert(at, bad)
    src = tmp_path / "src" / name
    src.parent.mkdir()
    nbformat.write(nb, src)
    dst = tmp_path / "out.ipynb"

    with pytest.raises(pytest.fail.Exception) as info:
        execute_notebook(src, dst, name, _parameters(None))
    msg = str(info.value)
    # executed: the code cells before it, papermill's injected parameters cell, then the raising one
    expected_count = sum(1 for c in nb.cells[:at] if c.cell_type == "code" and c.source.strip()) + 2
    assert msg.startswith(
        f"{name}: notebook {name} (as {dst}) failed in cell {expected_count} (ValueError: boom from the injected cell)"
    ), msg
    assert "raise ValueError('boom from the injected cell')" in msg, msg
    assert str(dst) in msg, msg
    executed = nbformat.read(dst, as_version=4)  # the partial notebook is kept and shows the error in that cell
    errs = [
        c.execution_count for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert errs == [expected_count], errs
    with pytest.raises(AssertionError, match="error outputs"):  # and check_executed would have caught it too
        check_executed(executed, src, name)
