"""Threads, device and dtype: set once, deliberately, and recorded in the run manifest.

On a shared 2-core machine oversubscribed threads made torch steps ~100x slower, so xlr sets torch's
intra-op threads to the cores this process may use (or ``runtime.threads``) and inter-op threads to 1.
"""

from __future__ import annotations

import os
import time
from typing import Any

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


def resolve_dtype(dtype: str = "auto", device: str = "cpu") -> tuple[Any, str]:
    """(torch dtype, reason). 'auto': bf16 on CUDA; on CPU bf16 only where a measured matmul is faster."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype != "auto":
        return table[dtype], f"{dtype} (set in params)"
    if device == "cuda":
        return torch.bfloat16, "bf16 (auto: CUDA)"
    ratio = cpu_bf16_speedup()
    if ratio > 1.2:
        return torch.bfloat16, f"bf16 (auto: measured {ratio:.1f}x faster than fp32 matmul on this CPU)"
    return torch.float32, f"fp32 (auto: bf16 matmul only {ratio:.2f}x fp32 on this CPU)"


def release_memory() -> None:
    """Give freed memory back to the operating system: Python's cyclic GC, then glibc's ``malloc_trim``.

    Written by hand because neither torch nor Python trims glibc's heap: after a DPO training, freed tensors stayed in
    it (measured on the anchor stage here: 6.4 GiB resident after ``train_dpo`` returned, with or without
    ``gc.collect()``; 2.6 GiB once trimmed, with both scoring models loaded), and the accuracy pass loaded two models
    on top of them. A no-op where the C library is not glibc."""
    import ctypes
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # musl and others have no malloc_trim: nothing to give back this way
            pass
