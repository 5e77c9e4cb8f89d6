import math

import pytest
import torch
from conftest import independent_seq_logp

from xlr.chat import end_of_turn, render_prompt
from xlr.config import RewardParams
from xlr.languages import LANGUAGE_NAMES
from xlr.models import load_model
from xlr.rewards import (
    G_PREFIX,
    annotate,
    cross_lingual_prompt,
    length_batches,
    reward_accuracy,
    reward_prompt,
    score_models,
    sequence_logprobs,
)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny:0")


@pytest.fixture(scope="module")
def tiny_other():
    return load_model("tiny:1")[0]


PROMPTS = ["What is 2+2?", "Nenne drei Farben.", "What is 2+2?", "Écris un haïku sur la mer, s'il te plaît, avec beaucoup de détails."]
RESPONSES = ["4", "Rot, Grün und Blau.", "The answer is four, because two plus two makes four.", ""]


def _independent_logps(model, tok, prompts, responses, drop_first=False):
    """One sample at a time, full logits, plain log_softmax: an independent transcription of the convention."""
    out = []
    eot = "<|im_end|>"  # SmolLM2's chat template closes assistant turns with it
    for p, r in zip(prompts, responses):
        text = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        p_ids = tok(text, add_special_tokens=False)["input_ids"]
        c_ids = tok(r + eot, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        total = sum(logp[len(p_ids) + k - 1, t].item() for k, t in enumerate(c_ids) if not (drop_first and k == 0))
        out.append(total)
    return out


def test_end_of_turn_of_chatml(tiny):
    assert end_of_turn(tiny[1]) == "<|im_end|>"


def test_sequence_logprobs_equal_independent_computation(tiny):
    model, tok = tiny
    got = sequence_logprobs(model, tok, PROMPTS, RESPONSES, batch_size=3)
    want = _independent_logps(model, tok, PROMPTS, RESPONSES)
    for g, w in zip(got, want):
        assert math.isclose(g, w, rel_tol=1e-4), (g, w)


def _reference_code_masking(model, tok, prompts, responses):
    """Transcription of the reference implementation's masking: right-padded batch, a response mask over INPUT
    positions of the response text (end-of-turn excluded), applied to logits[:, :-1] against labels input_ids[:, 1:]."""
    eot = "<|im_end|>"
    seqs, masks = [], []
    for p, r in zip(prompts, responses):
        p_ids = tok(
            tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True), add_special_tokens=False
        )["input_ids"]
        r_ids = tok(r + eot, add_special_tokens=False)["input_ids"]
        seqs.append(p_ids + r_ids)
        masks.append([0] * len(p_ids) + [1] * (len(r_ids) - 1) + [0])
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].double()
    labels = ids[:, 1:]
    per_tok = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    return (per_tok * mask[:, :-1]).sum(-1).tolist()


def test_parity_mode_equals_reference_masking(tiny):
    model, tok = tiny
    got = sequence_logprobs(model, tok, PROMPTS, RESPONSES, batch_size=2, parity="icr")
    want = _reference_code_masking(model, tok, PROMPTS, RESPONSES)
    for g, w in zip(got, want):
        assert math.isclose(g, w, rel_tol=1e-4, abs_tol=1e-6), (g, w)
    # and the quirk is exactly "first response token not scored"
    assert got[0] != pytest.approx(sequence_logprobs(model, tok, PROMPTS[:1], RESPONSES[:1])[0])
    drop_first = _independent_logps(model, tok, PROMPTS, RESPONSES, drop_first=True)
    for g, w in zip(got, drop_first):
        assert math.isclose(g, w, rel_tol=1e-4, abs_tol=1e-6)


def test_two_model_sweep_equals_separate_passes(tiny, tiny_other):
    model, tok = tiny
    pol, ref = score_models([model, tiny_other], tok, PROMPTS, RESPONSES, batch_tokens=64)
    assert pol == pytest.approx(sequence_logprobs(model, tok, PROMPTS, RESPONSES), rel=1e-6)
    assert ref == pytest.approx(sequence_logprobs(tiny_other, tok, PROMPTS, RESPONSES), rel=1e-6)


@pytest.mark.parametrize("parity", [None, "icr"])
def test_shared_prompt_scoring_equals_independent_computation(tiny, tiny_other, parity):
    # N samples of one prompt (different lengths, one empty) scored from one run of the prompt, split when the
    # group exceeds max_batch, mixed with unshared prompts: equal to one-at-a-time full-logit computation
    model, tok = tiny
    prompts = ["Nenne drei Farben."] * 5 + ["What is 2+2?", "Écris un haïku."]
    responses = [
        "Rot.",
        "Rot, Grün und Blau sind drei Farben.",
        "",
        "Blau",
        "Grün, Gelb, Schwarz und noch viel mehr Farben!",
        "4",
        "La mer.",
    ]
    pol, ref = score_models([model, tiny_other], tok, prompts, responses, max_batch=2, parity=parity)
    pol_plain, ref_plain = score_models([model, tiny_other], tok, prompts, responses, max_batch=2, parity=parity, share_prompts=False)
    assert pol == pytest.approx(pol_plain, rel=1e-5) and ref == pytest.approx(ref_plain, rel=1e-5)
    want = _independent_logps(model, tok, prompts, responses, drop_first=parity == "icr")
    for g, w in zip(pol, want):
        assert math.isclose(g, w, rel_tol=1e-4, abs_tol=1e-6), (g, w)


def test_length_batches_respect_budget():
    lengths = [5, 50, 7, 49, 20, 3]
    batches = length_batches(lengths, batch_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100


@pytest.mark.parametrize("lang", sorted(LANGUAGE_NAMES))
def test_g_of_x_for_every_language(lang):
    x = "Write a poem about the sea."
    g = cross_lingual_prompt(x, lang)
    if lang == "en":
        assert g == x
    else:
        assert (
            g
            == f"Please answer the following instruction using only {LANGUAGE_NAMES[lang]}, unless explicitly instructed to respond in a different language.\n\n{x}"
        )
    assert G_PREFIX.endswith("\n\n")


def test_reward_variants():
    assert reward_prompt("R_c", "de", "Schreibe.", "Write.") == cross_lingual_prompt("Write.", "de")
    assert reward_prompt("R_m", "de", "Schreibe.", "Write.") == "Schreibe."
    assert reward_prompt("R_t", "de", "Schreibe.", "Write.") == "Write."


def test_annotate_rows(tiny, tiny_other):
    model, tok = tiny
    samples = [
        {"id": "a", "lang": "de", "sample_idx": k, "prompt": "Nenne drei Farben.", "response": r, "n_tokens": 3}
        for k, r in enumerate(["Rot.", "Blau und Grün."])
    ]
    rows = annotate(samples, {"a": "Name three colours."}, model, tiny_other, tok, RewardParams(variant="R_c"), None, fp32_head=False)
    want_pol = _independent_logps(model, tok, [cross_lingual_prompt("Name three colours.", "de")] * 2, ["Rot.", "Blau und Grün."])
    want_ref = _independent_logps(tiny_other, tok, [cross_lingual_prompt("Name three colours.", "de")] * 2, ["Rot.", "Blau und Grün."])
    for row, wp, wr in zip(rows, want_pol, want_ref):
        assert row["reward"] == pytest.approx(wp - wr, rel=1e-4, abs=1e-5)
        assert row["reward_prompt"] == render_prompt(tok, cross_lingual_prompt("Name three colours.", "de"))
        assert row["len_chars"] == len(samples[row["sample_idx"]]["response"])
    assert set(rows[0]) >= {
        "id",
        "lang",
        "sample_idx",
        "variant",
        "reward_prompt",
        "response",
        "policy_logp",
        "reference_logp",
        "reward",
        "n_tokens",
        "len_chars",
    }


def test_r_t_plain_style_scores_the_translation_under_the_english_instruction(tiny, tiny_other):
    # rt_style="plain": xlr's earlier R_t (English scored untranslated, the whole generation is the translation)
    from xlr.sampling import HFBackend

    model, tok = tiny
    samples = [
        {"id": "a", "lang": "de", "sample_idx": 0, "prompt": "Nenne drei Farben.", "response": "Rot, Grün, Blau.", "n_tokens": 5},
        {"id": "b", "lang": "en", "sample_idx": 0, "prompt": "Name a fruit.", "response": "Apple.", "n_tokens": 2},
    ]
    rows = annotate(
        samples,
        {"a": "Name three colours.", "b": "Name a fruit."},
        model,
        tiny_other,
        tok,
        RewardParams(variant="R_t", rt_max_new_tokens=6, rt_style="plain"),
        None,
        fp32_head=False,
        translator=HFBackend(model, tok),
    )
    de, en = rows
    assert de["response_original"] == "Rot, Grün, Blau." and de["response"] != de["response_original"]  # pi0's translation
    assert en["response"] == "Apple."  # English needs no translation
    assert de["reward_prompt"] == render_prompt(tok, "Name three colours.")  # plain English instruction, no prefix
    want = (
        _independent_logps(model, tok, ["Name three colours."], [de["response"]])[0]
        - _independent_logps(tiny_other, tok, ["Name three colours."], [de["response"]])[0]
    )
    assert de["reward"] == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert de["len_chars"] == len("Rot, Grün, Blau.")


# ----------------------------------------------------------------------------------------------------------------
# R_t as the reference implementation translates (ZNLP/Implicit-Cross-Lingual-Rewarding at commit 168a420)

# utils/trans_prompts.py TRANS_INSTRUCTION with lang = "English" (the target; utils/batch_translate.py, --tgt_langs en)
REF_MESSAGE = (
    "Please translate the following sentences into English. The input sentences are wrapped by <sentence> and </sentence>:\n\n"
    "<sentence>\n{text}\n</sentence>\n\n"
    "The translated result should be wrapped by <translated> and </translated>.\n"
)


class _CannedTranslator:
    """A generation backend that answers each translation request with a canned continuation (looked up by the
    source text inside the request) and records every call."""

    def __init__(self, tok, answers, truncated=()):
        self.tokenizer, self.answers, self.truncated, self.calls = tok, answers, set(truncated), []

    def generate(self, prompts, cfg, seed=None, progress=None):
        from xlr.sampling import Generation

        self.calls.append((list(prompts), cfg))
        out = []
        for p in prompts:
            src = max((t for t in self.answers if t in p), key=len)
            out.append([Generation(self.answers[src], 3, src in self.truncated)])
        return out


def test_reference_translation_request_is_the_reference_template():
    from xlr.rewards import translation_message

    text = "Rot, Grün und Blau.\nZweite Zeile."
    assert translation_message(text, "de") == REF_MESSAGE.format(text=text)
    assert translation_message(text, "sw") == translation_message(text, "de")  # the reference names only the target language
    # the plain option keeps xlr's earlier request
    assert (
        translation_message(text, "de", "plain")
        == f"Translate the following German text into English. Output only the translation.\n\n{text}"
    )
    with pytest.raises(ValueError, match="reward.rt_style"):
        translation_message(text, "de", "fancy")


@pytest.mark.parametrize(
    "generated, want",
    [
        # utils/batch_translate.py: search <translated>(.*?)</translated> (DOTALL) in PRIMER + output.strip(); else the output
        # without its leading tag; else the placeholder "Translation Error"
        ("Red, green and blue.\n</translated>", ("Red, green and blue.", "tagged")),
        ("  Line one.\nLine two.</translated>\nSome chatter after the tag.</translated>", ("Line one.\nLine two.", "tagged")),
        ("<translated>\nRed.</translated>", ("<translated>\nRed.", "tagged")),  # the model repeats the opening tag: kept, as the reference
        ("</translated>", ("", "tagged_empty")),
        ("Red, green and blue (cut at the cap", ("Red, green and blue (cut at the cap", "untagged")),
        ("   \n ", ("Translation Error", "error")),
        ("", ("Translation Error", "error")),
    ],
)
def test_extract_translation_by_the_reference_pattern(generated, want):
    from xlr.rewards import extract_translation

    assert extract_translation(generated) == want


def test_r_t_reference_style_primed_greedy_capped_english_skipped_and_counted(tiny, tiny_other):
    from xlr.rewards import TRANSLATION_PRIMER, translation_counts

    model, tok = tiny
    samples = [
        {"id": "a", "lang": "de", "sample_idx": 0, "prompt": "Nenne drei Farben.", "response": "Rot, Grün, Blau.", "n_tokens": 5},
        {"id": "a", "lang": "de", "sample_idx": 1, "prompt": "Nenne drei Farben.", "response": "Gelb.", "n_tokens": 2},
        {"id": "b", "lang": "en", "sample_idx": 0, "prompt": "Name a fruit.", "response": "Apple.", "n_tokens": 2},
        {"id": "b", "lang": "sw", "sample_idx": 0, "prompt": "Taja tunda.", "response": "Ndizi.", "n_tokens": 2},
    ]
    backend = _CannedTranslator(
        tok,
        {"Rot, Grün, Blau.": "Red, green, blue.\n</translated>", "Gelb.": "Yellow, and then it ran on", "Ndizi.": ""},
        truncated={"Gelb."},
    )
    counts = {}
    rows = annotate(
        samples,
        {"a": "Name three colours.", "b": "Name a fruit."},
        model,
        tiny_other,
        tok,
        RewardParams(variant="R_t", rt_max_new_tokens=77),
        None,
        fp32_head=False,
        translator=backend,
        counts=counts,
    )
    [(prompts, cfg)] = backend.calls
    # the reference's request through the chat template, the answer primed with <translated>\n (utils/translate.py)
    assert prompts == [render_prompt(tok, REF_MESSAGE.format(text=t)) + "<translated>\n" for t in ("Rot, Grün, Blau.", "Gelb.", "Ndizi.")]
    assert TRANSLATION_PRIMER == "<translated>\n"
    assert (cfg.n, cfg.do_sample, cfg.max_new_tokens) == (1, False, 77)  # greedy (temperature 0), the cap given
    # English: no R_t reward (utils/generate_preference_pair.py skips en for translateToEn_rewarding), counted
    assert [(r["lang"], r["sample_idx"]) for r in rows] == [("de", 0), ("de", 1), ("sw", 0)]
    assert [(r["response"], r["translation_status"], r["translation_truncated"]) for r in rows] == [
        ("Red, green, blue.", "tagged", False),
        ("Yellow, and then it ran on", "untagged", True),
        ("Translation Error", "error", False),
    ]
    assert counts["r_t"] == {
        "style": "reference",
        "max_new_tokens": 77,
        "texts": 3,
        "tagged": 1,
        "tagged_empty": 0,
        "untagged": 1,
        "error": 1,
        "truncated": 1,
        "skipped_english": 1,
    }
    assert translation_counts(rows, "reference", 77, skipped_english=1) == counts["r_t"]  # the same counts from the rows alone
    # scored under the plain English instruction (compute_reward_score.py, translateToEn_rewarding), original length kept
    for r, instr, orig in zip(
        rows, ["Name three colours.", "Name three colours.", "Name a fruit."], ["Rot, Grün, Blau.", "Gelb.", "Ndizi."]
    ):
        want = (
            _independent_logps(model, tok, [instr], [r["response"]])[0] - _independent_logps(tiny_other, tok, [instr], [r["response"]])[0]
        )
        assert r["reward"] == pytest.approx(want, rel=1e-4, abs=1e-5)
        assert r["reward_prompt"] == render_prompt(tok, instr) and r["response_original"] == orig and r["len_chars"] == len(orig)


def test_r_t_plain_style_requests_and_passes_english_through(tiny, tiny_other):
    model, tok = tiny
    samples = [
        {"id": "a", "lang": "de", "sample_idx": 0, "prompt": "Nenne drei Farben.", "response": "Rot.", "n_tokens": 2},
        {"id": "b", "lang": "en", "sample_idx": 0, "prompt": "Name a fruit.", "response": "Apple.", "n_tokens": 2},
    ]
    backend = _CannedTranslator(tok, {"Rot.": "Red.</translated> and more"})
    counts = {}
    rows = annotate(
        samples,
        {"a": "Name three colours.", "b": "Name a fruit."},
        model,
        tiny_other,
        tok,
        RewardParams(variant="R_t", rt_max_new_tokens=9, rt_style="plain"),
        None,
        fp32_head=False,
        translator=backend,
        counts=counts,
    )
    [(prompts, cfg)] = backend.calls
    assert prompts == [
        render_prompt(tok, "Translate the following German text into English. Output only the translation.\n\nRot.")
    ]  # no primer
    assert cfg.max_new_tokens == 9 and not cfg.do_sample
    assert [(r["lang"], r["response"], r["translation_status"]) for r in rows] == [
        ("de", "Red.</translated> and more", "plain"),
        ("en", "Apple.", "english_untranslated"),
    ]
    assert counts["r_t"] == {
        "style": "plain",
        "max_new_tokens": 9,
        "texts": 2,
        "plain": 1,
        "english_untranslated": 1,
        "truncated": 0,
        "skipped_english": 0,
    }


def test_r_t_default_cap_is_the_reference_cap_and_the_params_default(tiny, tiny_other):
    from xlr.config import RewardParams

    model, tok = tiny
    backend = _CannedTranslator(tok, {"Rot.": "Red.</translated>"})
    samples = [{"id": "a", "lang": "de", "sample_idx": 0, "prompt": "Nenne eine Farbe.", "response": "Rot.", "n_tokens": 2}]
    annotate(
        samples, {"a": "Name a colour."}, model, tiny_other, tok, RewardParams(variant="R_t"), None, fp32_head=False, translator=backend
    )
    assert backend.calls[0][1].max_new_tokens == 8192 == RewardParams().rt_max_new_tokens  # scripts/batch_translate.sh --max_tokens 8192
    assert RewardParams().rt_style == "reference"
    with pytest.raises(Exception, match="rt_style"):
        RewardParams(rt_style="fancy")
    # only English samples: nothing to translate, no rows, all counted
    counts = {}
    en = [{"id": "a", "lang": "en", "sample_idx": 0, "prompt": "Name a colour.", "response": "Red.", "n_tokens": 2}]
    assert (
        annotate(
            en,
            {"a": "Name a colour."},
            model,
            tiny_other,
            tok,
            RewardParams(variant="R_t"),
            None,
            fp32_head=False,
            translator=backend,
            counts=counts,
        )
        == []
    )
    assert len(backend.calls) == 1 and counts["r_t"]["skipped_english"] == 1 and counts["r_t"]["texts"] == 0


def test_r_t_reference_style_with_pi0_generating(tiny, tiny_other):
    # end to end with the real decoding loop: the translation is what greedy transformers generate() continues the
    # primed prompt with, extracted by the reference's rule
    from xlr.rewards import extract_translation
    from xlr.sampling import HFBackend

    model, tok = tiny
    samples = [{"id": "a", "lang": "de", "sample_idx": 0, "prompt": "Nenne drei Farben.", "response": "Rot, Grün, Blau.", "n_tokens": 5}]
    [row] = annotate(
        samples,
        {"a": "Name three colours."},
        model,
        tiny_other,
        tok,
        RewardParams(variant="R_t", rt_max_new_tokens=6),
        None,
        fp32_head=False,
        translator=HFBackend(model, tok),
    )
    primed = render_prompt(tok, REF_MESSAGE.format(text="Rot, Grün, Blau.")) + "<translated>\n"
    ids = torch.tensor([tok(primed, add_special_tokens=False)["input_ids"]])
    stops = sorted({tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id})
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6, eos_token_id=stops, pad_token_id=tok.pad_token_id
        )
    raw = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert (row["response"], row["translation_status"]) == extract_translation(raw)


# ----------------------------------------------------------------------------------------------------------------
# reward accuracy on labelled pairs (the anchor's held-out check)

PAIRS = [
    ("Name a colour.", "Blue.", "I like turtles and many other animals."),
    ("What is 2+2?", "4", "Five, probably."),
    ("Say hello in German.", "Hallo!", "Bonjour."),
    ("Give a fruit.", "An apple.", "Rock."),
]


def test_reward_accuracy_equals_independent_computation(tiny, tiny_other):
    pol, tok = tiny
    ref = tiny_other
    margins = [0.5, 1.5, 3.0, 1.0]
    rows = [{"prompt": "x", "chosen": "y", "rejected": "z", "tie": True, "score_margin": 0.0}]
    rows += [
        {"prompt": p, "chosen": c, "rejected": r, "tie": False, "score_margin": m} for (p, c, r), m in zip(PAIRS, margins, strict=True)
    ]
    got = reward_accuracy(pol, ref, tok, rows, n_boot=200, seed=0, batch_tokens=2048, fp32_head=None)
    want = []
    for p, c, r in PAIRS:
        rc = independent_seq_logp(pol, tok, p, c) - independent_seq_logp(ref, tok, p, c)
        rr = independent_seq_logp(pol, tok, p, r) - independent_seq_logp(ref, tok, p, r)
        want.append(rc > rr)
    assert got["n"] == 4 and got["ties_excluded"] == 1
    assert got["accuracy"] == sum(want) / 4
    # per pair: rows of the input (the tie, row 0, left out), the rewards, and the bins of the labels' margin
    assert [q["row"] for q in got["per_pair"]] == [1, 2, 3, 4] and [q["correct"] for q in got["per_pair"]] == want
    assert [q["score_margin"] for q in got["per_pair"]] == margins
    assert got["by_score_margin"] == {
        "(0, 1]": {"n": 2, "accuracy": (want[0] + want[3]) / 2},
        "(1, 2]": {"n": 1, "accuracy": float(want[1])},
        "(2, inf]": {"n": 1, "accuracy": float(want[2])},
    }
    assert got["ci95"][0] <= got["accuracy"] <= got["ci95"][1]


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    from xlr.stats import bootstrap_ci

    v = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 5
    a, b = bootstrap_ci(v, 500, seed=3), bootstrap_ci(v, 500, seed=3)
    assert a == b and a[0] < 0.7 < a[1] and a[1] - a[0] < 0.3
    assert all(math.isnan(x) for x in bootstrap_ci([], 10))
    # the numbers of the matrix form xlr.train's copy had (one draw of n_boot x n indices, row means), bit for bit
    import numpy as np

    for n, seed in ((50, 3), (199, 42), (805, 0)):
        x = np.random.default_rng(n).random(n)
        means = x[np.random.default_rng(seed).integers(0, n, size=(1000, n))].mean(axis=1)
        assert bootstrap_ci(x, 1000, seed) == tuple(float(q) for q in np.quantile(means, [(1 - 0.95) / 2, 1 - (1 - 0.95) / 2]))
