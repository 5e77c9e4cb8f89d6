"""Several processes (one per GPU) under ``accelerate launch`` / ``torchrun``.

The launcher starts the same ``xlr`` command once per GPU and tells each process who it is through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Without those variables, or with
``WORLD_SIZE=1``, every helper here is a no-op and xlr runs as one process.

Conventions:

- rank 0 (the *main* process) alone writes the run manifest and the stage artifacts (:class:`xlr.runs.Run` enforces it
  for the manifest); the other ranks compute their share and read;
- the collectives (:func:`barrier`, :func:`all_gather_object`, :func:`gather_object`, and on them
  :func:`xlr.rewards.annotate_sharded`; :meth:`xlr.runs.Run.sync`) must be called by EVERY rank,
  in the same order; none of them is hidden inside a method only the main process calls;
- control traffic (barriers, the gathered reward rows) goes over a gloo (CPU) group, also when the default group is
  NCCL: it needs no GPU memory and waits as long as ``XLR_DIST_TIMEOUT_S`` (default :data:`DEFAULT_TIMEOUT_S`), so the
  other ranks can wait at a barrier while the main process runs a stage alone;
- a failed or killed rank ends the whole launch (the launcher stops the others), and the manifest records a stage done
  only after the main process gathered every rank's work, so a rerun resumes as after a single-process kill.
"""

from __future__ import annotations

import heapq
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar

from xlr.errors import XlrError

DEFAULT_TIMEOUT_S = 24 * 3600
TIMEOUT_ENV = "XLR_DIST_TIMEOUT_S"
_STATE: dict[str, Any] = {}
T = TypeVar("T")


class DistributedError(XlrError, RuntimeError):
    pass


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(
            f"environment variable {name}={value!r} is not an integer. "
            "Fix: unset it, or launch with accelerate launch / torchrun, which set it."
        ) from None


def world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) of this process: from the process group once it exists, else from the
    environment the launcher sets (RANK, WORLD_SIZE, LOCAL_RANK); (0, 1, 0) for a plain single process."""
    local = _env_int("LOCAL_RANK", 0)
    dist = sys.modules.get("torch.distributed")  # not imported: no group can exist (and is_main() stays free of importing torch)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise DistributedError(
            f"RANK={rank}, WORLD_SIZE={size}: need 0 <= RANK < WORLD_SIZE. Fix: launch with accelerate launch / torchrun, or unset both."
        )
    return rank, size, local


def is_main() -> bool:
    """True on rank 0, and in a single process: the process that writes the manifest and the artifacts."""
    return world()[0] == 0


def local_device(device: str) -> str:
    """``"cuda"`` -> ``"cuda:<LOCAL_RANK>"`` (this process's own GPU) under several processes; anything else unchanged."""
    _, size, local = world()
    return f"cuda:{local}" if device == "cuda" and size > 1 else device


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() else None


def _timeout() -> timedelta:
    return timedelta(seconds=_env_int(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


def init() -> bool:
    """Join the launch's process group (default backend NCCL when CUDA is visible, with this process bound to GPU
    ``LOCAL_RANK``, so ``device="cuda"`` means its own GPU; gloo on CPU) and make the gloo group the collectives here
    use. True when running as several processes. Idempotent; a no-op returning False for a single process. Also
    joins a group someone else (accelerate) initialised. Every rank must call it (the helpers below call it)."""
    _, size, local = world()
    if size <= 1:
        return False
    if "cpu_group" in _STATE:
        return True
    dist = _dist()
    if dist is None:
        raise DistributedError(
            f"WORLD_SIZE={size} but this torch build has no torch.distributed. "
            "Fix: install a torch with distributed support, or run one process."
        )
    import torch

    if not dist.is_initialized():
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise DistributedError(
                f"WORLD_SIZE={size} but {', '.join(missing)} not set. Fix: start xlr with `accelerate launch -m xlr.cli ...` or "
                "`torchrun --nproc_per_node N -m xlr.cli ...` (they set it), or unset WORLD_SIZE for one process."
            )
        backend = "gloo"
        if torch.cuda.is_available():
            if local >= torch.cuda.device_count():
                raise DistributedError(
                    f"LOCAL_RANK={local} but {torch.cuda.device_count()} CUDA device(s) visible. Fix: launch at most one process per GPU "
                    "(--num_processes / --nproc_per_node), or check CUDA_VISIBLE_DEVICES."
                )
            torch.cuda.set_device(local)
            backend = "nccl"
        dist.init_process_group(backend, timeout=_timeout())
    elif torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)
    _STATE["cpu_group"] = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=_timeout())
    return True


def shutdown() -> None:
    """Leave the process group (at the end of the command, on every rank); a no-op when none was joined."""
    dist = _dist()
    if "cpu_group" in _STATE and dist is not None and dist.is_initialized():
        dist.destroy_process_group()
    _STATE.clear()


def barrier() -> None:
    """Wait until every rank got here (a no-op for one process)."""
    if init():
        _dist().barrier(group=_STATE["cpu_group"])


def main_only(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Decorator: ``fn`` runs on the main process only; elsewhere the call returns None. No barrier inside (call
    :func:`barrier` or :meth:`xlr.runs.Run.sync` on every rank where the others must wait for what it wrote)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        return fn(*args, **kwargs) if is_main() else None

    return wrapper


# ----------------------------------------------------------------------------------------------------------------
# work across ranks: a balanced shard plan, and the objects of every rank gathered (xlr.rewards.annotate_sharded uses both)


def shard_units(costs: Sequence[float], world_size: int) -> list[list[int]]:
    """Units (by index) assigned to ``world_size`` shards, balancing the summed cost: the costliest unit first to the
    least loaded shard (ties: lower unit index, lower shard), so every rank computes the same plan. Each shard's
    units in ascending order."""
    if world_size < 1:
        raise DistributedError(f"world_size={world_size}: need at least 1")
    heap = [(0.0, r) for r in range(world_size)]
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for u in sorted(range(len(costs)), key=lambda u: (-costs[u], u)):
        load, r = heapq.heappop(heap)
        shards[r].append(u)
        heapq.heappush(heap, (load + costs[u], r))
    return [sorted(s) for s in shards]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; a collective over the gloo group (every rank
    calls it). One process: ``[obj]``."""
    if not init():
        return [obj]
    dist = _dist()
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_STATE["cpu_group"])
    return out


def gather_object(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable), in rank order, on the main process, and None on the others; a collective
    over the gloo group (every rank calls it). One process: ``[obj]``."""
    if not init():
        return [obj]
    dist = _dist()
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0, group=_STATE["cpu_group"])
    return out
