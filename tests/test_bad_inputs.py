"""Bad input the other test files do not reach: a clear error naming the file/field and the fix, nothing lost."""

from __future__ import annotations

import errno
import math
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from conftest import write_jsonl

from xlr import data
from xlr.files import DiskFull, atomic_write_json, atomic_write_text


def test_language_without_an_xalpacaeval_file(tmp_path):
    write_jsonl(tmp_path / "x-alpacaeval/prompts/en.jsonl", [{"id": 0, "instruction": "Hi", "dataset": "helpful_base"}])
    with pytest.raises(data.DataError) as e:
        data.load_xalpacaeval("yo", data_dir=tmp_path)
    msg = str(e.value)
    assert "yo" in msg and "not found under data root" in msg and "Fix:" in msg


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


@contextmanager
def disk_full(module: str) -> Iterator[None]:
    """Every fsync in ``module`` (e.g. "xlr.files") fails as on a full disk (also used by catalog_bad_inputs.py)."""
    with mock.patch(f"{module}.os.fsync", _enospc):
        yield


@contextmanager
def non_finite_log_probs(value: float = math.nan) -> Iterator[None]:
    """The reward scorer's first sequence log-prob becomes ``value`` (also used by catalog_bad_inputs.py)."""
    from xlr import rewards

    real = rewards._forward_scores

    def poisoned(*a, **k):
        out = real(*a, **k)
        out[0] = value
        return out

    with mock.patch.object(rewards, "_forward_scores", poisoned):
        yield


def test_disk_full_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "stage" / "pairs.json"
    atomic_write_json(target, {"old": True})
    with disk_full("xlr.files"):
        with pytest.raises(DiskFull) as e:
            atomic_write_text(target, "x" * 1000)
        msg = str(e.value)
        assert str(target) in msg and "disk is full" in msg and "previous version of the file is intact" in msg and "Fix: free space" in msg
        assert target.read_text() == '{\n  "old": true\n}\n'
        assert [p.name for p in target.parent.iterdir()] == ["pairs.json"]  # no temp file left behind
        with pytest.raises(DiskFull, match="the file was not created"):
            atomic_write_text(tmp_path / "new.json", "{}")
        assert not (tmp_path / "new.json").exists()


def test_disk_full_while_caching_a_judgment_loses_no_earlier_judgment(tmp_path):
    from xlr.judge import JudgeCache

    path = tmp_path / "cache.jsonl"
    cache = JudgeCache(path)
    cache.put({"key": "a", "p": 0.25})
    with disk_full("xlr.judge"), pytest.raises(OSError, match="could not append a judgment .*judgments cached before it are intact"):
        cache.put({"key": "b", "p": 0.75})
    cache.put({"key": "c", "p": 0.5})
    again = JudgeCache(path)
    assert again.entries["a"]["p"] == 0.25 and again.entries["c"]["p"] == 0.5


def test_nan_log_prob_is_an_error_naming_the_pair_and_the_fix():
    from xlr import rewards
    from xlr.models import load_model

    model, tok = load_model("tiny:0")
    for value in (math.nan, math.inf, -math.inf):
        with non_finite_log_probs(value), pytest.raises(rewards.RewardError) as e:
            rewards.score_models([model], tok, ["What is 2+2?"], ["4"])
        msg = str(e.value)
        assert "non-finite log-probability" in msg and "What is 2+2?" in msg and "reward.dtype: fp32" in msg
    assert all(math.isfinite(v) for v in rewards.score_models([model], tok, ["What is 2+2?"], ["4"])[0])  # patch undone
