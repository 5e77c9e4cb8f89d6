"""Pairwise judges: AlpacaEval 2's ``weighted_alpaca_eval_gpt4_turbo`` protocol, plus the ICR paper's same-language clause.

Protocol (alpaca_eval 0.6.6, read from the installed package, never copied here):
- prompt template ``evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt``: the instruction and two outputs
  labelled ``m`` (output_1) and ``M`` (output_2), filled as alpaca_eval's ``make_prompts`` does (first occurrence of
  each placeholder, in order);
- request settings from ``evaluators_configs/weighted_alpaca_eval_gpt4_turbo/configs.yaml`` (max_tokens 1,
  temperature 1, logprobs, top_logprobs 5);
- the soft preference from the first token's log-probabilities over the two labels (alpaca_eval's ``logprob_parser``
  with ``is_binarize: false``: a label missing from top_logprobs has probability 0; both missing: unjudgeable);
- the two outputs are presented in a random order per item, drawn as alpaca_eval draws it (:func:`model_shown_first`:
  the same items are switched for the same inputs and seed), and identical outputs get 0.5 without a call.

The paper's clause ("A good output should be in the same language as the instruction, ...") opens the template's Task
paragraph, as in the paper's own ``weighted_alpaca_eval_gpt4_turbo_multilingual`` template (ZNLP/Implicit-Cross-Lingual-
Rewarding, alpaca_eval/src/alpaca_eval/evaluators_configs/): the result is that file, byte for byte.

Backends: :class:`LocalJudge` (a local causal LM through its own chat template; next-token distribution restricted to
the two label tokens, computed with one forward pass) and :class:`APIJudge` (any OpenAI-compatible Chat Completions
endpoint, via the ``openai`` client: bounded concurrency, retries with exponential backoff on 429/5xx/timeouts).
Every judgment is appended to a JSONL cache keyed by (judge, rendered prompt), so a rerun or a resume costs nothing.
The API key is read from the environment variable named in params at call time and is never stored.

Protocols (``judge.protocol``; every one gives, per item, ``p_model`` in [0, 1] or NaN = unjudgeable, counted):
- ``pairwise``: the AlpacaEval prompt above, one order drawn per item (``judge.orders: both`` judges both);
- ``pairwise_both``: the same prompt in both orders, the two preferences averaged (cancels a position bias);
- ``pointwise_score``: each output scored alone on a 1..``score_max`` scale (single-digit tokens); its score is the
  distribution of the next token over the digits, renormalised (G-Eval's probability-weighted scoring, Liu et al.
  2023, arXiv 2303.16634); the preference is P(S_model > S_baseline) + P(equal) / 2 for independent draws;
- ``pointwise_yes``: each output alone, P(Yes) / (P(Yes) + P(No)) to a quality question (the P(True) of Kadavath et al.
  2022, arXiv 2207.05221); the preference by the same rule: 0.5 + (P_model - P_baseline) / 2;
- ``loglik`` (local only): the judge model's mean token log-likelihood of each output given the instruction as a user
  message (the reference-free length-normalised reward of SimPO, Meng et al. 2024, arXiv 2405.14734);
  preference sigmoid((s_model - s_baseline) / ``loglik_tau``).
A pointwise score depends only on (judge, protocol, instruction, output): it is cached under that key, so a reference
is scored once however many models are judged against it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from xlr import faults
from xlr.errors import XlrError

if TYPE_CHECKING:
    from xlr.config import JudgeParams

log = logging.getLogger(__name__)

ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
TEMPLATE_REL = "evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt"
CONFIG_REL = f"evaluators_configs/{ANNOTATOR}/configs.yaml"
SAME_LANGUAGE_CLAUSE = (
    "A good output should be in the same language as the instruction, except when the instruction explicitly requests "
    "the output in a different language."
)
# The paper's template (ZNLP/Implicit-Cross-Lingual-Rewarding @168a420, alpaca_eval/src/alpaca_eval/evaluators_configs/
# weighted_alpaca_eval_gpt4_turbo_multilingual/alpaca_eval_clf.txt, and the byte-identical gpt4o_multilingual one) is
# alpaca_eval's with the clause, then one space, opening the Task paragraph; nothing else differs.
_CLAUSE_BEFORE = "## Task\n\n"
LABELS = ("m", "M")  # output_1, output_2


class JudgeError(XlrError, RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------------------
# protocol


def _alpaca_eval_dir() -> Path:
    spec = importlib.util.find_spec("alpaca_eval")  # locates the package without importing it (its import loads .env files)
    if spec is None or not spec.submodule_search_locations:
        raise JudgeError("alpaca-eval is not installed; the judge protocol's template is read from it. Fix: pip install alpaca-eval==0.6.6")
    return Path(list(spec.submodule_search_locations)[0])


def request_settings() -> dict[str, Any]:
    """alpaca_eval's own completion settings for the annotator (max_tokens 1, temperature 1, logprobs, top_logprobs 5)."""
    cfg = yaml.safe_load((_alpaca_eval_dir() / CONFIG_REL).read_text())[ANNOTATOR]
    kw = dict(cfg["completions_kwargs"])
    kw.pop("model_name", None)  # the model comes from params
    parser = cfg["completion_parser_kwargs"]
    if (parser["numerator_token"], tuple(parser["denominator_tokens"])) != (LABELS[0], LABELS):
        raise JudgeError(f"alpaca_eval's {ANNOTATOR} labels changed ({parser}); xlr expects m/M")
    return kw


def protocol_template(same_language_clause: bool = True) -> str:
    text = (_alpaca_eval_dir() / TEMPLATE_REL).read_text()
    if not same_language_clause:
        return text
    if text.count(_CLAUSE_BEFORE) != 1:
        raise JudgeError(f"alpaca_eval's template {TEMPLATE_REL} changed: cannot find where to add the same-language clause")
    return text.replace(_CLAUSE_BEFORE, f"{_CLAUSE_BEFORE}{SAME_LANGUAGE_CLAUSE} ")


def render(template: str, instruction: str, output_1: str, output_2: str) -> str:
    """As alpaca_eval's make_prompts: replace the first occurrence of each placeholder, in order (not str.format)."""
    out = template
    for key, value in (("instruction", instruction), ("output_1", output_1), ("output_2", output_2)):
        out = out.replace("{" + key + "}", str(value), 1)
    return out


def to_messages(prompt: str) -> list[dict[str, str]]:
    """ChatML-style prompt -> messages (as alpaca_eval's ``prompt_to_chatml``; written here so that alpaca_eval is not
    imported at run time: its import runs load_dotenv)."""
    prompt = prompt.strip()
    if not (prompt.startswith("<|im_start|>") and prompt.endswith("<|im_end|>")):
        raise JudgeError("judge prompt is not in <|im_start|> ... <|im_end|> form")
    messages = []
    for part in prompt.split("<|im_start|>")[1:]:
        role, _, rest = part.partition("\n")
        messages.append({"role": role.strip(), "content": rest.split("<|im_end|>", 1)[0].strip()})
    return messages


ORDER_SEED_COLUMNS = {"instruction": ("instruction",), "instruction_outputs": ("instruction", "output_1", "output_2")}


def model_shown_first(instruction: str, output: str, baseline_output: str, seed: int, order_seed_columns: str = "instruction") -> bool:
    """Whether the model's output is presented first (label ``m``) in the one-order protocol, drawn as alpaca_eval 0.6.6
    draws its switch: ``RandomSwitchTwoColumnsProcessor.preprocess`` (src/alpaca_eval/processors.py) switches when
    ``random.Random("is_switched_outputs" + "".join(row[sorted(columns)]) + str(seed)).choices([False, True], k=1)[0]``
    (``utils.random_seeded_choice``), on a row whose output_1 is the reference and output_2 the model (``evaluate``
    passes them so), hence switched = model first. ``order_seed_columns``: "instruction" (the columns of the
    SinglePairwiseAnnotator's default ``random_seed_column``: every model gets the same order on an item) or
    "instruction_outputs" (its ``random_seed_column`` set to instruction, output_1, output_2: each pair its own draw).
    alpaca_eval's annotator seed is 0 unless one is passed."""
    import random

    if order_seed_columns not in ORDER_SEED_COLUMNS:
        raise JudgeError(f"judge order_seed_columns={order_seed_columns!r}: use one of {', '.join(ORDER_SEED_COLUMNS)}")
    row = {"instruction": instruction, "output_1": baseline_output, "output_2": output}
    text = "is_switched_outputs" + "".join(str(row[c]) for c in sorted(ORDER_SEED_COLUMNS[order_seed_columns])) + str(seed)
    return random.Random(text).choices([False, True], k=1)[0]


def p_first(logprob_m: float, logprob_M: float) -> float:
    """P(output_1 better) = p(m) / (p(m) + p(M)); NaN when neither label was seen."""
    if logprob_m == -math.inf and logprob_M == -math.inf:
        return math.nan
    top = max(logprob_m, logprob_M)
    return math.exp(logprob_m - top) / (math.exp(logprob_m - top) + math.exp(logprob_M - top))


PROTOCOLS = ("pairwise", "pairwise_both", "pointwise_score", "pointwise_yes", "loglik")
PAIRWISE_PROTOCOLS = ("pairwise", "pairwise_both")
YES_NO = ("Yes", "No")

# Pointwise prompts, written here (ChatML like alpaca_eval's templates, so both backends take them): the criteria
# follow MT-Bench's single-answer grading (helpfulness, relevance, accuracy, depth, detail; Zheng et al. 2023,
# arXiv 2306.05685), the question is put after the output so that the answer token comes right after it.
_POINTWISE_SYSTEM = "You are a careful, impartial evaluator of the answers that AI assistants give to users' instructions."
_POINTWISE_SCORE = """<|im_start|>system
{system}<|im_end|>
<|im_start|>user
Rate the quality of the answer below to the user's instruction on a scale from 1 (very poor) to {top} (excellent). Consider how helpful, relevant, accurate, deep and detailed it is for this instruction; do not let its length alone decide.{clause}

## Instruction

{instruction}

## Answer

{output}

## Your rating

Reply with a single digit from 1 to {top} and nothing else.<|im_end|>"""
_POINTWISE_YES = """<|im_start|>system
{system}<|im_end|>
<|im_start|>user
Here is a user's instruction and an answer written by an AI assistant.

## Instruction

{instruction}

## Answer

{output}

## Question

Is this a high-quality answer: helpful, relevant and accurate for the instruction, one that a careful expert would accept?{clause} Reply with Yes or No and nothing else.<|im_end|>"""


@dataclass(frozen=True)
class Protocol:
    """How a judge turns an item (instruction, model output, baseline output) into ``p_model``; see the module doc."""

    name: str = "pairwise"
    same_language_clause: bool = True
    score_max: int = 5
    loglik_tau: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise JudgeError(f"judge protocol {self.name!r}: use one of {', '.join(PROTOCOLS)}")
        if not 2 <= self.score_max <= 9:
            raise JudgeError(f"judge.score_max={self.score_max}: the scale must be 1..N with N in 2..9 (each score one digit token)")
        if self.loglik_tau <= 0:
            raise JudgeError(f"judge.loglik_tau={self.loglik_tau}: must be > 0")

    @property
    def pairwise(self) -> bool:
        return self.name in PAIRWISE_PROTOCOLS

    @property
    def tag(self) -> str:
        """What, besides the judge and the rendered prompt, a cached pointwise score depends on."""
        return {"pointwise_score": f"pointwise_score:1-{self.score_max}", "pointwise_yes": "pointwise_yes", "loglik": "loglik:mean"}.get(
            self.name, self.name
        )

    @property
    def labels(self) -> tuple[str, ...]:
        if self.name == "pointwise_score":
            return tuple(str(k) for k in range(1, self.score_max + 1))
        if self.name == "pointwise_yes":
            return YES_NO
        return LABELS

    def render_pointwise(self, instruction: str, output: str) -> str:
        clause = f" {SAME_LANGUAGE_CLAUSE}" if self.same_language_clause else ""
        if self.name == "loglik":
            return json.dumps([instruction, output], ensure_ascii=False)  # the cache key's text; the model sees the chat
        template = _POINTWISE_SCORE if self.name == "pointwise_score" else _POINTWISE_YES
        out = template.replace("{system}", _POINTWISE_SYSTEM, 1).replace("{clause}", clause, 1).replace("{top}", str(self.score_max))
        # one pass over the template's own placeholders: braces inside the instruction or the output stay as they are
        head, rest = out.split("{instruction}", 1)
        middle, tail = rest.split("{output}", 1)
        return head + str(instruction) + middle + str(output) + tail


def protocol_spec(jp: Any) -> Protocol:
    """The :class:`Protocol` named by the params' judge section (``judge.protocol``, ``judge.orders``, ...)."""
    return Protocol(
        getattr(jp, "protocol", "pairwise"),
        same_language_clause=jp.same_language_clause,
        score_max=getattr(jp, "score_max", 5),
        loglik_tau=getattr(jp, "loglik_tau", 0.1),
    )


def score_distribution(logprobs: dict[str, float], labels: Sequence[str]) -> list[float] | None:
    """Renormalised probabilities of ``labels`` (a label never seen has probability 0; none seen: None)."""
    lps = [logprobs.get(t, -math.inf) for t in labels]
    top = max(lps)
    if top == -math.inf or math.isnan(top):
        return None
    w = [math.exp(v - top) for v in lps]
    z = sum(w)
    return [x / z for x in w]


def pointwise_score(entry: dict[str, Any], protocol: Protocol) -> float:
    """One output's score from its cached entry: the expected score (1..N), P(Yes), or the mean log-likelihood; NaN
    when the judge gave no usable label."""
    if protocol.name == "loglik":
        n = entry.get("n_tokens") or 0
        return entry["sum_logprob"] / n if n and math.isfinite(entry["sum_logprob"]) else math.nan
    dist = score_distribution(entry["logprobs"], protocol.labels)
    if dist is None:
        return math.nan
    if protocol.name == "pointwise_yes":
        return dist[0]
    return sum((k + 1) * q for k, q in enumerate(dist))


def pointwise_preference(entry_model: dict[str, Any], entry_base: dict[str, Any], protocol: Protocol) -> float:
    """P(model's output better) from the two outputs' pointwise results: P(X > Y) + P(X = Y) / 2 for independent draws
    from the two score distributions (for Yes/No this is 0.5 + (P_model - P_base) / 2); for ``loglik``
    sigmoid((s_model - s_base) / tau). NaN when either output is unjudgeable."""
    if protocol.name == "loglik":
        a, b = pointwise_score(entry_model, protocol), pointwise_score(entry_base, protocol)
        if math.isnan(a) or math.isnan(b):
            return math.nan
        return 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, (a - b) / protocol.loglik_tau))))
    x, y = score_distribution(entry_model["logprobs"], protocol.labels), score_distribution(entry_base["logprobs"], protocol.labels)
    if x is None or y is None:
        return math.nan
    if protocol.name == "pointwise_yes":  # levels in ascending order: No < Yes
        x, y = x[::-1], y[::-1]
    below = 0.0  # P(Y < current level)
    p = 0.0
    for k in range(len(x)):
        p += x[k] * (below + 0.5 * y[k])
        below += y[k]
    return min(1.0, max(0.0, p))


def label_mass(entry: dict[str, Any], protocol: Protocol) -> float:
    """How much of the judge's next-token probability fell on the protocol's labels (how sure it is that it answers
    with one at all; NaN for ``loglik``)."""
    if protocol.name == "loglik":
        return math.nan
    if protocol.pairwise:
        lps = [entry.get("logprob_m", -math.inf), entry.get("logprob_M", -math.inf)]
    else:
        lps = [entry["logprobs"].get(t, -math.inf) for t in protocol.labels]
    return float(sum(math.exp(v) for v in lps if v is not None and v > -math.inf))


# ----------------------------------------------------------------------------------------------------------------
# cache


class JudgeCache:
    """Append-only JSONL of judgments keyed by sha256(judge id, rendered prompt). A line cut by a kill is ignored (counted)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        self.bad_lines = 0
        self._needs_newline = False  # a kill mid-append leaves a cut last line; the next entry must start a new one
        if path.is_file():
            text = path.read_text()
            self._needs_newline = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    e = json.loads(line)
                    self.entries[e["key"]] = e
                except (json.JSONDecodeError, KeyError):
                    self.bad_lines += 1

    @staticmethod
    def key(judge_id: str, prompt: str) -> str:
        return hashlib.sha256(f"{judge_id}\n{prompt}".encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with self.path.open("a") as f:
                    f.write(("\n" if self._needs_newline else "") + json.dumps(entry) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                self._needs_newline = True  # part of the line may be on disk
                raise OSError(
                    e.errno,
                    f"{self.path}: could not append a judgment ({e.strerror}). The judgments cached before it are "
                    "intact. Fix: free disk space and rerun the same command; only the missing judgments are made again.",
                ) from e
            self._needs_newline = False
            self.entries[entry["key"]] = entry
        faults.point("judgment")


# ----------------------------------------------------------------------------------------------------------------
# backends: each maps rendered prompts to {"logprob_m", "logprob_M", "tokens_in", "tokens_out"}


class LocalJudge:
    """A local causal LM: the rendered prompt through its chat template (generation prompt on), one forward pass, the
    log-softmax of the next-token logits read at the two label tokens (full-vocabulary log-probs are stored; the
    preference uses the two renormalised).

    ``prefix_cache`` says which key/value caches are shared between the prompts of one call: "none" (each prompt whole),
    "global" (the prefix common to all prompts: system message and the template's opening) or "grouped" (that one plus
    the longer prefixes shared by groups of prompts: the instruction of an item judged for several models, the
    reference presented first before each model's output; see :meth:`_next_token`). True means "grouped", False
    "none". ``min_group_tokens``: how many tokens past its parent's prefix a group must share to get a prefill of its
    own (below that a separate prefill and a smaller batch cost more than they save)."""

    PREFIX_MODES = ("none", "global", "grouped")
    reports_work = True  # a Progress given as ``progress`` gets the prompt tokens of every pass, layer by layer (judge_pairs)

    def __init__(
        self, model: Any, tokenizer: Any, name: str, batch_tokens: int = 2048, prefix_cache: bool | str = True, min_group_tokens: int = 16
    ):
        mode = ("grouped" if prefix_cache else "none") if isinstance(prefix_cache, bool) else prefix_cache
        if mode not in self.PREFIX_MODES:
            raise JudgeError(f"LocalJudge prefix_cache={prefix_cache!r}: use True, False or one of {', '.join(self.PREFIX_MODES)}")
        if min_group_tokens < 1:
            raise JudgeError(f"LocalJudge min_group_tokens={min_group_tokens}: must be >= 1")
        self.model, self.tokenizer, self.name, self.batch_tokens = model, tokenizer, name, batch_tokens
        self.prefix_mode, self.prefix_cache, self.min_group_tokens = mode, mode != "none", min_group_tokens
        self.last_stats: dict[str, int] = {}  # what the last _next_token call fed the model (see there)
        self.id = f"local:{name}"
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in LABELS]
        if any(len(i) != 1 for i in ids) or ids[0] == ids[1]:
            raise JudgeError(
                f"judge {name}: the labels {LABELS} are not single distinct tokens in its tokenizer ({ids}); pick another judge model"
            )
        self.label_ids = [i[0] for i in ids]

    def encode(self, prompt: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(to_messages(prompt), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(
        self,
        prompts: Sequence[str],
        progress: Callable[[int], None] | None = None,
        sink: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Label log-probs per prompt; ``sink(i, result)`` is called as soon as prompt i is judged.

        Every judge prompt starts with the same tokens (system message and the template's opening, ~150 tokens of
        ~800 with Qwen): their key/value cache is computed once and reused by every batch; with ``prefix_cache``
        "grouped" so are the longer prefixes that groups of prompts share (see :meth:`_next_token`)."""

        def row(logp: Any, n_in: int) -> dict[str, Any]:
            return {
                "logprob_m": float(logp[self.label_ids[0]]),
                "logprob_M": float(logp[self.label_ids[1]]),
                "tokens_in": n_in,
                "tokens_out": 0,
            }

        return self._next_token(prompts, row, progress, sink)

    def token_ids(self, tokens: Sequence[str]) -> list[int]:
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in tokens]
        if any(len(i) != 1 for i in ids) or len({i[0] for i in ids}) != len(ids):
            raise JudgeError(
                f"judge {self.name}: the labels {list(tokens)} are not single distinct tokens in its tokenizer ({ids}); pick another protocol or judge model"
            )
        return [i[0] for i in ids]

    def next_token_logprobs(
        self,
        prompts: Sequence[str],
        tokens: Sequence[str],
        progress: Callable[[int], None] | None = None,
        sink: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """{"logprobs": {token: log-prob of it as the next token}} per prompt (pointwise protocols)."""
        ids = self.token_ids(tokens)

        def row(logp: Any, n_in: int) -> dict[str, Any]:
            return {"logprobs": {t: float(logp[i]) for t, i in zip(tokens, ids, strict=True)}, "tokens_in": n_in, "tokens_out": 0}

        return self._next_token(prompts, row, progress, sink)

    def sequence_scores(
        self,
        instructions: Sequence[str],
        outputs: Sequence[str],
        progress: Callable[[int], None] | None = None,
        sink: Callable[[int, dict[str, Any]], None] | None = None,
        chunk: int = 8,
    ) -> list[dict[str, Any]]:
        """{"sum_logprob", "n_tokens"} of each output (+ end of turn) as the judge's answer to the instruction as a user
        message (xlr.rewards' convention); in chunks, each reported to ``sink`` as soon as it is scored. ``progress``
        goes to :func:`xlr.rewards.score_models`: it counts the outputs of each forward pass (a length batch, or the
        outputs sharing an instruction) as it ends; a :class:`xlr.sampling.Progress` is first told the tokens of all
        chunks (:func:`xlr.rewards.score_work`) and moves within every pass."""
        from xlr.rewards import encode_pairs, score_models, score_work

        if hasattr(progress, "expect"):
            chunks = [(list(instructions[k : k + chunk]), list(outputs[k : k + chunk])) for k in range(0, len(outputs), chunk)]
            progress.expect(sum(score_work([self.model], self.tokenizer, i, o, self.batch_tokens, 16) for i, o in chunks), len(outputs))
            progress.freeze()  # the chunks' own declarations are in the total already
        out: list[dict[str, Any]] = []
        for k in range(0, len(outputs), chunk):
            ins, outs = list(instructions[k : k + chunk]), list(outputs[k : k + chunk])
            enc = encode_pairs(self.tokenizer, ins, outs)
            sums = score_models([self.model], self.tokenizer, ins, outs, batch_tokens=self.batch_tokens, progress=progress, max_batch=16)[0]
            for j, (ids, n_prompt) in enumerate(enc):
                res = {"sum_logprob": float(sums[j]), "n_tokens": len(ids) - n_prompt, "tokens_in": len(ids), "tokens_out": 0}
                out.append(res)
                if sink:
                    sink(k + j, res)
        return out

    def _next_token(
        self,
        prompts: Sequence[str],
        row: Callable[[Any, int], dict[str, Any]],
        progress: Callable[[int], None] | None,
        sink: Callable[[int, dict[str, Any]], None] | None,
    ) -> list[dict[str, Any]]:
        """One forward pass per prompt (length-bucketed batches, shared-prefix KV caches); ``row(log-softmax of the
        next-token logits, prompt tokens)`` makes each result.

        Why groups: the study judges several models' outputs on the same X-AlpacaEval item, so beyond the prefix
        common to every prompt (system message + template opening), the prompts of one item repeat the same
        instruction (every protocol), and in the pairwise protocols, when the reference is presented first, the same
        instruction + ~500-token reference precede each model's output. With ``prefix_cache="grouped"`` the prompts are
        sorted, :func:`_prefix_groups` turns them into a tree of shared prefixes (a group: prompts sharing at least
        ``min_group_tokens`` more tokens than their parent's prefix; groups nest), each group's prefix is prefilled once
        on top of a copy of its parent's KV, and the prompts left directly under a node run as right-padded batches
        with that node's KV repeated per row and explicit positions (as the global prefix always did). Every prompt
        keeps at least one token of its own, so its next-token logits come from its own last position. Causal attention
        makes the result that of the whole prompt, up to float rounding of other batch shapes.

        ``self.last_stats``: prompt_tokens (sum of the prompts' lengths), computed_tokens (real tokens through the
        decoder: prefills + each prompt's own suffix; padding not counted), padded_tokens (with padding), prefills
        (prefix forward passes, the global one included), groups (prefixes below the global one), batches.

        ``progress(k)``: k more prompts judged (after each batch). A :class:`xlr.sampling.Progress` is first told the
        computed tokens and gets those of every pass (prefills included) as each decoder layer ends
        (:func:`xlr.sampling.reporting_layers`): a batch of up to ``batch_tokens`` tokens moves it more than once."""
        import copy

        import torch

        from xlr.rewards import length_batches
        from xlr.sampling import reporting_layers

        encoded = [self.encode(p) for p in prompts]
        out: list[dict[str, Any]] = [{} for _ in prompts]
        stats = {
            "prompt_tokens": sum(len(e) for e in encoded),
            "computed_tokens": 0,
            "padded_tokens": 0,
            "prefills": 0,
            "groups": 0,
            "batches": 0,
        }
        self.last_stats = stats
        if not encoded:
            return out
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        decoder = self.model.get_decoder()
        head = self.model.get_output_embeddings()
        n_prefix = _common_prefix_len(encoded) if self.prefix_mode != "none" else 0
        n_prefix = min(n_prefix, min(len(e) for e in encoded) - 1)  # each prompt keeps at least one token of its own
        if self.prefix_mode == "grouped":
            root = _prefix_groups(encoded, n_prefix, self.min_group_tokens)
        else:
            root = _PrefixNode(n_prefix, 0, list(range(len(encoded))))
        stats["groups"] = root.count() - 1
        work, expect = getattr(progress, "work", None), getattr(progress, "expect", None)
        if expect:
            expect(_tree_tokens(root, encoded), len(encoded))

        def extend(parent: Any, start: int, node: _PrefixNode) -> Any:
            """A copy of ``parent`` (the KV of tokens [0, start) of every prompt under ``node``) extended to node.depth."""
            if node.depth == start:
                return parent
            from transformers import DynamicCache

            cache = DynamicCache() if parent is None else copy.deepcopy(parent)
            with reporting_layers(decoder, work, node.depth - start):
                decoder(
                    input_ids=torch.tensor([encoded[node.src][start : node.depth]]),
                    cache=cache,
                    use_cache=True,
                    position_ids=torch.arange(start, node.depth)[None],
                )
            stats["prefills"] += 1
            stats["computed_tokens"] += node.depth - start
            stats["padded_tokens"] += node.depth - start
            return cache

        with torch.inference_mode():
            # depth first, a child's KV made when it is reached: only the caches of one path from the root (and the
            # parents its pending siblings share) are alive at a time, whatever the number of groups
            stack: list[tuple[_PrefixNode, Any, int]] = [(root, None, 0)]
            while stack:
                node, parent, start = stack.pop()
                prefix = extend(parent, start, node)
                n_prefix = node.depth
                own = node.own
                for b in length_batches([len(encoded[i]) - n_prefix for i in own], self.batch_tokens, max_batch=16):
                    batch = [own[k] for k in b]
                    width = max(len(encoded[i]) - n_prefix for i in batch)
                    ids = torch.full((len(batch), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(batch), n_prefix + width), dtype=torch.long)
                    mask[:, :n_prefix] = 1
                    for r, i in enumerate(batch):  # right padding: positions are the natural ones
                        suffix = encoded[i][n_prefix:]
                        ids[r, : len(suffix)] = torch.tensor(suffix)
                        mask[r, n_prefix : n_prefix + len(suffix)] = 1
                        stats["computed_tokens"] += len(suffix)
                    stats["padded_tokens"] += len(batch) * width
                    stats["batches"] += 1
                    kwargs: dict[str, Any] = {}
                    if prefix is not None:
                        cache = copy.deepcopy(prefix)
                        cache.batch_repeat_interleave(len(batch))
                        kwargs = {
                            "cache": cache,
                            "use_cache": True,
                            "position_ids": torch.arange(n_prefix, n_prefix + width).expand(len(batch), -1),
                        }
                    last = torch.tensor([len(encoded[i]) - n_prefix - 1 for i in batch])
                    with reporting_layers(decoder, work, sum(len(encoded[i]) - n_prefix for i in batch)):
                        hidden = decoder(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state[torch.arange(len(batch)), last]
                        logp = torch.log_softmax(head(hidden).float(), -1)
                    for r, i in enumerate(batch):
                        out[i] = row(logp[r], len(encoded[i]))
                        if sink:
                            sink(i, out[i])
                    if progress:
                        progress(len(batch))
                for child in reversed(node.children):
                    stack.append((child, prefix, n_prefix))
        return out


def _tree_tokens(root: _PrefixNode, encoded: Sequence[Sequence[int]]) -> int:
    """The tokens ``LocalJudge._next_token`` runs through the decoder for this prefix tree (its ``computed_tokens``):
    each node's prefill past its parent's prefix, and each prompt's suffix past its node's."""
    total, todo = 0, [(root, 0)]
    while todo:
        node, start = todo.pop()
        total += node.depth - start + sum(len(encoded[i]) - node.depth for i in node.own)
        todo.extend((child, node.depth) for child in node.children)
    return total


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


class _PrefixNode:
    """A prefix shared by several prompts: tokens [0, depth) of prompt ``src`` (and of every prompt below); ``own``:
    the prompts whose suffix runs on this node's KV; ``children``: longer shared prefixes, each prefilled once."""

    __slots__ = ("depth", "src", "own", "children")

    def __init__(self, depth: int, src: int, own: list[int]):
        self.depth, self.src, self.own = depth, src, own
        self.children: list[_PrefixNode] = []

    def count(self) -> int:
        n, todo = 0, [self]
        while todo:  # iterative: a deep tree (prompts nested in one another) stays under the recursion limit
            n += 1
            todo.extend(todo.pop().children)
        return n


def _lcp_from(a: Sequence[int], b: Sequence[int], start: int) -> int:
    """Length of the common prefix of a and b, known to be at least ``start``."""
    n = min(len(a), len(b))
    k = start
    while k < n and a[k] == b[k]:
        k += 1
    return k


def _prefix_groups(encoded: Sequence[Sequence[int]], root_depth: int, min_shared: int) -> _PrefixNode:
    """The tree of shared prefixes the grouped prefix cache prefills (``LocalJudge._next_token``).

    The prompts, all sharing ``root_depth`` tokens, are sorted: then the prompts sharing any given prefix are
    contiguous and the common prefix of a run is the minimum of its neighbours' common prefixes (the LCP array of a
    suffix array, Manber & Myers 1993). Under a node of depth d, a group is a maximal run whose neighbours share at
    least d + ``min_shared`` tokens; its depth is the run's common prefix, cut so that every member keeps at least one
    token of its own; the same rule is applied again inside the group (e.g. an item's instruction, then the reference
    presented first). Prompts in no group (groups of 1) stay with the node. Iterative: no recursion limit."""
    order = sorted(range(len(encoded)), key=lambda i: encoded[i])
    lcp = [_lcp_from(encoded[a], encoded[b], root_depth) for a, b in zip(order, order[1:], strict=False)]  # lcp[k]: order[k], order[k+1]
    root = _PrefixNode(root_depth, order[0], [])
    work = [(root, 0, len(order))]  # node, [lo, hi) of its prompts in ``order``
    while work:
        node, lo, hi = work.pop()
        d = node.depth
        k = lo
        while k < hi:
            end = k + 1
            while end < hi and lcp[end - 1] >= d + min_shared:
                end += 1
            if end - k > 1:
                depth = min(min(lcp[k : end - 1]), min(len(encoded[order[j]]) for j in range(k, end)) - 1)
                if depth > d:
                    child = _PrefixNode(depth, order[k], [])
                    node.children.append(child)
                    work.append((child, k, end))
                    k = end
                    continue
            node.own.extend(order[k:end])
            k = end
    return root


class APIJudge:
    """OpenAI-compatible Chat Completions endpoint (``openai`` client: exponential backoff with jitter on 408/409/429/5xx,
    timeouts and connection errors, honouring Retry-After; ``max_retries`` then a JudgeError naming the endpoint)."""

    def __init__(
        self, base_url: str | None, model: str, api_key_env: str, concurrency: int = 4, max_retries: int = 5, timeout_s: float = 60.0
    ):
        import openai

        key = os.environ.get(api_key_env)
        if not key:
            raise JudgeError(
                f"judge: the environment variable {api_key_env} (judge.api_key_env in params) is not set. "
                f"Fix: export {api_key_env}=... before the run; the key is never written to params, notebooks or reports."
            )
        self.model, self.base_url, self.concurrency, self.api_key_env = model, base_url, concurrency, api_key_env
        self.id = f"api:{base_url or 'openai'}:{model}"
        self.settings = request_settings()
        self.client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout_s)

    def one(self, prompt: str) -> dict[str, Any]:
        top, usage = self._top_logprobs(prompt, self.settings)
        found = {t.token: t.logprob for t in top if t.token in LABELS}
        return {
            "logprob_m": found.get("m", -math.inf),
            "logprob_M": found.get("M", -math.inf),
            "tokens_in": getattr(usage, "prompt_tokens", 0) or 0,
            "tokens_out": getattr(usage, "completion_tokens", 0) or 0,
        }

    def one_pointwise(self, prompt: str, tokens: Sequence[str]) -> dict[str, Any]:
        """Log-probs of ``tokens`` as the first answer token, from the top 20 (OpenAI's maximum; a token absent from
        them counts as probability 0; a token matches after stripping spaces, the best variant kept)."""
        top, usage = self._top_logprobs(prompt, self.settings | {"top_logprobs": 20})
        found: dict[str, float] = {}
        for t in top:
            k = t.token.strip()
            if k in tokens:
                found[k] = max(found.get(k, -math.inf), t.logprob)
        return {
            "logprobs": {t: found.get(t, -math.inf) for t in tokens},
            "tokens_in": getattr(usage, "prompt_tokens", 0) or 0,
            "tokens_out": getattr(usage, "completion_tokens", 0) or 0,
        }

    def _top_logprobs(self, prompt: str, settings: dict[str, Any]) -> tuple[Any, Any]:
        import openai

        where = f"judge endpoint {self.base_url or 'api.openai.com'} (model {self.model})"
        try:
            resp = self.client.chat.completions.create(model=self.model, messages=to_messages(prompt), **settings)
        except openai.AuthenticationError as e:
            raise JudgeError(f"{where}: 401 unauthorised. Fix: check the key in ${self.api_key_env} (judge.api_key_env)") from e
        except openai.APITimeoutError as e:
            raise JudgeError(
                f"{where}: timed out after all retries. Fix: raise judge.timeout_s or judge.max_retries, or lower "
                "judge.concurrency; rerun the same command (judgments made so far are cached)"
            ) from e
        except openai.APIConnectionError as e:
            raise JudgeError(f"{where}: unreachable after all retries ({e.__cause__ or e}). Fix: check judge.base_url") from e
        except openai.APIStatusError as e:
            raise JudgeError(
                f"{where}: HTTP {e.status_code} after all retries. Fix: "
                + ("lower judge.concurrency or raise judge.max_retries (rate limit), " if e.status_code == 429 else "")
                + "wait and rerun the same command (judgments made so far are cached)"
            ) from e
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as e:
            raise JudgeError(
                f"{where}: malformed reply ({type(e).__name__}: {e}). Fix: check that judge.base_url is an "
                "OpenAI-compatible chat completions endpoint that returns logprobs"
            ) from e
        try:
            content = resp.choices[0].logprobs.content
            top = content[0].top_logprobs
        except (AttributeError, IndexError, TypeError):
            raise JudgeError(
                f"{where}: the reply has no logprobs. The protocol needs logprobs=true with top_logprobs; "
                "Fix: use an endpoint/model that returns them"
            ) from None
        return top or [], getattr(resp, "usage", None)

    def __call__(
        self,
        prompts: Sequence[str],
        progress: Callable[[int], None] | None = None,
        sink: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """At most ``concurrency`` requests in flight; ``sink(i, result)`` as each reply arrives, so a failure later
        (after its retries) loses none of the judgments already paid for."""
        return self._map(self.one, prompts, progress, sink)

    def next_token_logprobs(
        self,
        prompts: Sequence[str],
        tokens: Sequence[str],
        progress: Callable[[int], None] | None = None,
        sink: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        return self._map(lambda p: self.one_pointwise(p, tokens), prompts, progress, sink)

    def sequence_scores(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise JudgeError(
            "judge protocol 'loglik' needs the log-likelihood of a given output, which a chat completions endpoint "
            "does not return. Fix: use judge.backend: local, or another judge.protocol"
        )

    def _map(
        self,
        fn: Callable[[str], dict[str, Any]],
        prompts: Sequence[str],
        progress: Callable[[int], None] | None,
        sink: Callable[[int, dict[str, Any]], None] | None,
    ) -> list[dict[str, Any]]:
        def work(i: int) -> dict[str, Any]:
            r = fn(prompts[i])
            if sink:
                sink(i, r)
            if progress:
                progress(1)
            return r

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(work, range(len(prompts))))


# ----------------------------------------------------------------------------------------------------------------
# judging pairs


def _judging_bar(judge: Any, n: int, desc: str, unit: str) -> tuple[Any, Any]:
    """(bar, the ``progress`` to give the judge). A judge that ``reports_work`` (:class:`LocalJudge`): a
    :class:`xlr.sampling.Progress` in prompt tokens, its total declared by the judge, moving within every forward pass,
    the judgments counted in its postfix; another (the API judge): a bar of ``n`` judgments, one move per reply."""
    from xlr.sampling import Progress, progress_bar

    if getattr(judge, "reports_work", False):
        bar = Progress(desc, item_unit=f"{unit}s")
        return bar, bar
    plain = progress_bar(n, desc, unit)
    return plain, plain.update


@dataclass
class JudgeStats:
    calls: int = 0
    cache_hits: int = 0
    identical_outputs: int = 0
    unjudgeable: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cache_bad_lines: int = 0
    cost_usd: float = 0.0
    scores_reused: int = 0  # pointwise: scores shared by several items in this call (a reference judged against several models)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def judge_pairs(
    judge: Any,
    items: Sequence[dict[str, Any]],
    cache: JudgeCache,
    jp: JudgeParams,
    template: str,
    *,
    orders: str | None = None,
    desc: str = "judging",
    protocol: str | Protocol | None = None,
) -> tuple[list[dict[str, Any]], JudgeStats]:
    """Judge each item {key, instruction, output (model), baseline_output} and return one record per (item, order).

    ``jp``: the params' judge section; it gives the order draw (``order_seed``, ``order_seed_columns``), the price
    (``price_per_1k_input`` / ``_output``: ``cost_usd``) and, where they are None, ``orders`` (``jp.orders``) and
    ``protocol`` (:func:`protocol_spec` of ``jp``). ``protocol`` (a name or a :class:`Protocol`): "pairwise" renders
    ``template``; ``orders``: "random" (one judgment, order drawn from ``jp.order_seed`` and the item's
    ``jp.order_seed_columns`` as alpaca_eval draws it, :func:`model_shown_first`) or "both" (model first and baseline
    first). The cache is keyed by the rendered prompt, so a judgment is reused whichever draw asks for it.
    "pairwise_both" is "pairwise" with both orders. Each pairwise record has the order, both label log-probs,
    ``p_model`` (NaN when unjudgeable) and whether it came from the cache. Pointwise protocols give one record per
    item (``model_first`` None) with both outputs' scores; a protocol given by name takes the same-language clause
    from ``template``."""
    seed, order_seed_columns = jp.order_seed, jp.order_seed_columns
    price_per_1k = (jp.price_per_1k_input, jp.price_per_1k_output)
    orders = jp.orders if orders is None else orders
    if protocol is None:
        protocol = protocol_spec(jp)
    elif isinstance(protocol, str):
        protocol = Protocol(protocol, same_language_clause=SAME_LANGUAGE_CLAUSE in template)
    if not protocol.pairwise:
        return _judge_pointwise(judge, items, cache, protocol, price_per_1k, desc)
    if protocol.name == "pairwise_both":
        orders = "both"
    if order_seed_columns not in ORDER_SEED_COLUMNS:
        raise JudgeError(f"judge order_seed_columns={order_seed_columns!r}: use one of {', '.join(ORDER_SEED_COLUMNS)}")
    stats = JudgeStats(cache_bad_lines=cache.bad_lines)
    plan: list[dict[str, Any]] = []
    for it in items:
        if orders == "both":
            firsts = [True, False]
        else:
            firsts = [model_shown_first(it["instruction"], it["output"], it["baseline_output"], seed, order_seed_columns)]
        for model_first in firsts:
            o1, o2 = (it["output"], it["baseline_output"]) if model_first else (it["baseline_output"], it["output"])
            prompt = render(template, it["instruction"], o1, o2)
            plan.append(
                {
                    "key": it["key"],
                    "model_first": model_first,
                    "prompt": prompt,
                    "identical": it["output"] == it["baseline_output"],
                    "cache_key": JudgeCache.key(judge.id, prompt),
                }
            )
    todo = [r for r in plan if not r["identical"] and cache.get(r["cache_key"]) is None]
    fresh = {r["cache_key"] for r in todo}
    # distinct prompts only (the same pair can occur twice)
    unique = list({r["cache_key"]: r for r in todo}.values())
    stats.cache_hits = sum(1 for r in plan if not r["identical"]) - len(todo)
    lock = threading.Lock()

    def sink(i: int, res: dict[str, Any]) -> None:  # each judgment reaches the cache (fsync'd) as soon as it exists
        cache.put({"key": unique[i]["cache_key"], "judge": judge.id, **res})
        with lock:
            stats.calls += 1
            stats.tokens_in += res["tokens_in"]
            stats.tokens_out += res["tokens_out"]

    bar, progress = _judging_bar(judge, len(unique), desc, "judgment")
    with bar:
        judge([r["prompt"] for r in unique], progress=progress, sink=sink)
    stats.cost_usd = round(stats.tokens_in / 1000 * price_per_1k[0] + stats.tokens_out / 1000 * price_per_1k[1], 6)
    records = []
    for r in plan:
        if r["identical"]:
            stats.identical_outputs += 1
            records.append(
                {
                    "key": r["key"],
                    "model_first": r["model_first"],
                    "logprob_m": None,
                    "logprob_M": None,
                    "p_model": 0.5,
                    "identical": True,
                    "cached": False,
                }
            )
            continue
        e = cache.get(r["cache_key"])
        pf = p_first(e["logprob_m"], e["logprob_M"])
        p_model = pf if r["model_first"] else (1 - pf if not math.isnan(pf) else math.nan)
        if math.isnan(p_model):
            stats.unjudgeable += 1
        records.append(
            {
                "key": r["key"],
                "model_first": r["model_first"],
                "logprob_m": e["logprob_m"],
                "logprob_M": e["logprob_M"],
                "p_model": p_model,
                "identical": False,
                "cached": r["cache_key"] not in fresh,
            }
        )
    return records, stats


def _judge_pointwise(
    judge: Any, items: Sequence[dict[str, Any]], cache: JudgeCache, protocol: Protocol, price_per_1k: tuple[float, float], desc: str
) -> tuple[list[dict[str, Any]], JudgeStats]:
    """Pointwise protocols: every distinct (instruction, output) scored once, under the cache key (judge, protocol,
    rendered prompt), then each item's preference from its two scores."""
    stats = JudgeStats(cache_bad_lines=cache.bad_lines)
    judge_tag = f"{judge.id}|{protocol.tag}"
    needed: dict[str, dict[str, Any]] = {}  # cache key -> what to score
    plan = []
    for it in items:
        identical = it["output"] == it["baseline_output"]
        keys = []
        for text in (it["output"], it["baseline_output"]):
            prompt = protocol.render_pointwise(it["instruction"], text)
            k = JudgeCache.key(judge_tag, prompt)
            keys.append(k)
            if not identical:
                if k in needed:
                    stats.scores_reused += 1
                needed.setdefault(k, {"cache_key": k, "prompt": prompt, "instruction": it["instruction"], "output": text})
        plan.append({"key": it["key"], "identical": identical, "keys": keys})
    todo = [r for r in needed.values() if cache.get(r["cache_key"]) is None]
    fresh = {r["cache_key"] for r in todo}
    stats.cache_hits = len(needed) - len(todo)
    lock = threading.Lock()

    def sink(i: int, res: dict[str, Any]) -> None:
        cache.put({"key": todo[i]["cache_key"], "judge": judge.id, "protocol": protocol.tag, **res})
        with lock:
            stats.calls += 1
            stats.tokens_in += res["tokens_in"]
            stats.tokens_out += res["tokens_out"]

    bar, progress = _judging_bar(judge, len(todo), f"{desc} ({protocol.name})", "output")
    with bar:
        if not todo:
            pass
        elif protocol.name == "loglik":
            judge.sequence_scores([r["instruction"] for r in todo], [r["output"] for r in todo], progress=progress, sink=sink)
        else:
            judge.next_token_logprobs([r["prompt"] for r in todo], list(protocol.labels), progress=progress, sink=sink)
    stats.cost_usd = round(stats.tokens_in / 1000 * price_per_1k[0] + stats.tokens_out / 1000 * price_per_1k[1], 6)
    records = []
    for r in plan:
        if r["identical"]:
            stats.identical_outputs += 1
            records.append(
                {
                    "key": r["key"],
                    "model_first": None,
                    "protocol": protocol.name,
                    "score_model": None,
                    "score_baseline": None,
                    "p_model": 0.5,
                    "identical": True,
                    "cached": False,
                }
            )
            continue
        em, eb = cache.get(r["keys"][0]), cache.get(r["keys"][1])
        p_model = pointwise_preference(em, eb, protocol)
        if math.isnan(p_model):
            stats.unjudgeable += 1
        records.append(
            {
                "key": r["key"],
                "model_first": None,
                "protocol": protocol.name,
                "score_model": pointwise_score(em, protocol),
                "score_baseline": pointwise_score(eb, protocol),
                "p_model": p_model,
                "identical": False,
                "label_mass": (label_mass(em, protocol) + label_mass(eb, protocol)) / 2,
                "cached": not ({r["keys"][0], r["keys"][1]} & fresh),
            }
        )
    return records, stats


def make_judge(jp: Any, dtype: Any = None, device: str = "cpu", trust_remote_code: bool = False) -> Any:
    """The judge that params ask for (``jp``: the params' judge section)."""
    if jp.backend == "api":
        return APIJudge(
            jp.base_url, jp.model, jp.api_key_env, concurrency=jp.concurrency, max_retries=jp.max_retries, timeout_s=jp.timeout_s
        )
    if jp.backend == "local":
        from xlr.models import load_model, model_record

        model, tok = load_model(jp.model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        judge = LocalJudge(model, tok, jp.model)
        # the cache key names the weights, so a changed local model never reuses old judgments
        judge.id = (
            f"local:{jp.model}:{hashlib.sha256(json.dumps(model_record(jp.model), sort_keys=True).encode()).hexdigest()[:16]}:{str(dtype)}"
        )
        return judge
    raise JudgeError("judge.backend is 'none': nothing to judge with")


def cache_path(runs_root: Path, judge_id: str) -> Path:
    """One cache file per judge, beside the runs (it outlives a run moved aside by --force)."""
    return runs_root / ".judge-cache" / f"{hashlib.sha256(judge_id.encode()).hexdigest()[:20]}.jsonl"
