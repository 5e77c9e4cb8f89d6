"""Kill points for the kill-anywhere / resume harness (``tests/test_resume.py``).

A real run is hours of sampling, training and paid judge calls; xlr promises that a SIGKILL at any moment loses
at most the unit of work in flight (a shard, a training step since the last checkpoint, one judgment) and that
the resumed run ends with the same artifacts. To test that promise at chosen moments *inside* each stage, the
stages call :func:`point` at the places where work is committed (a shard written, a checkpoint saved, a judgment
cached, a stage's artifacts written but not yet recorded in the manifest, a report page written).

``XLR_KILL_AT="<stage key>:<event>[#n]"`` (e.g. ``iter1/sampling:shard#2``, ``judging:judgment#5``,
``anchor:checkpoint``) makes the n-th (default first) passage through that point SIGKILL the whole run: first
the ``xlr`` process (its pid is in ``XLR_RUN_PID``, set by the CLI, inherited by the notebook kernels), then the
current process (the kernel, under papermill). Without the variable a point costs one dict lookup. Hand-written:
no library offers deterministic kill points inside another program's stages.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "XLR_KILL_AT"
RUN_PID_ENV = "XLR_RUN_PID"

stage: str = ""  # the stage key being run in this process ("iter1/sampling", "report", ...)
_passed: Counter[str] = Counter()


def set_stage(key: str) -> None:
    global stage
    stage = key


def point(event: str) -> None:
    """A commit point of the current stage; SIGKILLs the run when ``XLR_KILL_AT`` names its n-th passage."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition("#")
    name = f"{stage}:{event}"
    if name != target:
        return
    _passed[name] += 1
    if _passed[name] != int(nth or 1):
        return
    run_pid = int(os.environ.get(RUN_PID_ENV, "0") or 0)
    if run_pid and run_pid != os.getpid():
        try:
            os.kill(run_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.kill(os.getpid(), signal.SIGKILL)
