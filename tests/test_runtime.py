"""Every bf16 choice goes through one capability check (issue 15): with the check forced either way, runtime.dtype,
reward.dtype / anchor.score_dtype and the DPO head resolve to bf16 only where bf16 is fast, fall back to fp32 with the
reason in the manifest and the report's provenance, or stop with an error naming the field (runtime.bf16: require)."""

from pathlib import Path

import pytest
import torch

from xlr import report, runtime, stages
from xlr.config import load_params
from xlr.runs import Run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def slow_bf16(monkeypatch):
    """As measured on an AMD EPYC without AVX-512: 'bf16 matmul only 0.01x fp32'."""
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: 0.01)


@pytest.fixture
def fast_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: 3.0)


def test_scoring_precision_falls_back_to_fp32_where_bf16_is_slow(slow_bf16):
    for name in ("bf16", "bf16-fp32head"):
        dtype, fp32_head, used, why = runtime.scoring_precision(name, "reward.dtype", "cpu", "fallback")
        assert (dtype, fp32_head, used) == (torch.float32, True, "fp32")
        assert "0.01x" in why and name in why
    assert runtime.scoring_precision("fp32", "reward.dtype")[:3] == (torch.float32, True, "fp32")


def test_scoring_precision_keeps_bf16_where_it_is_fast(fast_bf16):
    assert runtime.scoring_precision("bf16-fp32head", "reward.dtype")[:3] == (torch.bfloat16, True, "bf16-fp32head")
    assert runtime.scoring_precision("bf16", "reward.dtype")[:3] == (torch.bfloat16, False, "bf16")


def test_require_refuses_slow_bf16_naming_the_field(slow_bf16):
    with pytest.raises(runtime.PrecisionError, match=r"anchor\.score_dtype.*0\.01x.*Fix: set runtime\.bf16: fallback"):
        runtime.scoring_precision("bf16-fp32head", "anchor.score_dtype", "cpu", "require")
    with pytest.raises(runtime.PrecisionError, match=r"runtime\.dtype"):
        runtime.resolve_dtype("bf16", "cpu", "require")
    with pytest.raises(runtime.PrecisionError, match=r"training\.head"):
        runtime.dpo_head("bf16", torch.float32, "training.head", "cpu", "require")
    # fp32 choices never consult the check
    assert runtime.resolve_dtype("fp32", "cpu", "require")[0] == torch.float32
    assert runtime.dpo_head("trl-compact", torch.float32, "training.head", "cpu", "require")[0] == "trl-compact"


def test_runtime_dtype_explicit_bf16_goes_through_the_check(slow_bf16):
    dtype, why = runtime.resolve_dtype("bf16", "cpu", "fallback")
    assert dtype == torch.float32 and "fp32 instead of bf16" in why
    assert runtime.resolve_dtype("auto", "cpu")[0] == torch.float32


def test_runtime_dtype_bf16_where_fast(fast_bf16):
    assert runtime.resolve_dtype("bf16", "cpu", "require")[0] == torch.bfloat16
    assert runtime.resolve_dtype("auto", "cpu")[0] == torch.bfloat16


def test_dpo_head_reason_says_what_the_head_computes_in(slow_bf16):
    head, why = runtime.dpo_head("bf16", torch.float32, "anchor.head", "cpu", "fallback")
    assert head == "bf16" and "in float32" in why  # the tiled head runs in the (fp32) model's dtype


def test_fallback_reaches_manifest_and_report(slow_bf16, tmp_path, monkeypatch):
    monkeypatch.setenv("XLR_RUNS_DIR", str(tmp_path / "runs"))
    params = load_params(REPO / "params/smoke.yaml", {"reward": {"dtype": "bf16-fp32head"}, "anchor": {"score_dtype": "bf16"}})
    run = Run.open(params)
    assert stages.scoring_precision(params, params.reward.dtype, "reward.dtype", run)[:3] == (torch.float32, True, "fp32")
    stages.scoring_precision(params, params.anchor.score_dtype, "anchor.score_dtype", run)
    prec = run.manifest["runtime"]["precision"]
    assert prec["reward.dtype"]["requested"] == "bf16-fp32head" and prec["reward.dtype"]["used"] == "fp32"
    assert prec["anchor.score_dtype"]["used"] == "fp32" and "0.01x" in prec["anchor.score_dtype"]["reason"]
    row = dict(report.provenance_rows(params, run))["precision"]
    assert "reward.dtype: fp32 (FELL BACK from bf16-fp32head)" in row and "anchor.score_dtype: fp32 (FELL BACK from bf16)" in row
    stages.record_precision(run, "runtime.dtype", "auto", "fp32", "fp32 (auto: ...)")  # auto -> fp32 is a choice, not a fallback
    assert run.manifest["runtime"]["precision"]["runtime.dtype"]["fell_back"] is False
    assert "runtime.dtype: fp32 —" in dict(report.provenance_rows(params, run))["precision"]


def test_require_in_params_stops_the_stage(slow_bf16, tmp_path, monkeypatch):
    monkeypatch.setenv("XLR_RUNS_DIR", str(tmp_path / "runs"))
    params = load_params(REPO / "params/smoke.yaml", {"reward": {"dtype": "bf16"}, "runtime": {"bf16": "require"}})
    with pytest.raises(runtime.PrecisionError, match="reward.dtype"):
        stages.scoring_precision(params, params.reward.dtype, "reward.dtype", Run.open(params))
