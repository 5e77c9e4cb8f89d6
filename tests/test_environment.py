"""The environment files agree, and CI runs exactly the README's test command."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[=<>!~\[ ]", req, maxsplit=1)[0].lower()


def test_pyproject_and_environment_yml_agree():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | {r for extra in project["optional-dependencies"].values() for r in extra}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in env["dependencies"]
    assert {r for r in pip if not r.startswith("-e")} == wanted


def test_torch_is_pinned_first():
    make = (REPO / "Makefile").read_text()
    assert make.index("install torch==2.13.0") < make.index("install -e")
    assert "torch==2.13.0" in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci/run").read_text()
    assert "make test" in readme and "make study" in readme
    # before it, .ci/run may only prepare the machine (install_browser: chromium for tests/test_browser.py); its one
    # test command, run last, is the README's
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands[-1] == "make test", commands
    assert [c for c in commands if re.search(r"\b(make|pytest|ruff)\b", c)] == ["make test"], commands
