"""Prompt rendering shared by sampling, reward scoring and evaluation.

Every prompt is one user message through the model's own chat template with the generation prompt on and no
system message of ours. (Some templates, Qwen's and SmolLM2's, insert their default system prompt when none is
given; xlr keeps the template as it is, as the reference implementation does.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

_MARK = "XLR-ASSISTANT-MARK"


def render_prompt(tokenizer: Any, user_message: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True)


def end_of_turn(tokenizer: Any) -> str:
    """The token the chat template closes an assistant turn with (``<|im_end|>`` for ChatML, ``<|eot_id|>`` for
    Llama 3), found by rendering a turn and taking the first special token after the assistant's text."""
    return _end_of_turn(tokenizer.name_or_path, id(tokenizer), tokenizer)


@lru_cache(maxsize=32)
def _end_of_turn(_name: str, _id: int, tokenizer: Any) -> str:
    text = tokenizer.apply_chat_template([{"role": "user", "content": "u"}, {"role": "assistant", "content": _MARK}], tokenize=False)
    after = text.split(_MARK, 1)[1]
    specials = sorted(set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {})), key=len, reverse=True)
    best = None
    for tok in specials:
        pos = after.find(tok)
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, tok)
    if best is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"{tokenizer.name_or_path}: cannot tell how the chat template ends an assistant turn, and there is no eos token."
            )
        return tokenizer.eos_token
    return best[1]


def stop_token_ids(tokenizer: Any, eos_token_ids: int | Sequence[int] | None = None) -> list[int]:
    """Token ids that end generation: the tokenizer's eos, the end-of-turn token and every id in ``eos_token_ids``
    (the model's generation config ``eos_token_id``, an int or a list: Llama-3 Instruct names ``<|end_of_text|>`` and
    ``<|eot_id|>``, 128001 and 128009; see :func:`model_eos_ids`)."""
    ids = {tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer))}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    ids.update(_as_ids(eos_token_ids))
    return sorted(ids)


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value if v is not None]


def model_eos_ids(model_path: str, revision: str | None = None) -> list[int]:
    """The eos ids a model declares, for backends that do not load it through transformers: ``eos_token_id`` of its
    generation_config.json, else of its config.json; [] when neither names one. ``model_path``: a local folder, or a
    hub id read at ``revision`` (from the hub cache or the hub)."""
    import json
    from pathlib import Path

    folder = Path(model_path)
    hub = not folder.is_dir() and model_path.count("/") == 1 and not model_path.startswith((".", "/", "~"))
    if not folder.is_dir() and not hub:
        return []
    for name in ("generation_config.json", "config.json"):
        if not hub:
            path = folder / name
            if not path.is_file():
                continue
        else:
            try:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(model_path, name, revision=revision))
            except Exception as e:  # noqa: BLE001 - absent file, offline hub: fall through to the next source
                log.warning("%s@%s: no %s (%s: %s)", model_path, revision or "main", name, type(e).__name__, e)
                continue
        ids = _as_ids(json.loads(path.read_text(encoding="utf-8")).get("eos_token_id"))
        if ids:
            return ids
    return []


def chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a rendered conversation (as trl tokenises conversational examples)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True)
    return list(out["input_ids"])
