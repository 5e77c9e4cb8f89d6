"""Prompt rendering shared by sampling, reward scoring and evaluation.

Every prompt is one user message through the model's own chat template with the generation prompt on and no
system message of ours. (Some templates, Qwen's and SmolLM2's, insert their default system prompt when none is
given; xlr keeps the template as it is, as the reference implementation does.)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

_MARK = "XLR-ASSISTANT-MARK"


def render_prompt(tokenizer: Any, user_message: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True)


def end_of_turn(tokenizer: Any) -> str:
    """The token the chat template closes an assistant turn with (``<|im_end|>`` for ChatML, ``<|eot_id|>`` for
    Llama 3), found by rendering a turn and taking the first special token after the assistant's text."""
    return _end_of_turn(tokenizer.name_or_path, id(tokenizer), tokenizer)


@lru_cache(maxsize=32)
def _end_of_turn(_name: str, _id: int, tokenizer: Any) -> str:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "u"}, {"role": "assistant", "content": _MARK}], tokenize=False
    )
    after = text.split(_MARK, 1)[1]
    specials = sorted(set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {})), key=len, reverse=True)
    best = None
    for tok in specials:
        pos = after.find(tok)
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, tok)
    if best is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{tokenizer.name_or_path}: cannot tell how the chat template ends an assistant turn, and there is no eos token.")
        return tokenizer.eos_token
    return best[1]


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end generation: eos and the end-of-turn token."""
    ids = {tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer))}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a rendered conversation (as trl tokenises conversational examples)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True)
    return list(out["input_ids"])
