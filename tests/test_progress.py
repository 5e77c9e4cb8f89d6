"""Progress that moves (issue 19): every long loop's bar advances at every forward pass or decoding step, ends at its
total, and its total is right (so tqdm's ETA is valid).

Each test swaps ``tqdm.auto.tqdm`` (every xlr bar is made through it, at call time) for a subclass that records its
updates, and counts the forward passes independently: forward pre-hooks on the model or its decoder write into the
same event log, so the order of passes and updates is known. The counts are checked on the tiny model.
"""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch
from tqdm.std import tqdm as std_tqdm

from xlr.config import RewardParams
from xlr.models import load_model
from xlr.rewards import encode_pairs, score_models, score_work
from xlr.sampling import PROGRESS_MININTERVAL_S, GenConfig, HFBackend, Progress, progress_bar, sample_language


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny:0")


@pytest.fixture(scope="module")
def tiny_other():
    return load_model("tiny:1")[0]


@pytest.fixture
def rec(monkeypatch):
    """The bars made during the test (in order) and one event log: ("update", bar) and, from ``hooks``, ("forward",
    tag, input shape, whether a mask was given, the real tokens of the input)."""
    import tqdm.auto

    bars: list = []
    events: list = []

    class Recording(std_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["file"] = io.StringIO()
            super().__init__(*args, **kwargs)
            self.ns: list = []  # n after every update
            self.totals: list = []  # the total at every update
            bars.append(self)

        def update(self, n=1):
            out = super().update(n)
            self.ns.append(self.n)
            self.totals.append(self.total)
            events.append(("update", self))
            return out

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)

    def bar(desc):
        found = [b for b in bars if b.desc == desc] or [b for b in bars if b.desc.startswith(desc)]
        assert len(found) == 1, f"bars named {desc!r}: {[b.desc for b in bars]}"
        return found[0]

    return SimpleNamespace(bars=bars, events=events, bar=bar)


@pytest.fixture
def hooks():
    """hooks.on(module, tag): log its forward passes into the events of ``rec`` (set by the test)."""
    handles = []

    def on(module, tag, events):
        def hook(mod, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            mask = kwargs.get("attention_mask")
            # the input's real tokens: the mask's last columns are the input's (before them: a cached prefix)
            real = ids.numel() if mask is None else int(mask[:, -ids.shape[1] :].sum())
            events.append(("forward", tag, tuple(ids.shape), mask is not None, real))

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    yield SimpleNamespace(on=on)
    for h in handles:
        h.remove()


def forwards(events, select=lambda e: True):
    return [e for e in events if e[0] == "forward" and select(e)]


def assert_moves_after_each(events, bar, select) -> int:
    """Every selected forward pass is followed by an update of ``bar`` before the next selected pass (and before the
    end); returns the number of selected passes."""
    pending, passes = False, 0
    for e in events:
        if e[0] == "forward" and select(e):
            assert not pending, f"two forward passes without a move of {bar.desc!r} between them"
            pending, passes = True, passes + 1
        elif e[0] == "update" and e[1] is bar:
            pending = False
    assert not pending, f"the last forward pass was not followed by a move of {bar.desc!r}"
    return passes


def moves_per_pass(events, bar, select) -> list[int]:
    """How many times ``bar`` moved after each selected forward pass (before the next one)."""
    counts: list[int] = []
    for e in events:
        if e[0] == "forward" and select(e):
            counts.append(0)
        elif e[0] == "update" and e[1] is bar and counts:
            counts[-1] += 1
    return counts


def assert_ends_at_total(bar, total):
    assert bar.total == total
    assert bar.n == total and bar.ns[-1] == total
    assert all(a <= b <= total for a, b in zip(bar.ns, bar.ns[1:], strict=False))  # monotone, never past the total


# ------------------------------------------------------------------------------------------------------------------
# the bar itself


def test_progress_bar_redraws_at_the_first_update_after_its_interval_even_after_a_fast_start():
    """tqdm's default (dynamic miniters) learns "redraw every ~k updates" while updates come fast and then holds a
    slow update back; xlr's bars (miniters=1) redraw at the first update once the interval has passed."""
    clock = [1000.0]

    def run(make):
        out = io.StringIO()
        bar = make(out)
        bar._time = lambda: clock[0]
        bar.start_t = bar.last_print_t = clock[0]
        for _ in range(200):  # fast: 100 updates per second
            clock[0] += 0.01
            bar.update(1)
        before = out.getvalue()
        clock[0] += 3 * PROGRESS_MININTERVAL_S  # then slow: one update after a long pass
        bar.update(1)
        redrawn = out.getvalue() != before
        bar.close()
        return redrawn

    assert run(lambda out: progress_bar(1000, "xlr", "tok", file=out))
    assert not run(lambda out: std_tqdm(total=1000, desc="default", file=out))  # the failure mode the setting removes


def test_progress_counts_work_and_items_and_declared_totals(rec):
    with Progress("declared", item_unit="responses") as p:
        p.expect(100, 4)
        p.expect(20, 1)
        p.work(30)
        p(2)
        p.reach(120, 5)
        p.reach(50)  # never back
    b = rec.bar("declared")
    assert_ends_at_total(b, 120)
    assert p.items_done == 5 and "5/5 responses" in str(b.postfix)
    with Progress("fixed", total=10) as q:
        q.expect(99)  # a bar with its total given keeps it
        q.work(10)
    assert_ends_at_total(rec.bar("fixed"), 10)


# ------------------------------------------------------------------------------------------------------------------
# scoring: rewards.score_models (reward accuracy, annotate, probe), one update per forward pass


PAIRS = [
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I like turtles and many other animals."},
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "Five, probably."},
    {"prompt": "Say hello in German.", "chosen": "Hallo!", "rejected": "Bonjour."},
    {"prompt": "Give a fruit.", "chosen": "An apple.", "rejected": "Rock.", "tie": True},
    {"prompt": "Count to three.", "chosen": "1, 2, 3.", "rejected": "Three, two, one, zero, lift-off, and then some more."},
]


def test_reward_accuracy_moves_at_every_forward_pass_of_each_model(rec, hooks, tiny, tiny_other):
    from xlr.rewards import reward_accuracy

    model, tok = tiny
    hooks.on(model.get_decoder(), "pi0", rec.events)
    hooks.on(tiny_other.get_decoder(), "pi_ref", rec.events)
    acc = reward_accuracy(model, tiny_other, tok, PAIRS, n_boot=10, seed=0, batch_tokens=2048, fp32_head=False)
    assert acc["n"] == 4
    bar = rec.bar("reward accuracy (held-out pairs)")
    # chosen and rejected share their prompt: per pair and model, the prompt once and both completions
    usable = [p for p in PAIRS if not p.get("tie")]
    enc = encode_pairs(tok, [p["prompt"] for p in usable] * 2, [p["chosen"] for p in usable] + [p["rejected"] for p in usable])
    n = len(usable)
    want = 2 * sum(enc[i][1] + (len(enc[i][0]) - enc[i][1]) + (len(enc[n + i][0]) - enc[n + i][1]) for i in range(n))
    assert_ends_at_total(bar, want)
    assert want == sum(e[4] for e in forwards(rec.events))  # what the passes ran
    passes = assert_moves_after_each(rec.events, bar, lambda e: True)
    assert passes == len(forwards(rec.events)) == n * 2 * 2  # per pair: 2 models x (prompt pass + completions pass)
    # within a pass too: a share as each decoder layer ends, the rest after the LM head
    assert moves_per_pass(rec.events, bar, lambda e: True) == [len(model.get_decoder().layers) + 1] * passes
    assert "8/8 responses" in str(bar.postfix)


@pytest.mark.parametrize("share_prompts", [True, False])
def test_annotate_moves_at_every_forward_pass_and_declares_its_tokens(rec, hooks, tiny, tiny_other, share_prompts):
    from xlr.rewards import annotate

    model, tok = tiny
    hooks.on(model.get_decoder(), "pi0", rec.events)
    hooks.on(tiny_other.get_decoder(), "pi_ref", rec.events)
    samples = [
        {"id": i % 3, "lang": "de", "sample_idx": i // 3, "prompt": f"Frage {i % 3}?", "response": "Antwort " * (1 + i), "n_tokens": 1}
        for i in range(9)
    ]
    english = {i: f"Question {i}?" for i in range(3)}
    reward = RewardParams(variant="R_c", batch_tokens=96, share_prompts=share_prompts)  # small batches: several passes
    rows = annotate(samples, english, model, tiny_other, tok, reward, None, fp32_head=False)
    assert len(rows) == 9
    bar = rec.bar("rewards R_c")
    from xlr.rewards import reward_prompt

    prompts = [reward_prompt("R_c", s["lang"], s["prompt"], english[s["id"]]) for s in samples]
    responses = [s["response"] for s in samples]
    enc = encode_pairs(tok, prompts, responses)
    if share_prompts:  # three groups of three: the prompt once and the completions, per model
        by_prompt = {}
        for ids, p_len in enc:
            by_prompt.setdefault(tuple(ids[:p_len]), []).append(len(ids) - p_len)
        want = 2 * sum(len(k) + sum(v) for k, v in by_prompt.items())
    else:  # every pair in a length batch, padding not counted
        want = 2 * sum(len(ids) for ids, _ in enc)
    assert want == score_work([model, tiny_other], tok, prompts, responses, 96, share_prompts=share_prompts)
    assert want == sum(e[4] for e in forwards(rec.events))  # what the passes ran
    assert_ends_at_total(bar, want)
    passes = assert_moves_after_each(rec.events, bar, lambda e: True)
    assert passes == len(forwards(rec.events)) and passes >= (12 if share_prompts else 4)
    assert "9/9 samples" in str(bar.postfix)


def test_probe_scoring_bar_has_its_total_up_front_over_chunks(rec, hooks, tmp_path, monkeypatch):
    import xlr.probe as probe

    monkeypatch.setattr(probe, "SCORE_CHUNK", 3)  # several score_models calls under one bar
    models = probe._Models("tiny:0", "tiny:1", torch.float32, "cpu", False)
    policy, reference, tok = models.get()
    hooks.on(policy.get_decoder(), "pi0", rec.events)
    hooks.on(reference.get_decoder(), "pi_ref", rec.events)
    pairs = [(f"Prompt {i % 2}", f"answer number {i}" + " more" * i) for i in range(7)]
    cache = probe._Cache(tmp_path / "scores.jsonl")
    assert probe._score(models, cache, pairs, "probe R_c: log-probs", 2048, None, False, True) == 7
    bar = rec.bar("probe R_c")
    chunks = [sorted(set(pairs))[k : k + 3] for k in range(0, 7, 3)]
    want = sum(score_work([policy, reference], tok, [p for p, _ in c], [y for _, y in c], 2048) for c in chunks)
    assert set(bar.totals) == {want}  # known before the first pass, not grown chunk by chunk
    assert_ends_at_total(bar, want)
    assert assert_moves_after_each(rec.events, bar, lambda e: True) == len(forwards(rec.events))


def test_a_plain_progress_callable_still_counts_rows(tiny):
    model, tok = tiny
    seen = []
    score_models([model], tok, ["a", "a", "b"], ["x", "y", "z"], progress=seen.append)
    assert sum(seen) == 3


# ------------------------------------------------------------------------------------------------------------------
# generation: a token-budget bar that moves at every decoding step


@pytest.fixture(scope="module")
def early_stopping(tiny):
    """The tiny model with every 6th token id a stop token, so that rows end early at many different steps (their
    unused budget is credited when they end) and finished rows are refilled mid-batch."""
    model, tok = tiny
    be = HFBackend(model, tok)
    be.stop_ids = sorted(set(be.stop_ids) | set(range(3, len(tok), 6)))
    return be


@pytest.fixture
def prefilled(monkeypatch):
    """The prompt tokens every HFBackend.generate call's continuous loop prefilled (its own count, last_stats): the
    bars count them too (a prefill of many long prompts is minutes on a slow CPU)."""
    counts: list[int] = []
    generate = HFBackend.generate

    def counting(self, *args, **kwargs):
        self.last_stats = {}
        out = generate(self, *args, **kwargs)
        counts.append(self.last_stats.get("prefill_tokens", 0))
        return out

    monkeypatch.setattr(HFBackend, "generate", counting)
    return counts


ROWS = [{"instruction_id": f"id{i}", "instruction": f"Frage {i}: " + "erkläre " * (i % 4) + "das bitte."} for i in range(7)]


def decode_step(e) -> bool:
    return e[2][1] == 1  # one new token per row: a decoding step (a prefill has the prompts' width)


@pytest.mark.parametrize("schedule", ["continuous", "static"])
def test_sampling_bar_moves_at_every_decoding_step_and_ends_at_the_budget(rec, hooks, early_stopping, tmp_path, schedule, prefilled):
    from xlr.files import read_jsonl

    cfg = GenConfig(n=2, do_sample=True, temperature=0.9, max_new_tokens=12, batch_size=4, schedule=schedule)
    hooks.on(early_stopping.model, "policy", rec.events)
    counts = sample_language(early_stopping, ROWS, "de", tmp_path, cfg, seed=3, shard_size=3)
    assert counts["samples"] == 14
    samples = [r for p in sorted(tmp_path.glob("shard-*.jsonl")) for r in read_jsonl(p)]
    assert any(not r["truncated"] for r in samples) and any(r["n_tokens"] < 11 for r in samples)  # rows did end early
    bar = rec.bar("sampling de")
    # prompts x n x max_new_tokens, and in the continuous loop the prompt tokens of its prefills (moved per layer: a
    # prefill of many long prompts is minutes on a slow CPU)
    prompt_tokens = sum(prefilled) if schedule == "continuous" else 0
    assert len(prefilled) == 3 and (prompt_tokens > 0) == (schedule == "continuous")
    assert_ends_at_total(bar, 7 * 2 * 12 + prompt_tokens)
    assert bar.totals == sorted(bar.totals) and bar.totals[-1] == 7 * 2 * 12 + prompt_tokens  # grows as prompts are found, never shrinks
    steps = assert_moves_after_each(rec.events, bar, decode_step)
    assert steps == len(forwards(rec.events, decode_step)) > 12
    assert len(bar.ns) >= steps and "7/7 prompts" in str(bar.postfix)
    # a rerun finds every shard done: the bar goes straight to its total, no pass
    rec.bars.clear()
    rec.events.clear()
    sample_language(early_stopping, ROWS, "de", tmp_path, cfg, seed=3, shard_size=3)
    assert_ends_at_total(rec.bar("sampling de"), 7 * 2 * 12)
    assert not forwards(rec.events)


def test_greedy_translation_bar_moves_at_every_decoding_step(rec, hooks, early_stopping, tiny_other, prefilled):
    """R_t in annotate: the translations (greedy, distinct texts once) in token budget, then the scoring in tokens."""
    from xlr.rewards import annotate

    model, tok = early_stopping.model, early_stopping.tokenizer
    samples = [
        {"id": "a", "lang": "de", "sample_idx": k, "prompt": "Nenne Farben.", "response": r, "n_tokens": 2}
        for k, r in enumerate(["Rot.", "Blau und Grün.", "Rot.", "Gelb, Lila und Orange."])
    ]
    hooks.on(model, "pi0", rec.events)
    reward = RewardParams(variant="R_t", rt_max_new_tokens=9)
    rows = annotate(samples, {"a": "Name colours."}, model, tiny_other, tok, reward, None, fp32_head=False, translator=early_stopping)
    assert len(rows) == 4
    bar = rec.bar("rewards R_t: pi0 translates")
    assert_ends_at_total(bar, 3 * 9 + sum(prefilled))  # 3 distinct texts x the cap, + the translation prompts' tokens
    assert sum(prefilled) > 0 and bar.totals == sorted(bar.totals)
    steps = assert_moves_after_each(rec.events, bar, decode_step)
    assert steps == len(forwards(rec.events, decode_step)) > 0
    scoring = rec.bar("rewards R_t")
    assert scoring.n == scoring.total > 0 and "4/4 samples" in str(scoring.postfix)


def test_probe_translation_bar_reaches_its_total_over_chunks(rec, hooks, tmp_path, monkeypatch, prefilled):
    import xlr.probe as probe

    monkeypatch.setattr(probe, "TRANSLATE_CHUNK", 2)
    models = probe._Models("tiny:0", "tiny:1", torch.float32, "cpu", False)
    policy = models.get()[0]
    hooks.on(policy, "pi0", rec.events)
    todo = [("de", "Rot."), ("fr", "Bleu et vert."), ("de", "Rot."), ("es", "Amarillo."), ("ru", "Красный.")]
    cache = probe._Cache(tmp_path / "translations.jsonl")
    assert probe._translate(models, cache, todo, {"style": "reference", "max_new_tokens": 5}, {}, 4) == 4
    bar = rec.bar("probe R_t")
    assert_ends_at_total(bar, 4 * 5 + sum(prefilled))  # 4 distinct answers x the cap, + the prompts' tokens
    assert assert_moves_after_each(rec.events, bar, decode_step) == len(forwards(rec.events, decode_step)) > 0


def test_greedy_answers_bar(rec, hooks, tiny, prefilled):
    from xlr.sampling import greedy_answers

    model, tok = tiny
    hooks.on(model, "model", rec.events)
    out = greedy_answers(model, tok, {"de": "Hallo!", "fr": "Bonjour !"}, max_new_tokens=5)
    assert set(out) == {"de", "fr"}
    bar = rec.bar("greedy answers")
    assert_ends_at_total(bar, 2 * 5 + sum(prefilled))
    assert sum(prefilled) > 0
    assert assert_moves_after_each(rec.events, bar, decode_step) == len(forwards(rec.events, decode_step)) > 0


def test_data_parallel_engines_report_their_token_budget(rec, tmp_path, monkeypatch):
    """Two worker engines write their budget spent to progress files; the launcher's bar sums them to the total."""
    from xlr import faults
    from xlr.sampling import EngineConfig, SamplingTask, sample_tasks

    monkeypatch.delenv(faults.ENV, raising=False)
    monkeypatch.delenv(faults.RUN_PID_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg = GenConfig(n=2, do_sample=True, temperature=0.9, max_new_tokens=5, batch_size=4)
    engine = EngineConfig(backend="hf", spec="tiny:0", dtype="float32", device="cpu", seed=1, data_parallel_size=2)
    tasks = [SamplingTask("de", ROWS[:5], "de", tmp_path / "de", cfg, seed=7)]
    sample_tasks(engine, tasks, 2, tmp_path / "engines", poll_s=0.2)
    bar = rec.bar("sampling: 2 engines")
    assert_ends_at_total(bar, 5 * 2 * 5)
    files = sorted((tmp_path / "engines").glob("engine-*.progress"))
    assert [f.name for f in files] == ["engine-0.progress", "engine-1.progress"]
    assert [int(f.read_text()) for f in files] == [3 * 2 * 5, 2 * 2 * 5]  # engine 0: shards 0 and 2 (3 prompts); 1: shard 1
    assert "3/3 shards" in str(bar.postfix)


# ------------------------------------------------------------------------------------------------------------------
# judging: a local judge's bar moves after each batch (one forward pass)


def _items(n):
    return [
        {
            "key": f"k{i}",
            "instruction": f"Question {i}? " + "Explain. " * i,
            "output": f"model answer {i}",
            "baseline_output": "ref " * (i + 1),
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("protocol", ["pairwise", "pointwise_score", "loglik"])
def test_local_judge_bar_moves_within_every_forward_pass(rec, hooks, tiny, tmp_path, protocol):
    from xlr import judge as J
    from xlr.config import JudgeParams

    model, tok = tiny
    judge = J.LocalJudge(model, tok, "tiny", batch_tokens=256)  # small batches: several passes
    hooks.on(model.get_decoder(), "judge", rec.events)
    recs, st = J.judge_pairs(
        judge, _items(6), J.JudgeCache(tmp_path / "c.jsonl"), JudgeParams(protocol=protocol), J.protocol_template(True), desc="judging"
    )
    assert len(recs) == 6
    bar = rec.bar("judging")
    # in prompt tokens: every pass's real tokens (prefix prefills, shared instructions, batches), declared up front
    want = sum(e[4] for e in forwards(rec.events))
    if protocol != "loglik":
        assert want == judge.last_stats["computed_tokens"]
    assert set(bar.totals) == {want}
    assert_ends_at_total(bar, want)
    passes = assert_moves_after_each(rec.events, bar, lambda e: True)
    assert passes == len(forwards(rec.events)) >= 3
    assert moves_per_pass(rec.events, bar, lambda e: True) == [len(model.get_decoder().layers) + 1] * passes
    assert f"{st.calls}/{st.calls} " in str(bar.postfix)


def test_an_api_judge_keeps_a_bar_of_judgments(rec, tmp_path):
    from xlr import judge as J
    from xlr.config import JudgeParams

    class Stub:  # answers at once, as an endpoint would (one progress call per reply)
        id = "stub"

        def __call__(self, prompts, progress=None, sink=None):
            out = []
            for i, _ in enumerate(prompts):
                r = {"logprob_m": -0.5, "logprob_M": -1.0, "tokens_in": 10, "tokens_out": 1}
                sink(i, r)
                progress(1)
                out.append(r)
            return out

    _, st = J.judge_pairs(
        Stub(), _items(5), J.JudgeCache(tmp_path / "c.jsonl"), JudgeParams(protocol="pairwise"), J.protocol_template(True), desc="api"
    )
    assert_ends_at_total(rec.bar("api"), st.calls)
    assert rec.bar("api").ns == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------------------------------------------------------
# training: a micro-batch bar in place of transformers' per-step one


def test_micro_batches_follow_transformers_epoch_cut():
    from xlr.train import micro_batches

    # 5 batches per epoch, grad_accum 2: steps of 2, 2, 1 micro-batches
    assert [micro_batches(s, 5, 2) for s in range(7)] == [0, 2, 4, 5, 7, 9, 10]
    assert micro_batches(3, 4, 4) == 12 and micro_batches(2, 3, 1) == 2


def test_dpo_bar_moves_at_every_micro_batch(rec, tmp_path, monkeypatch):
    from trl import DPOTrainer

    from xlr.config import LoraParams, TrainingParams
    from xlr.train import DPOLoss, to_conversational, train_dpo

    steps = []
    original = DPOTrainer.training_step

    def training_step(self, *args, **kwargs):
        rec.events.append(("forward", "micro-batch", (1, 0), True))
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DPOTrainer, "training_step", training_step)
    pairs = [
        to_conversational(*p)
        for p in [
            ("Name a colour.", "Blue.", "I like turtles."),
            ("What is 2+2?", "4", "Five, probably."),
            ("Say hello in German.", "Hallo!", "Bonjour."),
            ("Give a fruit.", "An apple.", "Rock."),
            ("Count to two.", "1, 2.", "Three."),
        ]
    ]
    dpo = TrainingParams(
        beta=0.1,
        learning_rate=1e-4,
        epochs=1,
        batch_size=1,
        grad_accum=2,
        max_length=64,
        finetune="lora",
        lora=LoraParams(r=2, alpha=4),
        warmup_ratio=0.0,
        save_merged=False,
    )
    train_dpo("tiny:0", pairs, tmp_path, dpo, loss=DPOLoss.sigmoid(), seed=0, dtype=None, device="cpu")
    bar = rec.bar("DPO training")
    assert len(steps) == 5  # 5 pairs, micro-batch 1, steps of 2 + 2 + 1
    assert_ends_at_total(bar, 5)  # micro-batches, not 3 steps x 2
    assert assert_moves_after_each(rec.events, bar, lambda e: e[1] == "micro-batch") == 5
    assert "optimizer step 3/3" in str(bar.postfix)
    assert not [b for b in rec.bars if b.total == 3]  # transformers' per-step bar is gone
    # inside each micro-batch too (one took 42 s on a slow CPU): a share per decoder layer's forward and backward,
    # never reaching the next whole micro-batch early; whole micro-batches exactly at each end
    layers = 2  # the tiny model's decoder layers
    inside = [n for n in bar.ns if n != int(n)]
    assert len(inside) >= 5 * 2 * layers
    assert all(math.floor(n) < n < math.floor(n) + 0.96 for n in inside)
    assert [n for n in bar.ns if n == int(n)][-5:] == [1, 2, 3, 4, 5]
    assert math.isclose(bar.mininterval, PROGRESS_MININTERVAL_S)
