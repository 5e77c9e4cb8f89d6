"""Print the message xlr gives for each bad input of issue 7 (the tests assert on them; this lists them in one place).

    .venv/bin/python tests/catalog_bad_inputs.py

Each case runs in a temporary directory; nothing outside it is touched except the shared model cache.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
TMP = Path(tempfile.mkdtemp(prefix="xlr-bad-inputs-"))
os.environ["XLR_RUNS_DIR"] = str(TMP / "runs")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
MINIMAL = "name: t\nmodels: {pi_ref: tiny:0}\n"
CASES = []


def case(title):
    def deco(fn):
        CASES.append((title, fn))
        return fn

    return deco


def params_file(text: str) -> Path:
    p = TMP / f"p{len(list(TMP.glob('p*.yaml')))}.yaml"
    p.write_text(text)
    return p


def load(text):
    from xlr.config import load_params

    load_params(params_file(text))


@case("params file missing")
def _():
    from xlr.config import load_params

    load_params(TMP / "nope.yaml")


for title, text in [
    ("invalid YAML", "name: [unclosed\n"),
    ("unknown key", MINIMAL + "samplin: {n_samples: 3}\n"),
    ("wrong type", MINIMAL + "sampling: {n_samples: three}\n"),
    ("negative N", MINIMAL + "sampling: {n_samples: -1}\n"),
    ("temperature < 0", MINIMAL + "sampling: {temperature: -0.5}\n"),
    ("alpha grid empty", MINIMAL + "pairs: {alpha_grid: []}\n"),
    ("unknown language code", MINIMAL + "languages: {train: [en, xx]}\n"),
]:
    CASES.append((title, lambda text=text: load(text)))


def fake_root(de_rows):
    from conftest import write_jsonl

    root = TMP / f"data{len(list(TMP.glob('data*')))}"
    write_jsonl(root / "ultrafeedback-prompts/en.jsonl", [{"instruction": f"English {i}", "instruction_id": f"id{i}"} for i in range(4)])
    write_jsonl(root / "ultrafeedback-prompts/de.jsonl", de_rows)
    return root


@case("language without a training file")
def _():
    from xlr import data

    data.load_train_prompts(["fr"], 1, data_dir=fake_root([{"instruction": "a", "instruction_id": "id0"}]))


@case("language without an X-AlpacaEval file")
def _():
    from xlr import data

    data.load_xalpacaeval("yo", data_dir=fake_root([{"instruction": "a", "instruction_id": "id0"}]))


@case("prompts misaligned across languages")
def _():
    from xlr import data

    data.load_train_prompts(
        ["en", "de"], 3, data_dir=fake_root([{"instruction": f"Deutsch {i}", "instruction_id": f"id{i}"} for i in (0, 1, 3, 2)])
    )


@case("duplicate ids")
def _():
    from xlr import data

    rows = [
        {"instruction": "a", "instruction_id": "id0"},
        {"instruction": "b", "instruction_id": "id1"},
        {"instruction": "c", "instruction_id": "id0"},
    ]
    data.load_train_prompts(["de"], 1, data_dir=fake_root(rows))


@case("empty instruction")
def _():
    from xlr import data

    data.load_train_prompts(["de"], 1, data_dir=fake_root([{"instruction": "  ", "instruction_id": "id0"}]))


@case("model spec not found")
def _():
    from xlr.models import resolve_spec

    resolve_spec("not-a-model")


def tiny_copy(name):
    from xlr.tiny import build_tiny_model

    d = TMP / name
    shutil.copytree(build_tiny_model(seed=0), d)
    return d


@case("model hash mismatch")
def _():
    from xlr.models import load_model

    d = tiny_copy("bad-weights")
    w = next(d.glob("*.safetensors"))
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 0xFF
    w.write_bytes(bytes(raw))
    load_model(str(d))


@case("tokenizer without a chat template")
def _():
    from xlr.models import load_model

    d = tiny_copy("nochat")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "chat_template.jinja").unlink(missing_ok=True)
    load_model(str(d))


@case("run directory from a different params file")
def _():
    from xlr.config import load_params, parse_override
    from xlr.runs import Run

    p = load_params(REPO / "params/smoke.yaml")
    Run.open(p)
    Run.open(load_params(REPO / "params/smoke.yaml", parse_override("seed=7")))


@case("disk full while writing")
def _():
    from test_bad_inputs import disk_full

    from xlr import files

    target = TMP / "stage" / "pairs.json"
    files.atomic_write_json(target, {"old": True})
    with disk_full("xlr.files"):
        files.atomic_write_text(target, "{}")


def judge_case(mode):
    def run():
        from xlr import judge as J
        from xlr.mock_openai import MockServer

        os.environ["XLR_CATALOG_KEY"] = "sk-catalog-fake"
        with MockServer(default=mode) as server:
            J.APIJudge(server.base_url, "mock-judge", "XLR_CATALOG_KEY", concurrency=1, max_retries=2, timeout_s=2.0)(
                ["<|im_start|>user\nhi<|im_end|>"]
            )

    return run


@case("judge endpoint unreachable")
def _():
    from xlr import judge as J

    os.environ["XLR_CATALOG_KEY"] = "sk-catalog-fake"
    J.APIJudge("http://127.0.0.1:9/v1", "mock-judge", "XLR_CATALOG_KEY", concurrency=1, max_retries=1, timeout_s=1.0)(
        ["<|im_start|>user\nhi<|im_end|>"]
    )


for title, mode in [("judge 401", "401"), ("judge 429 storm", "429"), ("judge malformed reply", "malformed")]:
    CASES.append((title, judge_case(mode)))


@case("NaN in a log-prob")
def _():
    from test_bad_inputs import non_finite_log_probs

    from xlr import rewards
    from xlr.models import load_model

    model, tok = load_model("tiny:0")
    with non_finite_log_probs():
        rewards.score_models([model], tok, ["What is 2+2?"], ["4"])


def pairs_case(texts):
    def run():
        from xlr.pairs import select_pairs

        rows = [
            {"id": "p", "lang": "de", "sample_idx": k, "response": t, "reward": float(k), "len_chars": len(t)} for k, t in enumerate(texts)
        ]
        _, stats = select_pairs(rows, {"p": "Frage"})
        return f"no error (a skip, counted in pairs_stats.json, the manifest and the report): {stats['drops']}"

    return run


CASES.append(("all N samples identical", pairs_case(["same", "same", "same", "same"])))
CASES.append(("empty responses", pairs_case(["", "", "ok", ""])))


if __name__ == "__main__":
    for title, fn in CASES:
        try:
            out = fn()
            msg = out if isinstance(out, str) else "NO ERROR"
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {e}"
        print(f"- **{title}**: {msg.replace(str(TMP), '<tmp>')}")
    shutil.rmtree(TMP, ignore_errors=True)
