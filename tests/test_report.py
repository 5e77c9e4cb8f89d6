"""Report helpers that the smoke run does not reach: the reward-variant comparison (paper Fig. 3)."""

import json
from pathlib import Path

from xlr import plots, report
from xlr.config import load_params
from xlr.runs import Run

REPO = Path(__file__).resolve().parents[1]


def _summary(root: Path, wr: dict[str, float]) -> None:
    rows = [
        {
            "model": m,
            "lang": lang,
            "win_rate": w + (m == "pi1"),
            "win_rate_ci95": [w - 2, w + 2],
            "length_controlled_winrate": w - 1,
            "lc_ci95": [w - 3, w + 1],
        }
        for lang, w in wr.items()
        for m in ("pi_ref", "pi0", "pi1")
    ]
    (root / "eval").mkdir(parents=True, exist_ok=True)
    (root / "eval/summary.json").write_text(json.dumps({"rows": rows}))


def test_reward_variants_finds_runs_that_differ_only_in_the_variant():
    base = load_params(REPO / "params/smoke.yaml", {"iterations": 1})
    run = Run.open(base)
    rm = Run.open(load_params(REPO / "params/smoke.yaml", {"iterations": 1, "name": "smoke-rm", "reward": {"variant": "R_m"}}))
    Run.open(load_params(REPO / "params/smoke.yaml", {"iterations": 1, "name": "smoke-rt-seed7", "seed": 7, "reward": {"variant": "R_t"}}))
    found = report.variant_runs(base, run)
    assert found == {"R_c": run.root, "R_m": rm.root}  # the R_t run also changed the seed: not comparable
    assert plots.reward_variants(found) is None  # no evaluation yet: nothing to compare
    _summary(run.root, {"en": 40.0, "zh": 30.0})
    _summary(rm.root, {"en": 35.0, "zh": 20.0})
    fig = plots.reward_variants(found)
    ax_wr, ax_lc = fig.axes[:2]
    assert ax_wr.get_title() == "win rate of the final policy" and ax_wr.get_ylabel() == "win rate [%]" and ax_wr.get_xlabel() == "language"
    assert [t.get_text() for t in ax_wr.get_legend().get_texts()] == ["R_c (pi1)", "R_m (pi1)"]
    heights = sorted(round(p.get_height(), 6) for p in ax_wr.patches)
    assert heights == [21.0, 31.0, 36.0, 41.0]  # the final policy's (pi1) win rates, not pi_ref's or pi0's
    assert sorted(round(p.get_height(), 6) for p in ax_lc.patches) == [19.0, 29.0, 34.0, 39.0]
    assert fig._suptitle.get_text().startswith("Reward variants side by side")


def test_the_token_mask_choice_is_visible_in_the_provenance(tmp_path, monkeypatch):
    """Issue 16: the paper files set reward.parity icr deliberately; the report's provenance row 'reward' names the mask
    (icr: the reference code's) so a reader sees which one a run used; the CPU files keep the corrected one."""
    monkeypatch.setenv("XLR_RUNS_DIR", str(tmp_path / "runs"))
    for name, mask in (
        ("paper-llama3-8b", "'icr': the reference code's"),
        ("paper-lowres", "'icr': the reference code's"),
        ("cpu", "'none'"),
    ):
        params = load_params(REPO / f"params/{name}.yaml")
        row = dict(report.provenance_rows(params, Run.open(params)))["reward"]
        assert mask in row, (name, row)


def test_the_model_check_counts_the_languages_it_has_no_prompt_for(tmp_path, monkeypatch, caplog):
    """Issue 16 fix 11: a language without a check prompt is counted in the stage and named in a warning, not skipped
    without a word."""
    from xlr import stages

    monkeypatch.setenv("XLR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(stages, "CHECK_PROMPTS", {k: v for k, v in stages.CHECK_PROMPTS.items() if k != "de"})
    params = load_params(REPO / "params/smoke.yaml", {"judge": {"backend": "none"}})
    run = Run.open(params)
    with caplog.at_level("WARNING"):
        answers = stages.stage_models(params, run)
    counts = run.manifest["stages"]["models"]["counts"]
    assert counts["languages_not_checked"] == ["de"] and counts["languages_checked"] == 2 and set(answers["pi_ref"]) == {"en", "zh"}
    assert "no check prompt for de" in caplog.text
