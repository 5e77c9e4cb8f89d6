"""Threads, device and dtype: set once, deliberately, and recorded in the run manifest.

On a shared 2-core machine oversubscribed threads made torch steps ~100x slower, so xlr sets torch's
intra-op threads to the cores this process may use (or ``runtime.threads``) and inter-op threads to 1.
"""

from __future__ import annotations

import os
import time
from typing import Any

from xlr.errors import XlrError

_STATE: dict[str, Any] = {}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_threads(n: int | None = None) -> int:
    """Set torch's threads once per process; returns the intra-op thread count in force."""
    import torch

    n = n or available_cores()
    torch.set_num_threads(n)
    if not _STATE.get("interop_set"):
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already started parallel work; keep what is there
            pass
        _STATE["interop_set"] = True
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _STATE["threads"] = n
    return n


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is visible. Fix: set runtime.device: auto or cpu.")
    return device


def cpu_bf16_speedup(size: int = 512, repeats: int = 5) -> float:
    """Measured fp32/bf16 time ratio of a square matmul on this CPU (> 1: bf16 is faster). Cached per process."""
    if "bf16_speedup" in _STATE:
        return _STATE["bf16_speedup"]
    import torch

    def best(dtype: Any) -> float:
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    _STATE["bf16_speedup"] = best(torch.float32) / best(torch.bfloat16)
    return _STATE["bf16_speedup"]


BF16_MIN_SPEEDUP = 1.2  # bf16 is used on a CPU only where a measured matmul is at least this much faster than fp32


class PrecisionError(XlrError, RuntimeError):
    """A params field demands bf16 (runtime.bf16: require) on a device where bf16 is slower than fp32."""


def bf16_capability(device: str = "cpu") -> tuple[bool, str]:
    """(bf16 is fast here, the evidence in words). CUDA: the device reports bf16 support. CPU: a measured matmul
    (:func:`cpu_bf16_speedup`) is >= BF16_MIN_SPEEDUP x fp32. Where bf16 is emulated (CPUs without AVX-512/AMX) the check
    fails by far (the numbers: bench/RESULTS.md, Sampling)."""
    if device.startswith("cuda"):
        import torch

        ok = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return ok, "CUDA device supports bf16" if ok else "this CUDA device has no bf16 support"
    ratio = cpu_bf16_speedup()
    if ratio >= BF16_MIN_SPEEDUP:
        return True, f"bf16 matmul measured {ratio:.2f}x fp32 on this CPU"
    return False, f"bf16 matmul measured only {ratio:.2f}x fp32 on this CPU (bf16 is emulated or slow here)"


def check_bf16(field: str, device: str = "cpu", policy: str = "fallback") -> tuple[bool, str]:
    """Every bf16 choice in params goes through here: (use bf16, reason recorded in the manifest).

    ``policy`` is runtime.bf16: ``fallback`` uses fp32 where bf16 is slower (and says so); ``require`` stops with an
    error naming the field. Neither runs silently slower."""
    ok, evidence = bf16_capability(device)
    if ok:
        return True, f"bf16 ({evidence})"
    if policy == "require":
        raise PrecisionError(
            f"{field} asks for bf16 and runtime.bf16 is 'require', but {evidence}. "
            f"Fix: set runtime.bf16: fallback (fp32 is used and recorded), or set {field} to fp32, or run on a CPU with native bf16 (AMX / AVX512-BF16)."
        )
    return False, f"fp32 instead of bf16 ({evidence}; runtime.bf16: fallback)"


def resolve_dtype(dtype: str = "auto", device: str = "cpu", policy: str = "fallback") -> tuple[Any, str]:
    """(torch dtype, reason) of runtime.dtype. 'auto': bf16 where :func:`bf16_capability` says it is fast, else fp32;
    an explicit 'bf16' goes through the same check (:func:`check_bf16`, ``policy`` = runtime.bf16)."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype == "auto":
        ok, evidence = bf16_capability(device)
        return (torch.bfloat16, f"bf16 (auto: {evidence})") if ok else (torch.float32, f"fp32 (auto: {evidence})")
    if dtype == "bf16":
        ok, why = check_bf16("runtime.dtype", device, policy)
        return (torch.bfloat16 if ok else torch.float32), why
    return table[dtype], f"{dtype} (set in params)"


def scoring_precision(name: str, field: str = "reward.dtype", device: str = "cpu", policy: str = "fallback") -> tuple[Any, bool, str, str]:
    """A scoring precision name (reward.dtype / anchor.score_dtype: fp32, bf16, bf16-fp32head) -> (torch dtype of the
    models, LM head in fp32, the name actually used, reason). bf16 names go through :func:`check_bf16`: where bf16 is
    slow they become fp32 (head and logsumexp are then fp32 too)."""
    import torch

    if name not in ("fp32", "bf16", "bf16-fp32head"):
        raise ValueError(f"{field} {name!r}: use fp32, bf16 or bf16-fp32head")
    if name == "fp32":
        return torch.float32, True, "fp32", "fp32 (set in params)"
    ok, why = check_bf16(field, device, policy)
    if not ok:
        return torch.float32, True, "fp32", f"{name} requested: {why}"
    return torch.bfloat16, name != "bf16", name, f"{name}: {why}"


def dpo_head(head: str, model_dtype: Any, field: str = "anchor.head", device: str = "cpu", policy: str = "fallback") -> tuple[str, str]:
    """(head for train_dpo, reason). xlr's ``bf16`` head (xlr.train) runs its tiled matmuls in the model's dtype: with
    an fp32 model (runtime.dtype resolved to fp32) it is an fp32 head. A ``bf16`` head goes through :func:`check_bf16`
    so that ``require`` refuses it where bf16 is slow; the reason records what the head actually computes in."""
    import torch

    if head != "bf16":
        return head, f"{head} (trl's fused head, model dtype {str(model_dtype).removeprefix('torch.')})"
    ok, why = check_bf16(field, device, policy)
    if model_dtype == torch.bfloat16 and ok:
        return head, f"xlr tiled head in bf16 ({why})"
    return head, f"xlr tiled head in {str(model_dtype).removeprefix('torch.')} (the model's dtype; bf16 head requested: {why})"


def release_memory() -> None:
    """Give freed memory back to the operating system: Python's cyclic GC, then glibc's ``malloc_trim``.

    Written by hand because neither torch nor Python trims glibc's heap: after a DPO training, freed tensors stayed in
    it, with or without ``gc.collect()``, and the accuracy pass loaded two models on top of them (measured:
    bench/RESULTS.md, the anchor's memory). A no-op where the C library is not glibc."""
    import ctypes
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # musl and others have no malloc_trim: nothing to give back this way
            pass


def cpu_name() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), which every timing in bench/RESULTS.md states."""
    import platform
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"
