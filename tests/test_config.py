from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from xlr.config import Params, ParamsError, load_params, parse_override

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "params").glob("*.yaml"))


def test_shipped_files_exist():
    names = {p.name for p in SHIPPED}
    assert {"smoke.yaml", "cpu.yaml", "paper-llama3-8b.yaml", "paper-lowres.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_params_file_validates(path):
    p = load_params(path)
    assert p.name == path.stem
    assert len(p.params_hash()) == 64


def test_paper_file_has_the_papers_settings():
    p = load_params(REPO / "params/paper-llama3-8b.yaml")
    assert (p.models.pi_ref, p.models.pi0) == ("princeton-nlp/Llama-3-Base-8B-SFT", "princeton-nlp/Llama-3-Base-8B-SFT-DPO")
    assert p.languages.train == ["en", "es", "ru", "de", "fr"]
    assert (p.data.n_train_prompts, p.sampling.n_samples, p.sampling.temperature, p.sampling.top_p, p.sampling.max_new_tokens) == (
        3000,
        10,
        0.9,
        1.0,
        2400,
    )
    assert (p.training.beta, p.training.nll_weight, p.iterations) == (0.1, 1.0, 2)
    assert (p.judge.backend, p.judge.model, p.evaluation.reference_generator) == ("api", "gpt-4-1106-preview", "gpt-4-turbo-2024-04-09")
    low = load_params(REPO / "params/paper-lowres.yaml")
    assert low.languages.train == ["en", "bn", "sw", "th"]


def _write(tmp_path, text, name="p.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return f


MINIMAL = "name: t\nmodels: {pi_ref: tiny:0}\n"


def test_minimal_file_gets_paper_defaults(tmp_path):
    p = load_params(_write(tmp_path, MINIMAL))
    assert p.models.pi0 == "build" and p.sampling.n_samples == 10 and p.reward.variant == "R_c" and p.pairs.alpha_grid == "paper"


@pytest.mark.parametrize(
    "text, must_contain",
    [
        (MINIMAL + "samplin: {n_samples: 3}\n", ["samplin", "unknown key"]),
        (MINIMAL + "sampling: {n_samples: three}\n", ["sampling.n_samples", "three"]),
        (MINIMAL + "sampling: {n_samples: -1}\n", ["sampling.n_samples", "greater than or equal to 2"]),
        (MINIMAL + "sampling: {temperature: -0.5}\n", ["sampling.temperature", "greater than 0"]),
        (MINIMAL + "sampling: {top_p: 1.5}\n", ["sampling.top_p", "less than or equal to 1"]),
        (MINIMAL + "reward: {variant: R_x}\n", ["reward.variant", "'R_c', 'R_m' or 'R_t'"]),
        (MINIMAL + "pairs: {alpha_grid: []}\n", ["pairs.alpha_grid", "'paper' or 'signed'"]),
        (MINIMAL + "evaluation: {temperature: -1}\n", ["evaluation.temperature", "greater than or equal to 0"]),
        (MINIMAL + "anchor: {n_train: 0}\n", ["anchor.n_train", "greater than 0"]),
        (MINIMAL + "languages: {train: [en, xx]}\n", ["languages", "unknown code", "xx", "languages.names"]),
        (MINIMAL + "languages: {train: []}\n", ["languages.train", "at least 1"]),
        ("name: t\n", ["models", "required but missing"]),
        ("name: t\nmodels: {pi_ref: a/b, pi0: a/b}\n", ["models", "pi0 equals models.pi_ref"]),
        ("name: 'bad name!'\nmodels: {pi_ref: tiny:0}\n", ["name", "pattern"]),
        (MINIMAL + "judge: {api_key_env: 'sk-abc def'}\n", ["judge.api_key_env"]),
    ],
)
def test_bad_values_name_file_and_field(tmp_path, text, must_contain):
    f = _write(tmp_path, text)
    with pytest.raises(ParamsError) as e:
        load_params(f)
    msg = str(e.value)
    assert str(f) in msg
    for s in must_contain:
        assert s in msg, (s, msg)


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ParamsError, match="invalid YAML"):
        load_params(_write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(_write(tmp_path, "- a\n- b\n"))


def test_language_names_extend_the_table(tmp_path):
    p = load_params(_write(tmp_path, MINIMAL + "languages: {train: [en, yo], eval: [yo], names: {yo: Yoruba}}\n"))
    assert p.languages.train == ["en", "yo"]


def test_params_hash_tracks_values(tmp_path):
    a = load_params(_write(tmp_path, MINIMAL, "a.yaml"))
    b = load_params(_write(tmp_path, MINIMAL + "sampling: {n_samples: 10}\n", "b.yaml"))  # default spelled out
    c = load_params(_write(tmp_path, MINIMAL + "sampling: {n_samples: 4}\n", "c.yaml"))
    assert a.params_hash() == b.params_hash() != c.params_hash()


def test_overrides(tmp_path):
    assert parse_override("sampling.n_samples=4") == {"sampling": {"n_samples": 4}}
    p = load_params(_write(tmp_path, MINIMAL), parse_override("sampling.n_samples=4"))
    assert p.sampling.n_samples == 4
    with pytest.raises(ParamsError, match="KEY.PATH=VALUE"):
        parse_override("sampling.n_samples")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(-5, 50),
    temp=st.floats(-2, 3, allow_nan=False),
    top_p=st.floats(-1, 2, allow_nan=False),
    iters=st.integers(-2, 5),
)
def test_property_loader_accepts_exactly_the_valid_region(tmp_path_factory, n, temp, top_p, iters):
    raw = {
        "name": "h",
        "models": {"pi_ref": "tiny:0"},
        "iterations": iters,
        "sampling": {"n_samples": n, "temperature": temp, "top_p": top_p},
    }
    f = tmp_path_factory.mktemp("h") / "h.yaml"
    f.write_text(yaml.safe_dump(raw))
    valid = n >= 2 and temp > 0 and 0 < top_p <= 1 and iters >= 0
    if valid:
        p = load_params(f)
        assert (p.sampling.n_samples, p.iterations) == (n, iters)
    else:
        with pytest.raises(ParamsError, match=str(f)):
            load_params(f)


def test_schema_is_documented():
    schema = Params.model_json_schema()
    assert "models" in schema["properties"]
    assert "G(x)" in (schema["$defs"]["LanguageParams"]["properties"]["names"]["description"])


def test_extends_merges_the_base_file_key_by_key(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(
        "name: base\nmodels: {pi_ref: tiny:0}\nanchor: {n_train: 8, beta: 0.2}\nlanguages: {train: [en, de, fr]}\n"
    )
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../base.yaml\nname: child\nanchor: {n_train: 500}\nlanguages: {train: [en]}\n")
    p = load_params(tmp_path / "sub" / "child.yaml")
    assert (p.name, p.models.pi_ref, p.anchor.n_train, p.anchor.beta, p.languages.train) == ("child", "tiny:0", 500, 0.2, ["en"])
    shipped = load_params(REPO / "params/cpu-power.yaml")
    cpu = load_params(REPO / "params/cpu.yaml")
    assert (shipped.probe.n_items, shipped.evaluation.lcb_n_prompts) == (97, 97)
    # everything else, the anchor included (same anchor-cache key: cpu.yaml's pi0 is reused), as cpu.yaml
    assert shipped.anchor == cpu.anchor and shipped.sampling == cpu.sampling and shipped.judge == cpu.judge and shipped.seed == cpu.seed


def test_extends_errors_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(ParamsError, match=r"a.yaml: 'extends' goes round in a circle.*Fix: remove"):
        load_params(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\nname: c\n")
    with pytest.raises(ParamsError, match=r"missing.yaml: params file not found \(extended by .*c.yaml\)"):
        load_params(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: [x]\nname: d\n")
    with pytest.raises(ParamsError, match=r"d.yaml: field 'extends' must be the path"):
        load_params(tmp_path / "d.yaml")


# the order of each DPO params' fields before the shared base (DPOParams) existed: the manifest's params are dumped in it
ANCHOR_FIELDS = [
    "n_train",
    "n_eval",
    "min_score_margin",
    "beta",
    "learning_rate",
    "epochs",
    "batch_size",
    "grad_accum",
    "max_length",
    "warmup_ratio",
    "finetune",
    "lora",
    "bootstrap",
    "head",
    "checkpoint_steps",
    "score_dtype",
]
TRAINING_FIELDS = [
    "beta",
    "nll_weight",
    "learning_rate",
    "epochs",
    "batch_size",
    "grad_accum",
    "max_length",
    "warmup_ratio",
    "finetune",
    "lora",
    "dpo_reference",
    "precompute_ref_log_probs",
    "prompts_per_iteration",
    "save_merged",
    "head",
    "checkpoint_steps",
]


def test_dpo_params_share_a_base_and_keep_their_dump_and_schema_order():
    from xlr.config import AnchorParams, DPOParams, TrainingParams

    p = load_params(REPO / "params/cpu.yaml")
    assert isinstance(p.anchor, DPOParams) and isinstance(p.training, DPOParams)
    for section, fields in (("anchor", ANCHOR_FIELDS), ("training", TRAINING_FIELDS)):
        assert list(p.model_dump()[section]) == list(p.model_dump(mode="json")[section]) == fields
        assert list(Params.model_json_schema()["$defs"][f"{section.capitalize()}Params"]["properties"]) == fields
    # each keeps its own defaults where they differ
    a, t = AnchorParams(), TrainingParams()
    assert (a.learning_rate, a.batch_size, a.grad_accum, a.max_length) == (5e-5, 4, 1, 512)
    assert (t.learning_rate, t.batch_size, t.grad_accum, t.max_length) == (5e-6, 1, 8, 2048)
    # the anchor always writes its merged model (pi0 is anchor/model): a class constant, not a settable field
    assert AnchorParams.save_merged is True and "save_merged" not in AnchorParams.model_fields
    with pytest.raises(ValueError, match="save_merged"):
        AnchorParams(save_merged=False)
    with pytest.raises(TypeError, match="field_order"):

        class Incomplete(DPOParams):
            field_order = ("beta",)
            learning_rate: float = 1.0
