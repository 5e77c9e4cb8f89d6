"""The base of every error xlr raises on purpose.

Bad input, a run that cannot proceed, a model that fails its hash...: each such error class subclasses
:class:`XlrError` (beside its builtin base, e.g. ``class WinRateError(XlrError, ValueError)``, so an existing
``except ValueError`` still catches it). Its message names the file, the field and the fix, and the CLI
(:func:`xlr.cli.main`) prints it as ``xlr: error: <message>`` without a traceback and exits 2.

This module imports nothing from xlr, so any module can import it.
"""

from __future__ import annotations


class XlrError(Exception):
    """An error xlr raises on purpose; the message names the file, field and fix. The CLI prints it without a traceback."""
