"""The house (issue 18): the import graph of xlr has no circle and no upward arrow, the stage table is the one list of
stages (plan, notebook plan and every notebook's ``run_stages`` cell agree with it), and functions take params whole.

The checks read the source (ast), so a function-local import counts as much as a module-level one.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "xlr"

# The modules from the bottom up; a module may import only modules before it (README "Layout" tells the same story).
ORDER = [
    # leaves: no xlr import, or only each other
    "errors",
    "faults",
    "paths",
    "languages",
    "chat",
    "stats",
    "files",
    "data_sources",
    "mock_openai",
    "runtime",
    # params, processes, the run directory
    "config",
    "distributed",
    "runs",
    # inputs: data, language ID, models
    "data",
    "langid",
    "fidelity",
    "fetch",
    "registry",
    "tiny",
    "models",
    # the method's stages
    "sampling",
    "rewards",
    "pairs",
    "train",
    "anchors",  # the cache of train's English anchor pi0 (imports errors, files, paths, runs, models)
    "judge",
    "winrate",
    "probe",
    # evaluation on top of them
    "evaluate",
    "judge_validation",
    # what the notebooks show, the stage bodies, the study's table and runner, the command line
    "plots",
    "browser",  # the report in headless Chromium (imports errors, files only)
    "report",
    "stages",
    "study",
    "cli",
]


def _imports(path: Path) -> set[str]:
    """xlr modules imported anywhere in the file (module level or inside functions)."""
    modules = {p.stem for p in PKG.glob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.module == "xlr":
                found |= {a.name for a in node.names if a.name in modules}
            elif node.module and node.module.startswith("xlr."):
                found.add(node.module.split(".")[1])
            elif node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("xlr.")}
    return found - {path.stem, "__init__"}


def test_every_module_has_a_place_in_the_order():
    modules = {p.stem for p in PKG.glob("*.py")} - {"__init__"}
    assert modules - set(ORDER) == set(), (
        f"modules not placed in tests/test_layout.py ORDER (and README Layout): {sorted(modules - set(ORDER))}"
    )
    assert set(ORDER) - modules == set(), f"ORDER names modules that do not exist: {sorted(set(ORDER) - modules)}"
    assert len(ORDER) == len(set(ORDER))


def test_no_import_runs_upward_so_there_is_no_circle():
    rank = {m: i for i, m in enumerate(ORDER)}
    upward = [f"xlr.{m} imports xlr.{dep}" for m in ORDER for dep in sorted(_imports(PKG / f"{m}.py")) if rank[dep] >= rank[m]]
    assert not upward, "imports that run upward (or in a circle): " + "; ".join(upward)


def test_the_graph_check_sees_function_local_imports(tmp_path):
    """The check is not vacuous: a function-local upward import is found."""
    f = tmp_path / "probe_module.py"
    f.write_text("def f():\n    from xlr.study import plan\n    from xlr import cli\n    from . import report\n")
    assert _imports(f) == {"study", "cli", "report"}


# ------------------------------------------------------------------------------------------------------------------
# the stage table


def test_stage_table_names_a_runner_a_module_and_a_notebook_for_every_stage():
    from xlr import stages, study

    for s in study.STAGES:
        assert callable(getattr(stages, f"stage_{s.name}", None)), f"stage {s.name}: no xlr.stages.stage_{s.name}"
        importlib.import_module(s.module)
        assert (REPO / "notebooks" / s.notebook).is_file(), f"stage {s.name}: notebook {s.notebook} does not exist"
        params = list(inspect.signature(getattr(stages, f"stage_{s.name}")).parameters)
        assert params[:2] == ["params", "run"] and (("iteration" in params) == s.per_iteration), (s.name, params)
    on_disk = {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
    assert on_disk == set(study.notebook_stages()), f"notebooks on disk vs the table: {sorted(on_disk ^ set(study.notebook_stages()))}"


def _run_stages_cell(nb: Path) -> tuple[str, ...] | None:
    """The stage list a notebook's ``study.run_stages(params, run, [...], ...)`` call passes (None: no such call)."""
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    calls = []
    for c in cells:
        if c["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(c["source"]))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run_stages":
                assert isinstance(node.func.value, ast.Name) and node.func.value.id == "study", f"{nb.name}: run_stages is xlr.study's"
                calls.append(tuple(ast.literal_eval(node.args[2])))
    assert len(calls) <= 1, f"{nb.name}: {len(calls)} run_stages calls"
    return calls[0] if calls else None


@pytest.mark.parametrize("notebook", sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb")))
def test_each_notebook_runs_exactly_its_stages_of_the_table(notebook):
    from xlr import study

    want = study.notebook_stages()[notebook]
    got = _run_stages_cell(REPO / "notebooks" / notebook)
    assert (got or ()) == want, f"{notebook}: its run_stages cell runs {got}, the stage table (xlr.study.STAGES) says {want}"


def test_plan_and_notebook_plan_follow_the_table():
    from xlr import study
    from xlr.config import load_params

    p = load_params(REPO / "params/smoke.yaml")
    steps = study.plan(p)
    assert [n for n, _ in steps] == [s.name for s in study.STAGES if not s.per_iteration][:4] + [
        s.name for s in study.STAGES if s.per_iteration
    ] * p.iterations + [s.name for s in study.STAGES if not s.per_iteration][4:]
    assert [i for n, i in steps if study.BY_NAME[n].per_iteration] == [t for t in range(1, p.iterations + 1) for _ in range(4)]
    # what each notebook step runs is the plan, in order, exactly once
    flat = [(name, step.iteration) for step in study.notebook_plan(p) for name in step.stages]
    assert flat == steps
    # the switches: no anchor for a given pi0, no probe when off, no judging without a judge
    q = load_params(REPO / "params/smoke.yaml", {"models": {"pi0": "tiny:1"}, "probe": {"enabled": False}, "judge": {"backend": "none"}})
    assert {"anchor", "probe", "judging"}.isdisjoint(n for n, _ in study.plan(q))


def test_run_layout_accessors_create_nothing(tmp_path):
    from xlr.runs import Layout, Run

    lay = Layout(tmp_path / "run")
    paths = [
        lay.stage("pairs", 1),
        lay.eval_dir("pi0", "en"),
        lay.lcb_dir("pi1", "monolingual", "de"),
        lay.policy(0),
        lay.policy(2, merged=False),
        lay.rewards(1),
        lay.pairs_stats(2),
        lay.eval_summary,
        lay.judge_validation,
        lay.training_metrics(0),
        lay.notebooks,
    ]
    assert not (tmp_path / "run").exists()
    assert (
        lay.policy(0) == tmp_path / "run" / "anchor" / "model"
        and lay.policy(2, merged=False) == tmp_path / "run" / "iter2" / "training" / "adapter"
    )
    assert len(set(paths)) == len(paths)
    run = Run(tmp_path / "run", {"stages": {}})
    assert run.stage_dir("sampling", 1) == tmp_path / "run" / "iter1" / "sampling" and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------------------------
# params travel whole

MAX_PARAMETERS = 9  # train_dpo(start, pairs, out_dir, dpo, *, loss, seed, dtype, device, reference_spec): the shape
# Longer signatures, each with the reason no params object fits (a new one must be added here, with its reason).
LONGER = {
    "rewards.score_models": "the scorer under the reward, pi0's accuracy, the probe and the judge: each its own settings",
    "rewards.annotate": "samples, both models and the tokenizer are data, not params; the reward params come whole",
    "sampling.VLLMBackend.__init__": "vLLM's own engine options (EngineConfig.options), not xlr params",
}


def _signatures() -> dict[str, int]:
    out = {}
    for path in sorted(PKG.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    a = child.args
                    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                    n = len(names) - (names[:1] in (["self"], ["cls"]))
                    owner = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
                    out[f"{path.stem}.{owner}{child.name}"] = n
    return out


def test_no_function_takes_more_than_nine_loose_parameters():
    sigs = _signatures()
    assert sigs["train.train_dpo"] == 9 and sigs["judge.judge_pairs"] <= 8  # the check reads real signatures
    too_long = {k: n for k, n in sigs.items() if n > MAX_PARAMETERS and k not in LONGER}
    assert not too_long, f"more than {MAX_PARAMETERS} parameters (pass the params object whole, or add to LONGER with why): {too_long}"
    assert set(LONGER) <= set(sigs), f"LONGER names functions that no longer exist: {set(LONGER) - set(sigs)}"
