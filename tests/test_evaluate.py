"""Evaluation helpers: every X-AlpacaEval language by its code, resumable generation, metrics from judgments."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from xlr import data, evaluate
from xlr.config import EvalParams
from xlr.models import load_model
from xlr.sampling import GenConfig, HFBackend

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


@needs_data
@pytest.mark.parametrize("lang", sorted(p.stem for p in (SHARED / "x-alpacaeval/prompts").glob("*.json")) if SHARED.is_dir() else [])
def test_every_xalpacaeval_language_works_by_its_code(lang):
    from xlr.languages import language_name

    ids = data.xalpacaeval_ids(20, 0)
    rows = list(data.load_xalpacaeval(lang, ids))
    assert [r["id"] for r in rows] == ids and all(r["instruction"].strip() and r["reference_output"].strip() for r in rows)
    assert language_name(lang)


@needs_data
def test_generation_is_resumable_and_in_alpacaeval_format(tmp_path, tiny_dir):
    backend = HFBackend(*load_model(str(tiny_dir), dtype=torch.float32))
    rows = list(data.load_xalpacaeval("zh", data.xalpacaeval_ids(5, 1)))
    cfg = GenConfig(n=1, temperature=0.6, top_p=0.9, max_new_tokens=6, batch_size=4)
    first = evaluate.generate_outputs(backend, rows, "zh", tmp_path / "zh", "test/pi0", cfg, seed=42, shard_size=2)
    assert first["shards_written"] == 3
    out1 = evaluate.load_outputs(tmp_path / "zh")
    (tmp_path / "zh" / "shard-00001.jsonl").unlink()  # as if killed while writing the second shard
    again = evaluate.generate_outputs(backend, rows, "zh", tmp_path / "zh", "test/pi0", cfg, seed=42, shard_size=2)
    assert (again["shards_written"], again["shards_skipped"]) == (1, 2)
    assert evaluate.load_outputs(tmp_path / "zh") == out1  # seeded per shard: the same outputs
    assert [o["id"] for o in out1] == [r["id"] for r in rows]
    assert all(o["generator"] == "test/pi0" and o["instruction"] == r["instruction"] for o, r in zip(out1, rows, strict=True))


def test_model_metrics_from_judgments_equal_an_independent_computation():
    rng = np.random.default_rng(0)
    n = 24
    texts = {
        "en": "The capital of France is Paris, a city on the Seine with many museums.",
        "de": "Die Hauptstadt von Frankreich ist Paris, eine Stadt an der Seine mit vielen Museen.",
    }
    outputs = [
        {"id": i + 1, "lang": "de", "instruction": f"q{i}", "output": texts["de" if i % 4 else "en"] * (1 + i % 3)} for i in range(n)
    ]
    refs = {i + 1: "Referenz " * (5 + i) for i in range(n)}
    judgments = [{"key": f"de:{i + 1}", "model_first": bool(i % 2), "p_model": float(rng.uniform()), "identical": False} for i in range(n)]
    judgments[3]["p_model"] = math.nan  # unjudgeable: counted, left out
    h2h = [{"key": f"de:{i + 1}", "model_first": first, "p_model": float(rng.uniform())} for i in range(n) for first in (True, False)]
    m = evaluate.model_metrics(outputs, judgments, refs, "de", EvalParams(bootstrap=200, lc_bootstrap=5), seed=0, h2h=h2h)
    p = [j["p_model"] for j in judgments if not math.isnan(j["p_model"])]
    assert m["n_judged"] == n - 1 and m["unjudgeable"] == 1
    assert m["win_rate"] == pytest.approx(100 * np.mean(p))
    assert m["win_rate_ci95"][0] <= m["win_rate"] <= m["win_rate_ci95"][1]
    per_item = [np.mean([r["p_model"] for r in h2h if r["key"] == f"de:{i + 1}"]) for i in range(n)]
    assert m["h2h_vs_pi0"]["win_rate"] == pytest.approx(100 * np.mean(per_item)) and m["h2h_vs_pi0"]["n"] == n
    assert m["fidelity"] == pytest.approx(18 / 24)  # 6 of 24 outputs are English
    assert m["mean_output_chars"] == pytest.approx(np.mean([len(o["output"]) for o in outputs]))
    assert m["lc_variant"] == "length_controlled_minimal" and 0 <= m["length_controlled_winrate"] <= 100
