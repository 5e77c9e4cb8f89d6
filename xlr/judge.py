"""Pairwise judges: AlpacaEval 2's ``weighted_alpaca_eval_gpt4_turbo`` protocol, plus the ICR paper's same-language clause.

Protocol (alpaca_eval 0.6.6, read from the installed package, never copied here):
- prompt template ``evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt``: the instruction and two outputs
  labelled ``m`` (output_1) and ``M`` (output_2), filled as alpaca_eval's ``make_prompts`` does (first occurrence of
  each placeholder, in order);
- request settings from ``evaluators_configs/weighted_alpaca_eval_gpt4_turbo/configs.yaml`` (max_tokens 1,
  temperature 1, logprobs, top_logprobs 5);
- the soft preference from the first token's log-probabilities over the two labels (alpaca_eval's ``logprob_parser``
  with ``is_binarize: false``: a label missing from top_logprobs has probability 0; both missing: unjudgeable);
- the two outputs are presented in a random order per item (seeded), and identical outputs get 0.5 without a call.

The paper's clause ("A good output should be in the same language as the instruction, ...") is inserted in the
template's Task section, right after "select the model that generated the best output.".

Backends: :class:`LocalJudge` (a local causal LM through its own chat template; next-token distribution restricted to
the two label tokens, computed with one forward pass) and :class:`APIJudge` (any OpenAI-compatible Chat Completions
endpoint, via the ``openai`` client: bounded concurrency, retries with exponential backoff on 429/5xx/timeouts).
Every judgment is appended to a JSONL cache keyed by (judge, rendered prompt), so a rerun or a resume costs nothing.
The API key is read from the environment variable named in params at call time and is never stored.
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
from typing import Any

import yaml

from xlr import faults

log = logging.getLogger(__name__)

ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
TEMPLATE_REL = "evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt"
CONFIG_REL = f"evaluators_configs/{ANNOTATOR}/configs.yaml"
SAME_LANGUAGE_CLAUSE = (
    "A good output should be in the same language as the instruction, except when the instruction explicitly requests "
    "the output in a different language."
)
_CLAUSE_AFTER = "select the model that generated the best output."
LABELS = ("m", "M")  # output_1, output_2


class JudgeError(RuntimeError):
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
    if text.count(_CLAUSE_AFTER) != 1:
        raise JudgeError(f"alpaca_eval's template {TEMPLATE_REL} changed: cannot find where to add the same-language clause")
    return text.replace(_CLAUSE_AFTER, f"{_CLAUSE_AFTER} {SAME_LANGUAGE_CLAUSE}")


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


def p_first(logprob_m: float, logprob_M: float) -> float:
    """P(output_1 better) = p(m) / (p(m) + p(M)); NaN when neither label was seen."""
    if logprob_m == -math.inf and logprob_M == -math.inf:
        return math.nan
    top = max(logprob_m, logprob_M)
    return math.exp(logprob_m - top) / (math.exp(logprob_m - top) + math.exp(logprob_M - top))


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
                raise OSError(e.errno, f"{self.path}: could not append a judgment ({e.strerror}). The judgments cached before it are "
                                       "intact. Fix: free disk space and rerun the same command; only the missing judgments are made again.") from e
            self._needs_newline = False
            self.entries[entry["key"]] = entry
        faults.point("judgment")


# ----------------------------------------------------------------------------------------------------------------
# backends: each maps rendered prompts to {"logprob_m", "logprob_M", "tokens_in", "tokens_out"}


class LocalJudge:
    """A local causal LM: the rendered prompt through its chat template (generation prompt on), one forward pass, the
    log-softmax of the next-token logits read at the two label tokens (full-vocabulary log-probs are stored; the
    preference uses the two renormalised)."""

    def __init__(self, model: Any, tokenizer: Any, name: str, batch_tokens: int = 2048, prefix_cache: bool = True):
        self.model, self.tokenizer, self.name, self.batch_tokens, self.prefix_cache = model, tokenizer, name, batch_tokens, prefix_cache
        self.id = f"local:{name}"
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in LABELS]
        if any(len(i) != 1 for i in ids) or ids[0] == ids[1]:
            raise JudgeError(f"judge {name}: the labels {LABELS} are not single distinct tokens in its tokenizer ({ids}); pick another judge model")
        self.label_ids = [i[0] for i in ids]

    def encode(self, prompt: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(to_messages(prompt), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(self, prompts: Sequence[str], progress: Callable[[int], None] | None = None,
                 sink: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Label log-probs per prompt; ``sink(i, result)`` is called as soon as prompt i is judged.

        Every judge prompt starts with the same tokens (system message and the template's opening, ~150 tokens of
        ~800 with Qwen): their key/value cache is computed once and reused by every batch (``prefix_cache``)."""
        import torch

        from xlr.rewards import length_batches

        encoded = [self.encode(p) for p in prompts]
        out: list[dict[str, Any]] = [{} for _ in prompts]
        if not encoded:
            return out
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        decoder = self.model.get_decoder()
        head = self.model.get_output_embeddings()
        n_prefix = _common_prefix_len(encoded) if self.prefix_cache else 0
        n_prefix = min(n_prefix, min(len(e) for e in encoded) - 1)  # each prompt keeps at least one token of its own
        with torch.inference_mode():
            prefix = None
            if n_prefix > 0:
                from transformers import DynamicCache

                prefix = DynamicCache()
                decoder(input_ids=torch.tensor([encoded[0][:n_prefix]]), cache=prefix, use_cache=True)
            for batch in length_batches([len(e) - n_prefix for e in encoded], self.batch_tokens, max_batch=16):
                width = max(len(encoded[i]) - n_prefix for i in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), n_prefix + width), dtype=torch.long)
                mask[:, :n_prefix] = 1
                for r, i in enumerate(batch):  # right padding: positions are the natural ones
                    own = encoded[i][n_prefix:]
                    ids[r, : len(own)] = torch.tensor(own)
                    mask[r, n_prefix : n_prefix + len(own)] = 1
                kwargs: dict[str, Any] = {}
                if prefix is not None:
                    import copy

                    cache = copy.deepcopy(prefix)
                    cache.batch_repeat_interleave(len(batch))
                    kwargs = {"cache": cache, "use_cache": True,
                              "position_ids": torch.arange(n_prefix, n_prefix + width).expand(len(batch), -1)}
                last = torch.tensor([len(encoded[i]) - n_prefix - 1 for i in batch])
                hidden = decoder(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state[torch.arange(len(batch)), last]
                logp = torch.log_softmax(head(hidden).float(), -1)
                for r, i in enumerate(batch):
                    out[i] = {"logprob_m": float(logp[r, self.label_ids[0]]), "logprob_M": float(logp[r, self.label_ids[1]]),
                              "tokens_in": len(encoded[i]), "tokens_out": 0}
                    if sink:
                        sink(i, out[i])
                if progress:
                    progress(len(batch))
        return out


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


class APIJudge:
    """OpenAI-compatible Chat Completions endpoint (``openai`` client: exponential backoff with jitter on 408/409/429/5xx,
    timeouts and connection errors, honouring Retry-After; ``max_retries`` then a JudgeError naming the endpoint)."""

    def __init__(self, base_url: str | None, model: str, api_key_env: str, concurrency: int = 4, max_retries: int = 5, timeout_s: float = 60.0):
        import openai

        key = os.environ.get(api_key_env)
        if not key:
            raise JudgeError(f"judge: the environment variable {api_key_env} (judge.api_key_env in params) is not set. "
                             f"Fix: export {api_key_env}=... before the run; the key is never written to params, notebooks or reports.")
        self.model, self.base_url, self.concurrency, self.api_key_env = model, base_url, concurrency, api_key_env
        self.id = f"api:{base_url or 'openai'}:{model}"
        self.settings = request_settings()
        self.client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout_s)

    def one(self, prompt: str) -> dict[str, Any]:
        import openai

        where = f"judge endpoint {self.base_url or 'api.openai.com'} (model {self.model})"
        try:
            resp = self.client.chat.completions.create(model=self.model, messages=to_messages(prompt), **self.settings)
        except openai.AuthenticationError as e:
            raise JudgeError(f"{where}: 401 unauthorised. Fix: check the key in ${self.api_key_env} (judge.api_key_env)") from e
        except openai.APITimeoutError as e:
            raise JudgeError(f"{where}: timed out after all retries. Fix: raise judge.timeout_s or judge.max_retries, or lower "
                             "judge.concurrency; rerun the same command (judgments made so far are cached)") from e
        except openai.APIConnectionError as e:
            raise JudgeError(f"{where}: unreachable after all retries ({e.__cause__ or e}). Fix: check judge.base_url") from e
        except openai.APIStatusError as e:
            raise JudgeError(f"{where}: HTTP {e.status_code} after all retries. Fix: "
                             + ("lower judge.concurrency or raise judge.max_retries (rate limit), " if e.status_code == 429 else "")
                             + "wait and rerun the same command (judgments made so far are cached)") from e
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as e:
            raise JudgeError(f"{where}: malformed reply ({type(e).__name__}: {e}). Fix: check that judge.base_url is an "
                             "OpenAI-compatible chat completions endpoint that returns logprobs") from e
        try:
            content = resp.choices[0].logprobs.content
            top = content[0].top_logprobs
        except (AttributeError, IndexError, TypeError):
            raise JudgeError(f"{where}: the reply has no logprobs. The protocol needs logprobs=true with top_logprobs; "
                             "Fix: use an endpoint/model that returns them") from None
        found = {t.token: t.logprob for t in top if t.token in LABELS}
        usage = getattr(resp, "usage", None)
        return {"logprob_m": found.get("m", -math.inf), "logprob_M": found.get("M", -math.inf),
                "tokens_in": getattr(usage, "prompt_tokens", 0) or 0, "tokens_out": getattr(usage, "completion_tokens", 0) or 0}

    def __call__(self, prompts: Sequence[str], progress: Callable[[int], None] | None = None,
                 sink: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """At most ``concurrency`` requests in flight; ``sink(i, result)`` as each reply arrives, so a failure later
        (after its retries) loses none of the judgments already paid for."""

        def work(i: int) -> dict[str, Any]:
            r = self.one(prompts[i])
            if sink:
                sink(i, r)
            if progress:
                progress(1)
            return r

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(work, range(len(prompts))))


# ----------------------------------------------------------------------------------------------------------------
# judging pairs


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def judge_pairs(
    judge: Any,
    items: Sequence[dict[str, Any]],
    cache: JudgeCache,
    seed: int,
    template: str,
    orders: str = "random",
    price_per_1k: tuple[float, float] = (0.0, 0.0),
    desc: str = "judging",
) -> tuple[list[dict[str, Any]], JudgeStats]:
    """Judge each item {key, instruction, output (model), baseline_output} and return one record per (item, order).

    ``orders``: "random" (one judgment, order drawn from (seed, item key), as AlpacaEval) or "both" (model first and
    baseline first). Each record has the order, both label log-probs, ``p_model`` (NaN when unjudgeable) and whether it
    came from the cache."""
    from tqdm.auto import tqdm

    from xlr.sampling import derive_seed

    stats = JudgeStats(cache_bad_lines=cache.bad_lines)
    plan: list[dict[str, Any]] = []
    for it in items:
        if orders == "both":
            firsts = [True, False]
        else:
            firsts = [derive_seed(seed, "order", it["key"]) % 2 == 0]
        for model_first in firsts:
            o1, o2 = (it["output"], it["baseline_output"]) if model_first else (it["baseline_output"], it["output"])
            prompt = render(template, it["instruction"], o1, o2)
            plan.append({"key": it["key"], "model_first": model_first, "prompt": prompt, "identical": it["output"] == it["baseline_output"],
                         "cache_key": JudgeCache.key(judge.id, prompt)})
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

    with tqdm(total=len(unique), desc=desc, unit="judgment") as bar:
        judge([r["prompt"] for r in unique], progress=bar.update, sink=sink)
    stats.cost_usd = round(stats.tokens_in / 1000 * price_per_1k[0] + stats.tokens_out / 1000 * price_per_1k[1], 6)
    records = []
    for r in plan:
        if r["identical"]:
            stats.identical_outputs += 1
            records.append({"key": r["key"], "model_first": r["model_first"], "logprob_m": None, "logprob_M": None, "p_model": 0.5, "identical": True, "cached": False})
            continue
        e = cache.get(r["cache_key"])
        pf = p_first(e["logprob_m"], e["logprob_M"])
        p_model = pf if r["model_first"] else (1 - pf if not math.isnan(pf) else math.nan)
        if math.isnan(p_model):
            stats.unjudgeable += 1
        records.append({"key": r["key"], "model_first": r["model_first"], "logprob_m": e["logprob_m"], "logprob_M": e["logprob_M"],
                        "p_model": p_model, "identical": False, "cached": r["cache_key"] not in fresh})
    return records, stats


def make_judge(jp: Any, dtype: Any = None, device: str = "cpu", trust_remote_code: bool = False) -> Any:
    """The judge that params ask for (``jp``: the params' judge section)."""
    if jp.backend == "api":
        return APIJudge(jp.base_url, jp.model, jp.api_key_env, concurrency=jp.concurrency, max_retries=jp.max_retries, timeout_s=jp.timeout_s)
    if jp.backend == "local":
        from xlr.models import load_model, model_record

        model, tok = load_model(jp.model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        judge = LocalJudge(model, tok, jp.model)
        # the cache key names the weights, so a changed local model never reuses old judgments
        judge.id = f"local:{jp.model}:{hashlib.sha256(json.dumps(model_record(jp.model), sort_keys=True).encode()).hexdigest()[:16]}:{str(dtype)}"
        return judge
    raise JudgeError("judge.backend is 'none': nothing to judge with")


def cache_path(runs_root: Path, judge_id: str) -> Path:
    """One cache file per judge, beside the runs (it outlives a run moved aside by --force)."""
    return runs_root / ".judge-cache" / f"{hashlib.sha256(judge_id.encode()).hexdigest()[:20]}.jsonl"
