import json
import subprocess
import sys
from pathlib import Path

import pytest

from xlr.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "params", "data", "models"):
        assert cmd in out


def test_console_script_installed():
    exe = Path(sys.executable).parent / "xlr"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "cross-lingual" in r.stdout


def test_params_command(capsys, tmp_path):
    assert main(["params", *map(str, sorted((REPO / "params").glob("*.yaml")))]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: {pi_ref: tiny:0}\nsampling: {n_samples: 0}\n")
    assert main(["params", str(bad)]) == 1
    assert "sampling.n_samples" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_data_check_table(capsys):
    assert main(["data", "check", "--data-dir", str(SHARED)]) == 0
    out = capsys.readouterr().out
    n_files = sum(1 for line in (SHARED / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert "ultrafeedback-prompts/de.jsonl" in out and f"{n_files} files, 0 with problems" in out


def test_models_list(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-coder-0.5b-instruct" in out and "smollm2-135m-instruct" in out


def test_run_error_is_clear(capsys, tmp_path):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "params file not found" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_smoke_study_two_iterations_end_to_end(capsys, tmp_path):
    """The README's sequence at smoke size: notebooks under papermill, every stage, every report with its figures."""
    assert main(["run", str(REPO / "params/smoke.yaml")]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs/smoke"
    m = json.loads((run / "manifest.json").read_text())
    keys = ["data", "models", "anchor"] + [f"iter{t}/{s}" for t in (1, 2) for s in ("sampling", "rewards", "pairs", "training")]
    keys += ["generation", "judging", "metrics"]
    assert all(m["stages"][k]["status"] == "done" for k in keys), {k: m["stages"].get(k, {}).get("status") for k in keys}
    assert m["stages"]["data"]["counts"]["train_prompts"] == {"en": 4, "de": 4}
    assert m["runtime"]["threads"] == 2
    acc = json.loads((run / "anchor/reward_accuracy.json").read_text())
    assert acc["n"] + acc["ties_excluded"] == 8 and 0 <= acc["accuracy"] <= 1
    # iteration 2 samples from pi^1; both iterations are rewarded by the fixed (pi0, pi_ref)
    assert m["stages"]["iter2/sampling"]["policy"] == str(run / "iter1/training/adapter")  # save_merged: false -> adapter
    assert m["stages"]["iter2/rewards"]["policy"] == str(run / "anchor/model") and m["stages"]["iter2/rewards"]["reference"] == "tiny:0"
    assert m["stages"]["iter2/training"]["start"] == str(run / "iter1/training/adapter")
    assert (run / "iter2/training/adapter/xlr_model.json").is_file() and not (run / "iter2/training/model").exists()
    assert m["stages"]["iter1/training"]["loss_type"] == ["sigmoid", "sft"]
    for t in (1, 2):
        metrics = json.loads((run / f"iter{t}/training/metrics.json").read_text())
        assert any("rewards/margins" in h for h in metrics)
    check_evaluation(run)
    check_reports(tmp_path / "reports/smoke", run)
    assert "Report:" in out and "index.html" in out
    # rerun: every stage is skipped (no attempt added), the reports are rebuilt
    assert main(["run", str(REPO / "params/smoke.yaml")]) == 0
    again = json.loads((run / "manifest.json").read_text())
    assert all(
        again["stages"][k]["attempts"] == m["stages"][k]["attempts"] and again["stages"][k]["finished"] == m["stages"][k]["finished"]
        for k in keys
    )


def check_reports(rep, run):
    import nbformat

    pages = [
        "01_data",
        "02_anchor",
        "03_sampling_rewards-iter1",
        "04_pairs_dpo-iter1",
        "03_sampling_rewards-iter2",
        "04_pairs_dpo-iter2",
        "05_xalpacaeval",
        "06_summary",
    ]
    figures = {"02_anchor": 2, "03_sampling_rewards-iter1": 1, "04_pairs_dpo-iter1": 4, "05_xalpacaeval": 4, "06_summary": 2}
    for page in pages:
        nb = nbformat.read(run / "notebooks" / f"{page}.ipynb", as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)  # papermill ran it
        html = (rep / f"{page}.html").read_text()
        assert "these are OUR numbers, not the paper's" in html
        assert "study.run_stages(" not in html  # code hidden by default
        assert html.count("data:image/png;base64") >= figures.get(page, 0), page
        assert "Traceback" not in html
    index = (rep / "index.html").read_text()
    for text in (
        "X-AlpacaEval: win rate (WR) and length-controlled win rate (LC)",
        "length_controlled_noreg",
        "agreement with held-out English",
        "held-out English reward accuracy",
        "Wall time and peak memory per stage",
        "peak RSS [GiB]",
        "pi_ref",
        "tiny:0",
        "tiny:1",
        "a weak local judge",
        "seed 42",
        "git SHA",
        # the first screen: the four answers in order, the judge labelled, the paper's rows apart
        "1. Is pi0 a usable English reward here?",
        "2. Does pi0&#x27;s reward transfer across languages?",
        "3. Did the iterations change the policy?",
        "NOT INFORMATIVE",
        "4. The paper&#x27;s numbers for the same rows",
        "ICR iteration 2 (pi2)",
        "Language Confusion Benchmark",
    ):
        assert text in index, text
    first = index[index.index("id='first-screen'") :]
    assert (
        first.index("1. Is pi0")
        < first.index("2. Does pi0&#x27;s reward")
        < first.index("3. Did the iterations")
        < first.index("4. The paper")
    )
    assert index.count("data:image/png;base64") == 13
    assert all(f"href='{p}.html'" in index for p in pages)


def test_failed_notebook_names_the_cell_and_keeps_the_partial_notebook(capsys, tmp_path):
    assert main(["run", str(REPO / "params/smoke.yaml"), "--set", "judge.model=tiny-no-such-model"]) == 2
    err = capsys.readouterr().err
    assert (
        "notebook 01_data.ipynb" in err and "failed in cell" in err and "ModelError" in err and "partial executed notebook is kept" in err
    )
    partial = tmp_path / "runs/smoke/notebooks/01_data.ipynb"
    assert partial.is_file() and "tiny-no-such-model" in partial.read_text()
    m = json.loads((tmp_path / "runs/smoke/manifest.json").read_text())
    assert m["stages"]["data"]["status"] == "done" and m["stages"]["models"]["status"] == "failed"


def check_evaluation(run):
    """X-AlpacaEval artifacts of the smoke run: AlpacaEval-format outputs, judgments, metrics from them."""
    import math

    import numpy as np

    from xlr.files import read_jsonl

    models = ["pi_ref", "pi0", "pi1", "pi2"]
    ids = None
    summary = json.loads((run / "eval/summary.json").read_text())
    assert len(summary["rows"]) == len(models) * 2
    validation = json.loads((run / "eval/judge_validation.json").read_text())
    assert validation["n_items"] == 6 and len(read_jsonl(run / "eval/judge_validation.jsonl")) == 12  # both orders
    for lang in ("en", "zh"):
        for name in models:
            d = run / "eval" / name / lang
            outputs = json.loads((d / "outputs.json").read_text())
            assert len(outputs) == 12 and all({"generator", "dataset", "id", "instruction", "output"} <= set(o) for o in outputs)
            assert {o["generator"] for o in outputs} == {f"smoke/{name}"}
            ids = ids or [o["id"] for o in outputs]
            assert [o["id"] for o in outputs] == ids  # the same seeded subset for every model and language
            judgments = read_jsonl(d / "judgments.jsonl")
            assert len(judgments) == 12
            metrics = json.loads((d / "metrics.json").read_text())
            p = [r["p_model"] for r in judgments if not math.isnan(r["p_model"])]
            assert metrics["win_rate"] == pytest.approx(100 * np.mean(p))
            # the instruction difficulty rebuilt offline from the shipped AlpacaEval 2 annotations (no gamed baselines shipped)
            assert metrics["lc_variant"] == "length_controlled_noreg" and "length_controlled_winrate" in metrics
            if name == "pi0":
                assert not (d / "h2h_vs_pi0.jsonl").exists()
            else:
                h2h = read_jsonl(d / "h2h_vs_pi0.jsonl")
                assert len(h2h) == 24 and sum(r["model_first"] for r in h2h) == 12
                assert metrics["h2h_vs_pi0"]["n"] == 12


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_run_with_a_given_pi0_checks_core_artifacts(capsys, tmp_path):
    from xlr.files import read_jsonl

    assert (
        main(["run", str(REPO / "params/smoke.yaml"), "--set", "models.pi0=tiny:1", "--set", "iterations=1", "--only", "pairs", "--direct"])
        == 2
    )
    assert "needs the earlier stages done first" in capsys.readouterr().err  # --only pairs with nothing before it
    assert (
        main(
            [
                "run",
                str(REPO / "params/smoke.yaml"),
                "--set",
                "models.pi0=tiny:1",
                "--set",
                "iterations=1",
                "--set",
                "judge.backend=none",
                "--force",
                "--direct",
            ]
        )
        == 0
    )
    run = tmp_path / "runs/smoke"
    samples = [r for p in sorted((run / "iter1/sampling").glob("*/shard-*.jsonl")) for r in read_jsonl(p)]
    rewards = read_jsonl(run / "iter1/rewards/rewards.jsonl")
    assert len(samples) == len(rewards) == 2 * 4 * 3  # languages x prompts x N
    assert all(abs(r["reward"] - (r["policy_logp"] - r["reference_logp"])) < 1e-9 for r in rewards)
    de = [r for r in rewards if r["lang"] == "de"]
    assert all("using only German, unless explicitly instructed" in r["reward_prompt"] for r in de)
    stats = json.loads((run / "iter1/pairs/pairs_stats.json").read_text())
    pairs = read_jsonl(run / "iter1/pairs/pairs.jsonl")
    for lang in ("en", "de"):
        s = stats[lang]
        assert s["pairs"] + sum(v for k, v in s["drops"].items() if "(prompt)" in k) == 4
        assert set(s["fidelity"]) == {"samples", "chosen", "rejected"}
    assert len(pairs) == stats["en"]["pairs"] + stats["de"]["pairs"]
    m = json.loads((run / "manifest.json").read_text())
    assert "anchor" not in m["stages"] and m["stages"]["iter1/rewards"]["policy"] == "tiny:1"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_winrate_command_equals_the_published_leaderboard(capsys):
    """`xlr winrate --json` on AlpacaEval 2's own annotations: the win rate and its standard error are the published
    leaderboard's (alpaca_eval's definition); the LC variant is named."""
    import pandas as pd

    files = [SHARED / "alpaca-eval/annotations/claude-2.1.json.gz", SHARED / "alpaca-eval/annotations/phi-2.json.gz"]
    assert main(["winrate", *map(str, files), "--json", "--lc", "minimal"]) == 0
    rows = json.loads(capsys.readouterr().out)
    board = pd.read_csv(SHARED / "alpaca-eval/leaderboard.csv", index_col=0)
    assert [r["model"] for r in rows] == ["claude-2.1", "phi-2"]
    for r in rows:
        assert set(r) >= {"model", "n", "win_rate", "standard_error", "length_controlled_winrate", "lc_variant"}
        assert abs(r["win_rate"] - board.loc[r["model"], "win_rate"]) < 0.05
        assert abs(r["standard_error"] - board.loc[r["model"], "standard_error"]) < 0.01
        assert r["lc_variant"] == "length_controlled_minimal"
    assert main(["winrate", str(files[0]), "--lc", "minimal"]) == 0
    assert "claude-2.1" in capsys.readouterr().out


def test_winrate_command_bad_file_is_a_clear_error(capsys, tmp_path):
    bad = tmp_path / "ann.json"
    bad.write_text(json.dumps([{"instruction": "i", "output_1": "a", "output_2": "b", "generator_2": "m", "preference": 2.5}]))
    assert main(["winrate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "ann.json" in err and "preference" in err


def test_fidelity_command_json_shape(capsys, tmp_path):
    """`xlr fidelity --json` on a small file in the benchmark's outputs format: the JSON shape of the issue, percents."""
    import csv

    path = tmp_path / "outputs.csv"
    rows = [
        ("0", "m", "Die Katze schläft auf dem Sofa. Sie ist sehr müde und träumt von Mäusen.", "monolingual", "okapi", "de"),
        ("1", "m", "The cat is sleeping on the sofa. It is very tired and dreams of mice.", "monolingual", "okapi", "de"),
        ("2", "m", "Кошка спит на диване. Она очень устала и видит сны о мышах.", "crosslingual", "okapi", "ru"),
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "model", "completion", "task", "source", "language"])
        w.writerows(rows)
    assert main(["fidelity", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"monolingual", "crosslingual"}
    assert out["monolingual"]["de"]["lpr"] == pytest.approx(50.0)  # one German answer in German, one in English
    assert out["crosslingual"]["ru"]["lpr"] == pytest.approx(100.0)
    assert {"lpr", "wpr", "lcpr"} <= set(out["monolingual"]["all"])
    assert main(["fidelity", str(path)]) == 0
    assert "monolingual" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("id,model,completion,task,source,language\n0,m,hello,monolingual,okapi,xx\n")
    assert main(["fidelity", str(bad)]) == 2
    assert "bad.csv" in capsys.readouterr().err


def test_only_and_from_take_a_stage_or_one_step_of_an_iteration():
    """--only iter1/rewards selects that step alone (one command per stage under accelerate launch); --only rewards every
    iteration of it; a step whose earlier stages are not done is refused; an unknown name lists the valid ones."""
    from xlr.config import load_params
    from xlr.runs import Run
    from xlr.study import StudyError, plan, select_steps

    params = load_params(REPO / "params/smoke.yaml")
    run = Run.open(params)
    keys = [run.stage_key(n, i) for n, i in plan(params)]
    for key in keys[: keys.index("iter1/rewards")]:  # everything before iteration 1's rewards is done
        run.manifest["stages"][key] = {"status": "done", "artifacts": {}}
    assert select_steps(params, run, only="iter1/rewards") == [("rewards", 1)]
    with pytest.raises(StudyError, match=r"\[iter2/rewards\] needs the earlier stages done first"):
        select_steps(params, run, only="rewards")
    assert select_steps(params, run, start_from="iter1/rewards")[:3] == [("rewards", 1), ("pairs", 1), ("training", 1)]
    with pytest.raises(StudyError, match="iter1/rewards"):
        select_steps(params, run, only="iter9/rewards")


def test_r_t_in_the_study_leaves_english_out_as_the_reference_and_says_so(tmp_path):
    """reward.variant R_t (reference style, issue 16): the rewards stage gives English no R_t reward and counts its
    samples; the pairs stage records English's prompts as dropped for that reason instead of a silent zero."""
    from xlr.files import read_jsonl

    sets = [
        "--set",
        "models.pi0=tiny:1",
        "--set",
        "iterations=1",
        "--set",
        "probe.enabled=false",
        "--set",
        "judge.backend=none",
        "--set",
        "reward.variant=R_t",
        "--set",
        "reward.rt_max_new_tokens=8",
    ]
    for step in ("data", "models", "iter1/sampling", "iter1/rewards", "iter1/pairs"):
        assert main(["run", str(REPO / "params/smoke.yaml"), "--direct", *sets, "--only", step]) == 0, step
    run = tmp_path / "runs/smoke"
    rewards = read_jsonl(run / "iter1/rewards/rewards.jsonl")
    assert {r["lang"] for r in rewards} == {"de"} and len(rewards) == 4 * 3
    assert all(r["variant"] == "R_t" and "translation_status" in r for r in rewards)
    m = json.loads((run / "manifest.json").read_text())
    r_t = m["stages"]["iter1/rewards"]["counts"]["r_t"]
    assert r_t["skipped_english"] == 4 * 3 and r_t["style"] == "reference" and r_t["max_new_tokens"] == 8
    stats = json.loads((run / "iter1/pairs/pairs_stats.json").read_text())
    assert stats["en"]["pairs"] == 0 and stats["en"]["drops"] == {"no R_t reward in English, as the reference (prompt)": 4}
    assert stats["de"]["pairs"] + sum(v for k, v in stats["de"]["drops"].items() if "(prompt)" in k) == 4
