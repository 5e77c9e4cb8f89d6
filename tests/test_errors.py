"""Issue 18: every error class xlr defines subclasses xlr.errors.XlrError, and every one reaches the CLI's clear-error
exit (``xlr: error: <message>`` on stderr, exit 2, no traceback)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
import types
from pathlib import Path

import pytest

import xlr
from xlr.errors import XlrError

CLEAR_ERROR_EXIT = 2  # what xlr.cli.main returns for an error it prints without a traceback
XLR_DIR = Path(xlr.__file__).parent


def _modules() -> tuple[list[types.ModuleType], dict[str, str]]:
    """Every module xlr/<name>.py, imported; and {module name: why it could not be imported}."""
    names = sorted(m.name for m in pkgutil.iter_modules([str(XLR_DIR)]) if not m.ispkg)
    assert names == sorted(p.stem for p in XLR_DIR.glob("*.py") if p.stem != "__init__"), "pkgutil and the file listing disagree"
    mods, failed = [xlr], {}
    for name in names:
        try:
            mods.append(importlib.import_module(f"xlr.{name}"))
        except Exception as e:  # noqa: BLE001 - reported by test_every_xlr_module_imports, never skipped silently
            failed[f"xlr.{name}"] = f"{type(e).__name__}: {e}"
    return mods, failed


def error_classes(mods: list[types.ModuleType]) -> list[type[BaseException]]:
    """The exception classes each module defines itself (``__module__`` is that module, so a re-export counts once)."""
    found = []
    for mod in mods:
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found.append(obj)
    return sorted(found, key=lambda c: (c.__module__, c.__qualname__))


def assert_all_xlr_errors(classes: list[type[BaseException]]) -> None:
    offenders = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, XlrError)]
    assert not offenders, (
        f"{len(offenders)} exception class(es) do not subclass xlr.errors.XlrError: {', '.join(offenders)}. "
        "Fix: add the base, keeping the builtin one, e.g. `class WinRateError(XlrError, ValueError):`."
    )


MODULES, IMPORT_FAILURES = _modules()
CLASSES = error_classes(MODULES)


def test_every_xlr_module_imports():
    assert not IMPORT_FAILURES, "these modules could not be imported, so their error classes are unchecked: " + "; ".join(
        f"{m}: {why}" for m, why in IMPORT_FAILURES.items()
    )


def test_every_exception_class_in_xlr_subclasses_xlr_error():
    # the known ones are found (the scan is not vacuous), then every one found has the base
    names = {f"{c.__module__}.{c.__qualname__}" for c in CLASSES}
    assert {
        "xlr.errors.XlrError",
        "xlr.config.ParamsError",
        "xlr.data.DataError",
        "xlr.paths.DataRootNotFound",
        "xlr.files.DiskFull",
        "xlr.winrate.WinRateError",
    } <= names, sorted(names)
    assert_all_xlr_errors(CLASSES)


def test_the_check_names_a_class_without_the_base(tmp_path, monkeypatch):
    # a throwaway module, imported like any xlr module: one class lacks the base, one has it, one is only re-exported
    (tmp_path / "xlr_throwaway_errors.py").write_text(
        "from xlr.errors import XlrError\n"
        "from xlr.data import DataError\n"
        "class ForgotTheBase(ValueError):\n    pass\n"
        "class HasTheBase(XlrError, RuntimeError):\n    pass\n"
        "class NotAnError:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("xlr_throwaway_errors")
    try:
        found = error_classes([mod])
        assert [c.__qualname__ for c in found] == ["ForgotTheBase", "HasTheBase"]  # DataError belongs to xlr.data
        with pytest.raises(AssertionError, match=r"1 exception class\(es\) do not subclass .*: xlr_throwaway_errors\.ForgotTheBase\."):
            assert_all_xlr_errors(found)
        assert_all_xlr_errors([c for c in found if c.__qualname__ != "ForgotTheBase"])
    finally:
        sys.modules.pop("xlr_throwaway_errors", None)


def test_errors_module_imports_nothing_from_xlr():
    tree = ast.parse((XLR_DIR / "errors.py").read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m == "xlr" or m.startswith("xlr.")], imported


def _instance(cls: type[BaseException], marker: str) -> BaseException:
    """An instance of ``cls`` whose message contains ``marker``; classes with their own constructor are listed here."""
    if cls.__module__ == "xlr.paths" and cls.__qualname__ == "DataRootNotFound":
        return cls([f"/nowhere/{marker}"])
    try:
        return cls(marker)
    except TypeError as e:
        pytest.fail(f"{cls.__module__}.{cls.__qualname__}({marker!r}) failed ({e}). Fix: add its constructor arguments to _instance.")


@pytest.mark.parametrize("cls", CLASSES, ids=[f"{c.__module__}.{c.__qualname__}" for c in CLASSES])
def test_every_xlr_error_reaches_the_clear_error_exit(cls, monkeypatch, capsys):
    import xlr.cli

    marker = f"boom-{cls.__qualname__}: field x. Fix: y"
    exc = _instance(cls, marker)
    assert marker in str(exc)

    def raise_it(args):
        raise exc

    monkeypatch.setattr(xlr.cli, "cmd_params", raise_it)  # build_parser binds `xlr params` to it when main runs
    try:
        code = xlr.cli.main(["params", "--schema"])
    except BaseException as e:  # noqa: BLE001 - the point: nothing may escape main
        pytest.fail(f"{cls.__module__}.{cls.__qualname__} escaped xlr.cli.main: {type(e).__name__}: {e}")
    out, err = capsys.readouterr()
    assert code == CLEAR_ERROR_EXIT, (code, err)
    assert f"xlr: error: {exc}" in err, err
    assert marker in err
    assert "Traceback" not in out + err
