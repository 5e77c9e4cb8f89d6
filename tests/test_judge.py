"""Judges: the AlpacaEval protocol (checked against alpaca_eval's own code), the local judge (against a plain forward
pass), the API judge against a real loopback HTTP server, the cache, and the order randomisation."""

import math

import numpy as np
import pytest
import torch

from xlr import judge as J
from xlr.config import JudgeParams
from xlr.mock_openai import MockServer, label_logprobs
from xlr.models import load_model

KEY_ENV = "XLR_TEST_JUDGE_KEY"
FAKE_KEY = "sk-test-DO-NOT-LEAK-0123456789"


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    return FAKE_KEY


def items(n=6):
    return [
        {
            "key": f"en:{i}",
            "id": i,
            "instruction": f"Question {i}?",
            "output": f"model answer {i}",
            "baseline_output": f"reference answer {i}",
        }
        for i in range(n)
    ]


def jp(order_seed=0, **kw):
    """The params' judge section judge_pairs takes: AlpacaEval's pairwise protocol (what these tests judge with unless
    they name another), one random order per item drawn with ``order_seed``."""
    return JudgeParams(protocol="pairwise", order_seed=order_seed, **kw)


def test_template_is_alpaca_evals_with_the_clause_once():
    plain = J.protocol_template(False)
    with_clause = J.protocol_template(True)
    assert plain == (J._alpaca_eval_dir() / J.TEMPLATE_REL).read_text()
    assert with_clause.count(J.SAME_LANGUAGE_CLAUSE) == 1 and J.SAME_LANGUAGE_CLAUSE not in plain
    assert with_clause.replace(J.SAME_LANGUAGE_CLAUSE + " ", "") == plain
    assert J.request_settings() == {"max_tokens": 1, "temperature": 1, "logprobs": True, "top_logprobs": 5}


# The paper's judge prompt, verbatim: alpaca_eval/src/alpaca_eval/evaluators_configs/weighted_alpaca_eval_gpt4_turbo_multilingual/
# alpaca_eval_clf.txt in github.com/ZNLP/Implicit-Cross-Lingual-Rewarding at commit 168a420 (its gpt4o_multilingual file is
# byte-identical). No newline after the last <|im_end|>. Its configs.yaml beside it: max_tokens 1, temperature 1, logprobs true,
# top_logprobs 5, logprob_parser with m over (m, M), is_binarize false.
PAPER_MULTILINGUAL_TEMPLATE = '''<|im_start|>system
You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) based on the quality of their responses to a given instruction. This process will be used to create a leaderboard reflecting the most accurate and human-preferred answers.
<|im_end|>
<|im_start|>user
I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{
    "instruction": """{instruction}""",
}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{
    {
        "model_identifier": "m",
        "output": """{output_1}"""
    },
    {
        "model_identifier": "M",
        "output": """{output_2}"""
    }
}

## Task

A good output should be in the same language as the instruction, except when the instruction explicitly requests the output in a different language. Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier
<|im_end|>'''

# What the paper's alpaca_eval sends for that template (utils.prompt_to_chatml: each message's content stripped), with
# instruction "Wie spät ist es?", output_1 (alpaca_eval's unswitched order: the reference) "Es ist drei Uhr." and
# output_2 (the model) "It is three o'clock.".
PAPER_SYSTEM_MESSAGE = (
    "You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) based on the "
    "quality of their responses to a given instruction. This process will be used to create a leaderboard reflecting the "
    "most accurate and human-preferred answers."
)
PAPER_USER_MESSAGE = '''I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{
    "instruction": """Wie spät ist es?""",
}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{
    {
        "model_identifier": "m",
        "output": """Es ist drei Uhr."""
    },
    {
        "model_identifier": "M",
        "output": """It is three o'clock."""
    }
}

## Task

A good output should be in the same language as the instruction, except when the instruction explicitly requests the output in a different language. Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier'''


def test_template_with_the_clause_is_the_papers_multilingual_template_verbatim():
    assert J.protocol_template(True) == PAPER_MULTILINGUAL_TEMPLATE


def test_the_judge_request_is_the_papers_rendered_prompt_and_settings(key, tmp_path):
    """The request body the API judge sends (captured at the client), for both orders of one item, equals the paper's
    template rendered by hand above, with the paper's configs.yaml settings."""
    from types import SimpleNamespace

    judge = J.APIJudge(None, "gpt-4-1106-preview", KEY_ENV, concurrency=1)
    sent = []

    def create(**kw):
        sent.append(kw)
        top = [SimpleNamespace(token="m", logprob=-0.3), SimpleNamespace(token="M", logprob=-1.4)]
        return SimpleNamespace(
            choices=[SimpleNamespace(logprobs=SimpleNamespace(content=[SimpleNamespace(top_logprobs=top)]))],
            usage=SimpleNamespace(prompt_tokens=300, completion_tokens=1),
        )

    judge.client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    it = {"key": "de:0", "instruction": "Wie spät ist es?", "output": "It is three o'clock.", "baseline_output": "Es ist drei Uhr."}
    recs, _ = J.judge_pairs(judge, [it], J.JudgeCache(tmp_path / "c.jsonl"), jp(0), template=J.protocol_template(True), orders="both")
    # the other order: the two outputs trade places
    swapped = (
        PAPER_USER_MESSAGE.replace("Es ist drei Uhr.", "@@")
        .replace("It is three o'clock.", "Es ist drei Uhr.")
        .replace("@@", "It is three o'clock.")
    )
    want = [
        {
            "model": "gpt-4-1106-preview",
            "messages": [{"role": "system", "content": PAPER_SYSTEM_MESSAGE}, {"role": "user", "content": user}],
            "max_tokens": 1,
            "temperature": 1,
            "logprobs": True,
            "top_logprobs": 5,
        }
        for user in (PAPER_USER_MESSAGE, swapped)
    ]
    assert sorted(sent, key=repr) == sorted(want, key=repr)
    assert [r["model_first"] for r in recs] == [True, False]
    assert recs[1]["p_model"] == pytest.approx(1 - math.exp(-0.3) / (math.exp(-0.3) + math.exp(-1.4)))  # reference first: P(M)


def test_render_and_messages_match_alpaca_eval():
    import pandas as pd
    from alpaca_eval import utils as ae_utils

    template = J.protocol_template(True)
    row = {"instruction": "Write {output_1} literally", "output_1": "A with {braces}", "output_2": 'B with """quotes"""'}
    ours = J.render(template, row["instruction"], row["output_1"], row["output_2"])
    theirs, _ = ae_utils.make_prompts(pd.DataFrame([row]), template=template)
    assert ours == theirs[0]
    assert J.to_messages(ours) == ae_utils.prompt_to_chatml(ours)


def test_preference_matches_alpaca_eval_logprob_parser():
    from alpaca_eval.completion_parsers import logprob_parser

    for lm, lM in [(-0.1, -2.5), (-3.0, -0.05), (-1.0, -1.0), (-0.2, -math.inf)]:
        top = [{"token": t, "logprob": v} for t, v in (("m", lm), ("M", lM), ("The", -9.0)) if v != -math.inf]
        completion = {"logprobs": {"content": [{"token": "m", "top_logprobs": top}]}}
        theirs = logprob_parser(completion, numerator_token="m", denominator_tokens=["m", "M"], is_binarize=False)[0]
        assert J.p_first(lm, lM) == pytest.approx(2 - theirs, abs=1e-12)  # alpaca_eval: 1 = output_1 preferred, 2 = output_2
    assert math.isnan(J.p_first(-math.inf, -math.inf))


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_local_judge_equals_a_plain_forward_pass(tiny_dir, prefix_cache):
    model, tok = load_model(str(tiny_dir), dtype=torch.float32)
    judge = J.LocalJudge(model, tok, "tiny", batch_tokens=4096, prefix_cache=prefix_cache)
    template = J.protocol_template(True)
    prompts = [J.render(template, f"instr {i}", "a" * (i * 7), "b") for i in range(5)]
    got = judge(prompts)
    assert J._common_prefix_len([judge.encode(p) for p in prompts]) > 50  # the shared template opening is long
    m_id, M_id = (tok(t, add_special_tokens=False)["input_ids"][0] for t in ("m", "M"))
    for p, g in zip(prompts, got, strict=True):
        text = tok.apply_chat_template(J.to_messages(p), tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)
        assert g["logprob_m"] == pytest.approx(float(logp[m_id]), abs=1e-4)
        assert g["logprob_M"] == pytest.approx(float(logp[M_id]), abs=1e-4)
        assert g["tokens_in"] == ids.shape[1]


class CountingJudge:
    """A stand-in backend with known answers: P(output_1) from the mock server's hash of the prompt."""

    id = "counting"

    def __init__(self):
        self.calls = 0

    def __call__(self, prompts, progress=None, sink=None):
        self.calls += len(prompts)
        out = []
        for i, p in enumerate(prompts):
            lm, lM = label_logprobs(p)
            out.append({"logprob_m": lm, "logprob_M": lM, "tokens_in": 10, "tokens_out": 1})
            if sink:
                sink(i, out[-1])
        return out


def test_orders_are_seeded_and_flipped_correctly_and_cache_makes_reruns_free(tmp_path):
    template = J.protocol_template(True)
    its = items(40)
    its[3]["output"] = its[3]["baseline_output"]  # identical: 0.5, no call
    judge = CountingJudge()
    cache = J.JudgeCache(tmp_path / "c.jsonl")
    recs, st = J.judge_pairs(judge, its, cache, jp(1), template=template)
    assert st.calls == judge.calls == 39 and st.identical_outputs == 1
    firsts = [r["model_first"] for r in recs]
    assert 10 < sum(firsts) < 30  # both orders occur
    for it, r in zip(its, recs, strict=True):
        if r["identical"]:
            assert r["p_model"] == 0.5
            continue
        o1, o2 = (it["output"], it["baseline_output"]) if r["model_first"] else (it["baseline_output"], it["output"])
        lm, lM = label_logprobs(J.render(template, it["instruction"], o1, o2))
        # independent: P(model) is P(m) when the model is output_1, else P(M)
        pm = math.exp(lm) / (math.exp(lm) + math.exp(lM))
        assert r["p_model"] == pytest.approx(pm if r["model_first"] else 1 - pm, abs=1e-9)
    # same seed: same orders; other seed: different orders
    again, st2 = J.judge_pairs(judge, its, J.JudgeCache(tmp_path / "c.jsonl"), jp(1), template=template)
    assert st2.calls == 0 and st2.cache_hits == 39 and judge.calls == 39
    assert [r["p_model"] for r in again] == [r["p_model"] for r in recs]
    other, _ = J.judge_pairs(judge, its, J.JudgeCache(tmp_path / "other.jsonl"), jp(2), template=template)
    assert [r["model_first"] for r in other] != firsts


def alpaca_eval_switch(instruction, output_1, output_2, seed, columns=("instruction",)):
    """alpaca_eval 0.6.6's draw of the presented order, re-implemented from its source (tag v0.6.6): the
    RandomSwitchTwoColumnsProcessor (src/alpaca_eval/processors.py:121-129) switches output_1 and output_2 when
    random.Random("is_switched_outputs" + "".join(row[sorted(columns)]) + str(seed)).choices([False, True], k=1)[0]
    (utils.random_seeded_choice, utils.py:53-55) is True; the columns are the SinglePairwiseAnnotator's
    random_seed_column, ("instruction",) by default (annotators/pairwise_evaluator.py:346), the seed the annotator's,
    0 by default (annotators/base.py:95). evaluate() passes the reference as output_1 and the model as output_2
    (main.py:155-156): switched = the model's output shown first."""
    import random

    row = {"instruction": instruction, "output_1": output_1, "output_2": output_2}
    return random.Random("is_switched_outputs" + "".join(row[c] for c in sorted(columns)) + str(seed)).choices([False, True], k=1)[0]


@pytest.mark.parametrize("seed", [0, 42])
def test_random_order_switches_the_items_alpaca_eval_switches(tmp_path, seed):
    its = items(24)
    cols = {"instruction": ("instruction",), "instruction_outputs": ("instruction", "output_1", "output_2")}
    for name, columns in cols.items():
        recs, _ = J.judge_pairs(
            CountingJudge(),
            its,
            J.JudgeCache(tmp_path / f"{name}.jsonl"),
            jp(seed, order_seed_columns=name),
            template=J.protocol_template(True),
        )
        want = [alpaca_eval_switch(it["instruction"], it["baseline_output"], it["output"], seed, columns) for it in its]
        assert [r["model_first"] for r in recs] == want
        assert 0 < sum(want) < len(want)
        assert [J.model_shown_first(it["instruction"], it["output"], it["baseline_output"], seed, name) for it in its] == want


def test_the_order_draw_equals_alpaca_evals_own_processor():
    """Beside the re-implementation above: alpaca_eval's installed RandomSwitchTwoColumnsProcessor, configured as its
    SinglePairwiseAnnotator configures it (default random_seed_column, then one that adds the two outputs)."""
    import pandas as pd
    from alpaca_eval.processors import RandomSwitchTwoColumnsProcessor

    its = items(16)
    df = pd.DataFrame([{"instruction": it["instruction"], "output_1": it["baseline_output"], "output_2": it["output"]} for it in its])
    for name, columns in (("instruction", ["instruction"]), ("instruction_outputs", ["instruction", "output_1", "output_2"])):
        proc = RandomSwitchTwoColumnsProcessor(
            two_columns_to_switch=["output_1", "output_2"], random_seed_columns=columns, _switch_column="is_switched_outputs", seed=0
        )
        theirs = proc.preprocess(df)["is_switched_outputs"].tolist()
        assert [J.model_shown_first(it["instruction"], it["output"], it["baseline_output"], 0, name) for it in its] == theirs


def test_two_models_on_the_same_items_get_their_own_orders_when_the_outputs_seed_the_draw(tmp_path):
    """alpaca_eval's default (the instruction seeds the draw): every model is shown in the same order on an item, so a
    position-biased judge errs on the same items for all; with the outputs in the seed the patterns differ."""
    base = items(40)
    model_b = [it | {"output": f"another model's answer {k}"} for k, it in enumerate(base)]
    template = J.protocol_template(True)
    pattern = {}
    for cols in ("instruction", "instruction_outputs"):
        for who, its in (("a", base), ("b", model_b)):
            recs, _ = J.judge_pairs(
                CountingJudge(), its, J.JudgeCache(tmp_path / f"{cols}{who}.jsonl"), jp(0, order_seed_columns=cols), template=template
            )
            pattern[cols, who] = [r["model_first"] for r in recs]
    assert pattern["instruction", "a"] == pattern["instruction", "b"]
    assert pattern["instruction_outputs", "a"] != pattern["instruction_outputs", "b"]
    unknown = jp(0).model_copy(update={"order_seed_columns": "key"})  # params refuse it; judge_pairs checks again
    with pytest.raises(J.JudgeError, match="order_seed_columns"):
        J.judge_pairs(CountingJudge(), base, J.JudgeCache(tmp_path / "x.jsonl"), unknown, template=template)


def test_both_orders_and_a_truncated_cache_line(tmp_path):
    template = J.protocol_template(False)
    judge = CountingJudge()
    path = tmp_path / "c.jsonl"
    recs, st = J.judge_pairs(judge, items(5), J.JudgeCache(path), jp(0), template=template, orders="both")
    assert len(recs) == 10 and st.calls == 10
    assert [r["model_first"] for r in recs[:2]] == [True, False]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # a kill mid-write
    cache = J.JudgeCache(path)
    assert cache.bad_lines == 1 and len(cache.entries) == 9
    _, st = J.judge_pairs(judge, items(5), cache, jp(0), template=template, orders="both")
    assert st.calls == 1 and st.cache_hits == 9 and st.cache_bad_lines == 1
    again = J.JudgeCache(path)  # the new judgment started a line of its own instead of gluing onto the cut one
    assert len(again.entries) == 10 and again.bad_lines == 1


# ---------------------------------------------------------------------------------------------------------------
# API judge against a real HTTP server on 127.0.0.1


def api(server, **kw):
    return J.APIJudge(server.base_url, "mock-judge", KEY_ENV, **{"concurrency": 4, "max_retries": 2, "timeout_s": 5.0} | kw)


def test_api_success_matches_the_servers_logprobs_with_bounded_concurrency(key, tmp_path):
    with MockServer(latency_s=0.05) as server:
        judge = api(server, concurrency=3)
        template = J.protocol_template(True)
        priced = jp(0, price_per_1k_input=10.0, price_per_1k_output=30.0)
        recs, st = J.judge_pairs(judge, items(12), J.JudgeCache(tmp_path / "c.jsonl"), priced, template=template)
        assert server.requests == 12 and server.peak_in_flight <= 3 and server.peak_in_flight >= 2
        for it, r in zip(items(12), recs, strict=True):
            o1, o2 = (it["output"], it["baseline_output"]) if r["model_first"] else (it["baseline_output"], it["output"])
            lm, lM = label_logprobs("\n".join(m["content"] for m in J.to_messages(J.render(template, it["instruction"], o1, o2))))
            assert (r["logprob_m"], r["logprob_M"]) == pytest.approx((lm, lM))
        assert st.tokens_in > 0 and st.tokens_out == 12
        assert st.cost_usd == pytest.approx(st.tokens_in / 1000 * 10.0 + 12 / 1000 * 30.0)
        _, st2 = J.judge_pairs(judge, items(12), J.JudgeCache(tmp_path / "c.jsonl"), jp(0), template=template)
        assert server.requests == 12 and st2.calls == 0 and st2.cache_hits == 12  # a rerun costs nothing


def test_debug_logging_of_the_api_judge_never_shows_the_key(key, tmp_path, caplog, capfd):
    """`xlr -v` turns on DEBUG logging, where openai and httpx log requests, retries and headers."""
    import logging

    caplog.set_level(logging.DEBUG)  # every logger, openai's and httpx's included
    with MockServer() as server:
        server.script.extend(["429", "500"])  # the retry paths log too
        J.judge_pairs(api(server, concurrency=2), items(4), J.JudgeCache(tmp_path / "c.jsonl"), jp(0), template=J.protocol_template(True))
    assert any(r.name.startswith(("openai", "httpx", "httpcore")) for r in caplog.records)  # the debug logs were on
    out, err = capfd.readouterr()
    assert FAKE_KEY not in caplog.text + out + err and FAKE_KEY[-10:] not in caplog.text


def test_api_429_then_success_is_retried(key):
    with MockServer() as server:
        server.script.extend(["429", "429"])
        out = api(server, concurrency=1)(["<|im_start|>user\nhi<|im_end|>"])
        assert server.modes_served == ["429", "429", "ok"] and math.isfinite(out[0]["logprob_m"])


def test_api_500_storm_gives_a_clear_error_after_the_retries(key):
    with MockServer(default="500") as server:
        with pytest.raises(J.JudgeError, match=r"HTTP 500 after all retries"):
            api(server, max_retries=2, concurrency=1)(["<|im_start|>user\nhi<|im_end|>"])
        assert server.requests == 3


def test_api_failure_midway_keeps_every_judgment_already_made(key, tmp_path):
    with MockServer() as server:
        server.script.extend(["ok"] * 5 + ["500"] * 10)
        cache = J.JudgeCache(tmp_path / "c.jsonl")
        with pytest.raises(J.JudgeError, match="HTTP 500"):
            J.judge_pairs(api(server, concurrency=1, max_retries=1), items(8), cache, jp(0), template=J.protocol_template(True))
        assert len(J.JudgeCache(tmp_path / "c.jsonl").entries) == 5  # the five paid judgments survived the failure
        server.script.clear()  # the endpoint recovers
        before = server.requests
        recs, st = J.judge_pairs(
            api(server, concurrency=1), items(8), J.JudgeCache(tmp_path / "c.jsonl"), jp(0), template=J.protocol_template(True)
        )
        assert st.cache_hits == 5 and st.calls == 3 and server.requests - before == 3


def test_api_429_storm_gives_a_clear_error(key):
    with MockServer(default="429") as server:
        with pytest.raises(J.JudgeError, match=r"HTTP 429 after all retries. Fix: lower judge.concurrency"):
            api(server, max_retries=1, concurrency=1)(["<|im_start|>user\nhi<|im_end|>"])
        assert server.requests == 2


def test_api_timeout(key):
    with MockServer(default="sleep", sleep_s=2.0) as server:
        with pytest.raises(J.JudgeError, match="timed out"):
            api(server, max_retries=1, timeout_s=0.3, concurrency=1)(["<|im_start|>user\nhi<|im_end|>"])
        assert server.requests == 2


def test_api_malformed_json(key):
    with MockServer(default="malformed") as server:
        with pytest.raises(J.JudgeError, match="malformed reply"):
            api(server, max_retries=0, concurrency=1)(["<|im_start|>user\nhi<|im_end|>"])


def test_api_reply_without_logprobs(key):
    with MockServer(default="nologprobs") as server:
        with pytest.raises(J.JudgeError, match="no logprobs"):
            api(server, concurrency=1)(["<|im_start|>user\nhi<|im_end|>"])


def test_api_label_missing_from_top_logprobs(key, tmp_path):
    with MockServer(default="missing_M") as server:
        recs, st = J.judge_pairs(api(server), items(4), J.JudgeCache(tmp_path / "c.jsonl"), jp(0), template=J.protocol_template(True))
        # alpaca_eval's rule: a label absent from top_logprobs has probability 0, so P(m) = 1
        assert all(r["p_model"] == (1.0 if r["model_first"] else 0.0) for r in recs) and st.unjudgeable == 0
    with MockServer(default="nolabels") as server:
        recs, st = J.judge_pairs(api(server), items(4), J.JudgeCache(tmp_path / "d.jsonl"), jp(0), template=J.protocol_template(True))
        assert all(math.isnan(r["p_model"]) for r in recs) and st.unjudgeable == 4


def test_api_401_and_missing_key(key, monkeypatch):
    with MockServer(default="401") as server:
        with pytest.raises(J.JudgeError, match=rf"401 unauthorised.*\${KEY_ENV}") as e:
            api(server, concurrency=1)(["<|im_start|>user\nhi<|im_end|>"])
        assert FAKE_KEY not in str(e.value)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(J.JudgeError, match=rf"environment variable {KEY_ENV} .* is not set"):
        J.APIJudge("http://127.0.0.1:9/v1", "m", KEY_ENV)


def test_api_unreachable(key):
    with pytest.raises(J.JudgeError, match="unreachable"):
        J.APIJudge("http://127.0.0.1:9/v1", "m", KEY_ENV, max_retries=0, timeout_s=2)(["<|im_start|>user\nhi<|im_end|>"])


def test_judge_agreement_equals_an_independent_count():
    from xlr.evaluate import judge_agreement

    rng = np.random.default_rng(0)
    recs = []
    for i in range(30):
        for first in (True, False):
            recs.append({"key": f"v:{i}", "model_first": first, "p_model": float(rng.uniform())})
    recs[5]["p_model"] = math.nan
    out = judge_agreement(recs, n_boot=200, seed=0)
    per = {}
    for r in recs:
        if not math.isnan(r["p_model"]):
            per.setdefault(r["key"], []).append(1.0 if r["p_model"] > 0.5 else 0.0)
    assert out["agreement"] == pytest.approx(np.mean([np.mean(v) for v in per.values()]))
    assert out["n_items"] == 30 and out["unjudgeable_orders"] == 1
    assert out["ci95"][0] <= out["agreement"] <= out["ci95"][1]


# ---------------------------------------------------------------------------------------------------------------
# protocols (judge.protocol): pairwise, pairwise_both, pointwise_score, pointwise_yes, loglik


def test_protocol_is_a_documented_params_field():
    from pydantic import ValidationError

    from xlr.config import JudgeParams

    jp = JudgeParams(protocol="pointwise_score", score_max=9, same_language_clause=False)
    assert J.protocol_spec(jp) == J.Protocol("pointwise_score", same_language_clause=False, score_max=9, loglik_tau=0.1)
    assert JudgeParams().protocol in J.PROTOCOLS and "pointwise" in JudgeParams.model_fields["protocol"].description
    with pytest.raises(ValidationError):
        JudgeParams(protocol="majority_vote")
    with pytest.raises(ValidationError):
        JudgeParams(score_max=10)  # "10" is two tokens
    with pytest.raises(J.JudgeError, match="use one of"):
        J.Protocol("nope")


def test_pointwise_preferences_by_hand():
    lg = math.log
    five = J.Protocol("pointwise_score", score_max=2)
    x = {"logprobs": {"1": lg(0.2), "2": lg(0.8)}}
    y = {"logprobs": {"1": lg(0.5), "2": lg(0.5)}}
    assert J.pointwise_score(x, five) == pytest.approx(1.8)
    # P(X > Y) + P(X = Y) / 2 = 0.8 * 0.5 + (0.2 * 0.5 + 0.8 * 0.5) / 2
    assert J.pointwise_preference(x, y, five) == pytest.approx(0.65)
    assert J.pointwise_preference(y, x, five) == pytest.approx(0.35)
    yes = J.Protocol("pointwise_yes")
    a, b = {"logprobs": {"Yes": lg(0.45), "No": lg(0.05)}}, {"logprobs": {"Yes": lg(0.3), "No": lg(0.7)}}  # renormalised: 0.9 and 0.3
    assert J.pointwise_score(a, yes) == pytest.approx(0.9) and J.pointwise_preference(a, b, yes) == pytest.approx(0.5 + (0.9 - 0.3) / 2)
    assert J.label_mass(a, yes) == pytest.approx(0.5)
    ll = J.Protocol("loglik", loglik_tau=0.5)
    m, r = {"sum_logprob": -10.0, "n_tokens": 10}, {"sum_logprob": -30.0, "n_tokens": 20}
    assert J.pointwise_preference(m, r, ll) == pytest.approx(1 / (1 + math.exp(-(-1.0 + 1.5) / 0.5)))
    none = {"logprobs": {"1": -math.inf, "2": -math.inf}}
    assert math.isnan(J.pointwise_preference(none, y, five)) and J.score_distribution(none["logprobs"], ["1", "2"]) is None
    missing = {"logprobs": {"1": lg(0.3), "2": -math.inf}}  # an unseen label has probability 0 (as alpaca_eval's parser)
    assert J.pointwise_score(missing, five) == pytest.approx(1.0)


def test_pointwise_prompt_keeps_braces_and_the_clause():
    p = J.Protocol("pointwise_score", score_max=7)
    text = p.render_pointwise("Say {output} please", "Here is {instruction}")
    assert "Say {output} please" in text and "Here is {instruction}" in text and "1 to 7" in text
    assert J.SAME_LANGUAGE_CLAUSE in text and J.SAME_LANGUAGE_CLAUSE not in J.Protocol(
        "pointwise_yes", same_language_clause=False
    ).render_pointwise("a", "b")
    assert J.to_messages(text)[0]["role"] == "system" and J.to_messages(text)[1]["content"].endswith("nothing else.")


def test_local_pointwise_logprobs_equal_a_plain_forward_pass_and_loglik_equals_sequence_logprobs(tiny_dir):
    from xlr.rewards import sequence_logprobs

    model, tok = load_model(str(tiny_dir), dtype=torch.float32)
    judge = J.LocalJudge(model, tok, "tiny", batch_tokens=4096)
    proto = J.Protocol("pointwise_score")
    prompts = [proto.render_pointwise(f"instr {i}", "answer " * (i + 1)) for i in range(4)]
    got = judge.next_token_logprobs(prompts, proto.labels)
    ids = judge.token_ids(proto.labels)
    for p, g in zip(prompts, got, strict=True):
        text = tok.apply_chat_template(J.to_messages(p), tokenize=False, add_generation_prompt=True)
        with torch.no_grad():
            logp = torch.log_softmax(
                model(input_ids=torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])).logits[0, -1].double(), -1
            )
        assert [g["logprobs"][t] for t in proto.labels] == pytest.approx([float(logp[i]) for i in ids], abs=1e-4)
    with pytest.raises(J.JudgeError, match="not single distinct tokens"):
        judge.token_ids(["10", "1"])
    ins, outs = ["What is 2+2?", "What is 2+2?", "Name a colour."], ["4", "Four, of course.", "Blue"]
    seq = judge.sequence_scores(ins, outs, chunk=2)
    ref = sequence_logprobs(model, tok, ins, outs)
    assert [s["sum_logprob"] for s in seq] == pytest.approx(ref, abs=1e-4)
    assert all(s["n_tokens"] >= 2 for s in seq)  # the output's tokens and the end of turn


@pytest.mark.parametrize("protocol", J.PROTOCOLS)
def test_every_protocol_through_judge_pairs_on_the_tiny_model(tiny_dir, tmp_path, protocol):
    model, tok = load_model(str(tiny_dir), dtype=torch.float32)
    judge = J.LocalJudge(model, tok, "tiny")
    its = items(4)
    its[2]["output"] = its[2]["baseline_output"]
    template = J.protocol_template(True)
    recs, st = J.judge_pairs(judge, its, J.JudgeCache(tmp_path / "c.jsonl"), jp(0), template=template, protocol=protocol)
    assert len(recs) == (8 if protocol == "pairwise_both" else 4)
    assert (
        all(0 <= r["p_model"] <= 1 for r in recs)
        and st.unjudgeable == 0
        and st.identical_outputs == (2 if protocol == "pairwise_both" else 1)
    )
    assert [r["p_model"] for r in recs if r["identical"]] == [0.5] * st.identical_outputs
    if protocol in J.PAIRWISE_PROTOCOLS:
        assert st.calls == (6 if protocol == "pairwise_both" else 3)
    else:
        assert st.calls == 6 and all(r["model_first"] is None for r in recs)  # 3 judged items x 2 outputs
        r = recs[0]
        assert r["score_model"] is not None and r["score_baseline"] is not None
    _, again = J.judge_pairs(judge, its, J.JudgeCache(tmp_path / "c.jsonl"), jp(0), template=template, protocol=protocol)
    assert again.calls == 0  # a rerun costs nothing


class PointwiseStub:
    """Pointwise backend with known answers (a score distribution from a hash of the prompt); counts prompts."""

    id = "stub"

    def __init__(self, unusable=False):
        self.prompts = []
        self.unusable = unusable

    def next_token_logprobs(self, prompts, tokens, progress=None, sink=None):
        out = []
        for i, p in enumerate(prompts):
            self.prompts.append(p)
            lm, _ = label_logprobs(p)
            lps = {t: (-math.inf if self.unusable else lm * (k + 1)) for k, t in enumerate(tokens)}
            out.append({"logprobs": lps, "tokens_in": 5, "tokens_out": 0})
            if sink:
                sink(i, out[-1])
            if progress:
                progress(1)
        return out


def test_a_reference_is_scored_once_across_models(tmp_path):
    stub = PointwiseStub()
    cache = J.JudgeCache(tmp_path / "c.jsonl")
    ref = "the reference answer"
    its = [{"key": f"{m}:1", "instruction": "Q?", "output": f"answer of model {m}", "baseline_output": ref} for m in "abc"]
    recs, st = J.judge_pairs(stub, its, cache, jp(0), template=J.protocol_template(True), protocol="pointwise_score")
    assert st.calls == 4 and st.scores_reused == 2 and sum(ref in p for p in stub.prompts) == 1
    assert len({r["score_baseline"] for r in recs}) == 1
    # a fourth model later: only its own output is scored; the reference comes from the cache
    _, st2 = J.judge_pairs(
        stub,
        [{"key": "d:1", "instruction": "Q?", "output": "answer of d", "baseline_output": ref}],
        cache,
        jp(0),
        template=J.protocol_template(True),
        protocol="pointwise_score",
    )
    assert st2.calls == 1 and st2.cache_hits == 1 and sum(ref in p for p in stub.prompts) == 1
    # another protocol is another score: not reused
    _, st3 = J.judge_pairs(
        stub, its[:1], cache, jp(0), template=J.protocol_template(True), protocol=J.Protocol("pointwise_score", score_max=9)
    )
    assert st3.calls == 2


def test_an_unusable_pointwise_label_is_counted_unjudgeable(tmp_path):
    recs, st = J.judge_pairs(
        PointwiseStub(unusable=True),
        items(3),
        J.JudgeCache(tmp_path / "c.jsonl"),
        jp(0),
        template=J.protocol_template(True),
        protocol="pointwise_yes",
    )
    assert st.unjudgeable == 3 and all(math.isnan(r["p_model"]) for r in recs) and len(recs) == 3


def test_api_pointwise_against_the_mock_and_loglik_refused(key, tmp_path):
    with MockServer() as server:
        judge = api(server)
        out = judge.next_token_logprobs(["<|im_start|>user\nhi<|im_end|>"], ["Yes", "No", "m"])
        assert out[0]["logprobs"]["Yes"] == -math.inf and math.isfinite(out[0]["logprobs"]["m"])  # the mock only knows m / M
        recs, st = J.judge_pairs(
            judge, items(3), J.JudgeCache(tmp_path / "c.jsonl"), jp(0), template=J.protocol_template(True), protocol="pointwise_yes"
        )
        assert st.unjudgeable == 3 and st.calls == 6
        with pytest.raises(J.JudgeError, match="loglik"):
            J.judge_pairs(judge, items(2), J.JudgeCache(tmp_path / "d.jsonl"), jp(0), template=J.protocol_template(True), protocol="loglik")


# ---------------------------------------------------------------------------------------------------------------
# grouped prefix sharing in the local judge (issue 15: judging without repeated work)


def token_prompts(seed=0):
    """Token-level judge prompts with known sharing (the judge's ``encode`` is replaced by this table): a global
    prefix, then an item whose instruction is shared by 5 prompts, 3 of which also share a long "reference" (a nested
    group); two prompts identical except the last token; a prompt that is a prefix of two others; an identical pair;
    a pair sharing fewer than ``min_group_tokens`` extra tokens (no group); and singletons (groups of 1)."""
    g = torch.Generator().manual_seed(seed)

    def r(n):
        return torch.randint(100, 5000, (n,), generator=g).tolist()

    common = r(40)
    instr, ref = r(20), r(60)
    rows = [common + instr + ref + r(k) for k in (5, 12, 30)]  # reference first: nested group (instruction, then reference)
    rows += [common + instr + r(k) + ref for k in (9, 25)]  # model output first: the instruction group only
    twin = common + r(50)
    rows += [twin + [7], twin + [8]]  # identical except the last token
    base = common + r(30)
    rows += [base, base + r(25), base + r(18)]  # a prompt that is a prefix of two others
    dup = common + r(35)
    rows += [dup, list(dup)]  # identical prompts
    short = r(5)
    rows += [common + short + r(20), common + short + r(22)]  # 5 shared tokens past the global prefix: below the threshold
    rows += [common + r(k) for k in (3, 44, 70)]  # singletons
    return [f"p{k}" for k in range(len(rows))], rows


def expected_computed(rows, min_shared=16):
    """Tokens the grouped mode must feed the decoder, computed another way: groups found by hashing each prompt's
    first depth + min_shared tokens (the sorted runs of xlr's planner, by another route), recursively."""
    from collections import defaultdict

    def common(seqs):
        n = 0
        while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
            n += 1
        return n

    def under(seqs, depth):
        classes, total = defaultdict(list), 0
        for s in seqs:
            if len(s) >= depth + min_shared:
                classes[tuple(s[: depth + min_shared])].append(s)
            else:
                total += len(s) - depth
        for members in classes.values():
            g = min(common(members), min(len(s) for s in members) - 1) if len(members) > 1 else depth
            if g > depth:
                total += (g - depth) + under(members, g)
            else:
                total += sum(len(s) - depth for s in members)
        return total

    n0 = min(common(rows), min(len(s) for s in rows) - 1)
    return n0 + under(rows, n0)


def tabled_judge(model, tok, table, **kw):
    judge = J.LocalJudge(model, tok, "tiny", **kw)
    judge.encode = table.__getitem__
    return judge


@pytest.mark.parametrize("batch_tokens", [4096, 96])
def test_grouped_prefix_cache_equals_no_sharing_and_computes_fewer_tokens(tiny_dir, batch_tokens):
    model, tok = load_model(str(tiny_dir), dtype=torch.float32)
    names, rows = token_prompts()
    table = dict(zip(names, rows, strict=True))

    def full(logp, n):
        return {"logp": logp.double().clone(), "tokens_in": n}

    got, stats = {}, {}
    for mode in (False, "global", "grouped", True):
        judge = tabled_judge(model, tok, table, batch_tokens=batch_tokens, prefix_cache=mode)
        seen, done = [], []
        got[mode] = judge._next_token(names, full, done.append, lambda i, res, seen=seen: seen.append(i))
        stats[mode] = judge.last_stats
        assert sorted(seen) == list(range(len(names))) and sum(done) == len(names)  # every prompt reported once
    for k, row in enumerate(rows):  # the plain forward pass of each whole prompt
        with torch.no_grad():
            ref = torch.log_softmax(model(input_ids=torch.tensor([row])).logits[0, -1].double(), -1)
        for mode in got:
            assert got[mode][k]["tokens_in"] == len(row)
            assert float((got[mode][k]["logp"] - ref).abs().max()) < 1e-4, (mode, k)
    total = sum(len(r) for r in rows)
    n0 = 40  # the global prefix: every prompt starts with ``common`` and the random tokens after it differ
    assert stats[False] == stats[False] | {"prompt_tokens": total, "computed_tokens": total, "prefills": 0, "groups": 0}
    assert stats["global"]["computed_tokens"] == n0 + sum(len(r) - n0 for r in rows) and stats["global"]["prefills"] == 1
    grouped = stats["grouped"]
    assert grouped == stats[True]  # True is the grouped mode
    assert grouped["prompt_tokens"] == total and grouped["computed_tokens"] == expected_computed(rows)
    assert grouped["computed_tokens"] < stats["global"]["computed_tokens"] < total
    # the groups: instruction (5 prompts) > reference (3), the twins, the prefix family, the identical pair
    assert grouped["groups"] == 5 and grouped["prefills"] == 6


def test_grouped_prefix_cache_on_a_study_shaped_call_through_judge_pairs(tiny_dir, tmp_path):
    """Two items, each judged for three models against its reference, both orders, in one judge_pairs call: the same
    preferences as the global prefix cache, with fewer tokens computed (each item's instruction and, reference
    first, the reference prefilled once)."""
    model, tok = load_model(str(tiny_dir), dtype=torch.float32)
    template = J.protocol_template(True)
    refs = {i: f"Reference answer {i}: " + "a careful and detailed explanation of the topic, " * 6 for i in range(2)}
    its = [
        {
            "key": f"{m}:{i}",
            "instruction": f"Question {i}: explain the water cycle to a child, in a few sentences.",
            "output": f"Model {m} answers: " + "rain " * (3 + 4 * m),
            "baseline_output": refs[i],
        }
        for i in range(2)
        for m in range(3)
    ]
    recs, stats = {}, {}
    for mode in ("global", "grouped"):
        judge = J.LocalJudge(model, tok, "tiny", prefix_cache=mode)
        recs[mode], st = J.judge_pairs(judge, its, J.JudgeCache(tmp_path / f"{mode}.jsonl"), jp(0), template=template, orders="both")
        stats[mode] = judge.last_stats
        assert st.calls == 12
    for key in ("logprob_m", "logprob_M", "p_model"):
        assert [r[key] for r in recs["grouped"]] == pytest.approx([r[key] for r in recs["global"]], abs=1e-4)
    assert stats["grouped"]["prompt_tokens"] == stats["global"]["prompt_tokens"]
    assert stats["grouped"]["groups"] >= 4  # per item: the instruction, and inside it the reference presented first
    prompts = [
        J.render(template, it["instruction"], *((it["output"], it["baseline_output"]) if first else (it["baseline_output"], it["output"])))
        for it in its
        for first in (True, False)
    ]
    assert (
        stats["grouped"]["computed_tokens"]
        == expected_computed([judge.encode(p) for p in prompts])
        < 0.75 * stats["global"]["computed_tokens"]
    )


def test_prefix_cache_modes_are_validated(tiny_dir):
    model, tok = load_model(str(tiny_dir), dtype=torch.float32)
    assert J.LocalJudge(model, tok, "tiny").prefix_mode == "grouped"
    assert J.LocalJudge(model, tok, "tiny", prefix_cache=False).prefix_mode == "none"
    assert J.LocalJudge(model, tok, "tiny", prefix_cache="global").prefix_cache is True
    with pytest.raises(J.JudgeError, match="prefix_cache"):
        J.LocalJudge(model, tok, "tiny", prefix_cache="all")
    judge = J.LocalJudge(model, tok, "tiny")
    assert judge([]) == [] and judge.last_stats["prompt_tokens"] == 0


def test_grouped_prefix_cache_on_the_qwen2_architecture():
    """The judge model of the study is a Qwen2 (attention biases, its own cache layers): the same check on a random
    Qwen2 of the tiny model's size, built in memory."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from xlr.tiny import TINY_CONFIG, tokenizer_dir

    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **TINY_CONFIG)).eval()
    names, rows = token_prompts(seed=1)
    table = dict(zip(names, rows, strict=True))

    def full(logp, n):
        return {"logp": logp.double().clone()}

    plain = tabled_judge(model, tok, table, prefix_cache=False)._next_token(names, full, None, None)
    judge = tabled_judge(model, tok, table, batch_tokens=128, prefix_cache="grouped")
    grouped = judge._next_token(names, full, None, None)
    assert max(float((a["logp"] - b["logp"]).abs().max()) for a, b in zip(plain, grouped, strict=True)) < 1e-4
    assert judge.last_stats["computed_tokens"] == expected_computed(rows) and judge.last_stats["groups"] == 5
    # no prefix common to all: the groups are prefilled from an empty cache
    g = torch.Generator().manual_seed(2)
    a, b = (torch.randint(100, 5000, (20,), generator=g).tolist() for _ in range(2))
    rows = [a + [11, 12, 13], a + [14] * 5, b + [15, 16], [17] * 4]
    table = {f"q{k}": r for k, r in enumerate(rows)}
    plain = tabled_judge(model, tok, table, prefix_cache=False)._next_token(list(table), full, None, None)
    judge = tabled_judge(model, tok, table, prefix_cache="grouped")
    grouped = judge._next_token(list(table), full, None, None)
    assert max(float((x["logp"] - y["logp"]).abs().max()) for x, y in zip(plain, grouped, strict=True)) < 1e-4
    assert judge.last_stats["groups"] == 1 and judge.last_stats["computed_tokens"] == 20 + 3 + 5 + 22 + 4 == expected_computed(rows)
