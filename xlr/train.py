"""DPO training with trl: the English anchor pi0, and each iteration's multilingual DPO (+ NLL on chosen).

Both use trl's ``DPOTrainer`` on conversational pairs (prompt = one user message, chosen/rejected = one assistant
message), LoRA (peft) by default or full fine-tuning. With LoRA the DPO reference is the start model itself
(peft's disabled adapter) and its log-probs are precomputed once (``precompute_ref_log_probs``). The trained
model is saved under the run directory as a LoRA adapter plus merged weights (a plain folder that
:func:`xlr.models.load_model` loads and hash-checks), and becomes the next policy. :func:`train_dpo` takes the stage's
params whole (:class:`xlr.config.AnchorParams` or :class:`xlr.config.TrainingParams`, both :class:`xlr.config.DPOParams`)
and the loss (:class:`DPOLoss`).

One documented deviation from stock trl 1.16: its DPOTrainer always patches a chunked, fused LM head which, off
Triton devices (CPU), scores every position of the batch, prompt and padding included, and has no switch for it.
:func:`compact_fused_head` makes it score only positions with a label, as trl itself does on Triton devices (the
CPU has no shape-recompilation cost that the dense path avoids). Same loss code, same numbers; a test checks the
loss against an independent computation.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xlr.chat import chat_ids
from xlr.files import atomic_write_json, sha256_file
from xlr.runtime import release_memory

if TYPE_CHECKING:
    from xlr.config import AnchorParams, TrainingParams

log = logging.getLogger(__name__)


@contextlib.contextmanager
def compact_fused_head() -> Iterator[None]:
    """Within this context trl's fused LM head scores only labelled positions on every device (see module doc)."""
    import trl.trainer.utils as tu

    original = tu._use_triton
    tu._use_triton = lambda device: True  # only consulted for the compact/dense choice in trl.trainer.utils
    try:
        yield
    finally:
        tu._use_triton = original


HEAD_CHUNK = 512  # positions per LM-head tile: 512 x 151,936 fp32 logits is ~0.3 GB, whatever the batch


def _head_log_probs_function() -> Any:
    """A torch.autograd.Function (built lazily: torch is imported late) giving per-position log-probs of ``target``
    under ``hidden @ weight.T / temperature``, tile by tile, so the [positions x vocabulary] logits never exist whole.

    Written by hand because neither torch nor trl has it for CPU: trl's fused head (``trl.trainer.utils``) tiles the
    vocabulary in fp32 and keeps per-tile tensors for backward; torch has no chunked cross-entropy. Forward keeps only
    the logsumexp per position; backward recomputes each tile's logits (one more bf16 matmul over the labelled
    positions) and returns d/d hidden and, for full fine-tuning, d/d weight. Also returns, without gradient, what
    trl logs: entropy, mean logit, whether the target is the argmax, and log sum p^2.

    The matmuls run in the compute dtype: autocast's where it is on (fp32 master weights trained under bf16 autocast),
    else the inputs' own. Forward records it and backward (which autograd runs outside autocast) reuses it, as trl's
    ``ChunkedLogProbFunction`` does; gradients come back in the inputs' dtypes (fp32 for fp32 master weights)."""
    import torch

    class HeadLogProbs(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, target: Any, temperature: float, chunk: int) -> Any:
            n = hidden.shape[0]
            kind = hidden.device.type
            ctx.compute = (
                torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else torch.promote_types(hidden.dtype, weight.dtype)
            )
            h, w = hidden.to(ctx.compute), weight.to(ctx.compute)  # no copy when already in it; else one cast of the head per call
            out = {k: torch.empty(n, dtype=torch.float32, device=hidden.device) for k in ("lp", "lse", "entropy", "mean", "sq")}
            top1 = torch.empty(n, dtype=torch.bool, device=hidden.device)
            for s in range(0, n, chunk):
                e = min(s + chunk, n)
                logits = (h[s:e] @ w.T).float() / temperature
                lse = torch.logsumexp(logits, dim=-1)
                out["lse"][s:e] = lse
                out["lp"][s:e] = logits.gather(-1, target[s:e, None]).squeeze(-1) - lse
                out["mean"][s:e] = logits.mean(-1)
                top1[s:e] = logits.argmax(-1) == target[s:e]
                logits.sub_(lse[:, None])  # now log p, in place: no second tile-sized tensor
                probs = logits.exp()
                out["entropy"][s:e] = -(probs * logits).sum(-1)
                out["sq"][s:e] = torch.log((probs * probs).sum(-1))
                del logits, probs
            ctx.save_for_backward(hidden, weight, target, out["lse"])
            ctx.temperature, ctx.chunk = temperature, chunk
            ctx.mark_non_differentiable(out["entropy"], out["mean"], top1, out["sq"])
            return out["lp"], out["entropy"], out["mean"], top1, out["sq"]

        @staticmethod
        def backward(ctx: Any, grad_lp: Any, *unused: Any) -> Any:
            hidden, weight, target, lse = ctx.saved_tensors
            h, w = hidden.to(ctx.compute), weight.to(ctx.compute)
            need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            for s in range(0, hidden.shape[0], ctx.chunk):
                e = min(s + ctx.chunk, hidden.shape[0])
                logits = (h[s:e] @ w.T).float() / ctx.temperature
                # d lp / d logits = onehot(target) - softmax; times the incoming gradient and 1/temperature
                g = grad_lp[s:e, None].float() / ctx.temperature
                dlogits = logits.sub_(lse[s:e, None]).exp_().mul_(-g)
                dlogits.scatter_add_(-1, target[s:e, None], g)
                dlogits = dlogits.to(ctx.compute)
                if need_h:
                    grad_h[s:e] = dlogits @ w
                if need_w:
                    grad_w += (dlogits.T @ h[s:e]).float()
                del logits, dlogits
            return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None

    return HeadLogProbs


def _add_bf16_lm_head(
    model: Any, temperature: float = 1.0, cast_lm_head_to_fp32: bool = False, outputs: tuple[str, ...] = ("log_probs",)
) -> None:
    """Drop-in for trl's ``add_fused_lm_head`` (same call, same ``FusedCausalLMOutput``) for CPU training: the LM head
    runs as bf16 matmuls over the labelled positions (AMX-accelerated here; bf16 weights, or fp32 master weights under
    bf16 autocast; an fp32 model without autocast computes in fp32) and the log-softmax in fp32, where trl's
    CPU path upcasts hidden states and head weights to fp32 for every vocabulary tile. Tiled over positions
    (:func:`_head_log_probs_function`), so memory does not grow with batch x length x vocabulary. The logits are
    rounded to bf16 before the fp32 log-softmax (trl warns that this can bias entropy over many steps; hence opt-in)."""
    import types

    from trl.trainer.utils import FusedCausalLMOutput

    original_forward = model.forward
    head_log_probs = _head_log_probs_function()

    def forward(
        self: Any,
        *args: Any,
        fused_lm_head: bool = False,
        labels: Any = None,
        shift_labels: Any = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not fused_lm_head:
            if labels is not None:
                kwargs["labels"] = labels
            return original_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        mask = labels != -100
        head = self.get_output_embeddings()
        if getattr(head, "bias", None) is not None or not hasattr(head, "weight") or type(head).__name__ != "Linear":
            raise ValueError(
                f"head='bf16' needs a plain bias-free Linear LM head, got {type(head).__name__}. Fix: set head: trl-compact in params."
            )
        lp, entropy, mean_logits, is_top1, sq = head_log_probs.apply(hidden[mask], head.weight, labels[mask], temperature, HEAD_CHUNK)

        def full(x: Any) -> Any:
            return None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x)

        log_probs = full(lp)
        loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(
            loss=loss,
            log_probs=log_probs,
            entropy=full(entropy),
            log_sum_sq_probs=full(sq) if "log_sum_sq_probs" in outputs else None,
            mean_logits=full(mean_logits),
            is_top1=full(is_top1),
            label_mask=mask,
            aux_loss=None,
        )

    model.forward = types.MethodType(forward, model)


@contextlib.contextmanager
def bf16_cpu_head() -> Iterator[None]:
    """Within this context trl's DPOTrainer installs :func:`_add_bf16_lm_head` instead of its fused LM head."""
    import trl.trainer.dpo_trainer as dt

    original = dt.add_fused_lm_head
    dt.add_fused_lm_head = _add_bf16_lm_head
    try:
        yield
    finally:
        dt.add_fused_lm_head = original


def to_conversational(prompt: str | list[dict[str, str]], chosen: str, rejected: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return {
        "prompt": messages,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def length_report(tokenizer: Any, pairs: Sequence[dict[str, Any]], max_length: int) -> tuple[list[int], dict[str, int]]:
    """Indices of pairs trl can train on, and counts of those it would drop (prompt alone >= max_length) or
    truncate (prompt + response > max_length). trl drops the former silently; xlr counts them."""
    keep, counts = [], {"dropped_prompt_too_long": 0, "truncated": 0}
    for i, p in enumerate(pairs):
        prompt_ids = chat_ids(tokenizer, p["prompt"], add_generation_prompt=True)
        if len(prompt_ids) >= max_length:
            counts["dropped_prompt_too_long"] += 1
            continue
        longest = max(len(tokenizer(p[k][0]["content"], add_special_tokens=False)["input_ids"]) + 2 for k in ("chosen", "rejected"))
        if len(prompt_ids) + longest > max_length:
            counts["truncated"] += 1
        keep.append(i)
    return keep, counts


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint that was written completely (has trainer_state.json). A checkpoint cut off by a kill
    is moved aside to ``../incomplete-checkpoints/`` (kept, not deleted) so trl never resumes from it."""
    if not folder.is_dir():
        return None
    done = []
    for ckpt in sorted(
        folder.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]) if p.name.rsplit("-", 1)[-1].isdigit() else -1
    ):
        if (ckpt / "trainer_state.json").is_file():
            done.append(ckpt)
        else:
            aside = folder.parent / "incomplete-checkpoints"
            aside.mkdir(exist_ok=True)
            ckpt.rename(aside / f"{ckpt.name}-{int(time.time())}")
            log.warning("moved incomplete checkpoint %s aside to %s", ckpt, aside)
    return done[-1] if done else None


def _resume_callback() -> Any:
    """A TrainerCallback (built lazily: transformers is imported late) that makes a resumed run log what an
    uninterrupted one logs, and gives the kill/resume harness its checkpoint kill point."""
    from transformers import TrainerCallback

    from xlr import faults

    class ResumeCallback(TrainerCallback):
        offset = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # trl counts "num_tokens" in the trainer, not in the saved state, so after a resume it restarts at 0;
            # continue from the last value restored with the checkpoint's log history (corrected the same way)
            seen = [h["num_tokens"] for h in state.log_history if "num_tokens" in h]
            self.offset = seen[-1] if seen else 0

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if self.offset and state.log_history and "num_tokens" in state.log_history[-1]:
                state.log_history[-1]["num_tokens"] += self.offset

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            faults.point("checkpoint")  # xlr.faults: a no-op unless XLR_KILL_AT names it

    return ResumeCallback()


def micro_batches(steps: int, steps_in_epoch: int, grad_accum: int) -> int:
    """Micro-batches (forward + backward of one per-device batch) in the first ``steps`` optimizer steps, as transformers'
    loop cuts an epoch of ``steps_in_epoch`` batches: ``grad_accum`` per step, the epoch's last step taking what is left."""
    per_epoch = max(math.ceil(steps_in_epoch / grad_accum), 1)
    full, rest = divmod(steps, per_epoch)
    return full * steps_in_epoch + rest * grad_accum


def _micro_batch_progress() -> Any:
    """transformers' training bar (its ProgressCallback, which moves once per optimizer step: with ``grad_accum`` 4
    and 512-token pairs, minutes on a slow CPU), counted in micro-batches instead: it moves after every forward +
    backward (``on_substep_end``; ``on_step_end`` for a step's last), its total and, after a resume, its start from the
    optimizer steps (:func:`micro_batches`). The per-step logs are written above it as before. Built lazily (transformers
    is imported late)."""
    from transformers.trainer_callback import ProgressCallback
    from transformers.trainer_utils import has_length

    from xlr.sampling import progress_bar

    class MicroBatchProgress(ProgressCallback):
        # One micro-batch (forward + backward of one pair, 2 x 512 tokens) took 42 s in fp32 on a 2-core AMD EPYC
        # (bench/progress.py): the bar also moves inside it, a share as each decoder layer ends its forward (forward
        # hooks) and its backward (a hook on the layer's output gradient), capped below one micro-batch; the rest is
        # credited when the micro-batch ends. The numbers are untouched (hooks only read).
        share, moved, count, handles = 0.0, 0.0, 0, ()

        def _inside(self, *_: Any) -> None:
            step = min(self.share, 0.95 - self.moved)
            if step > 0 and self.training_bar is not None:
                self.moved += step
                self.training_bar.update(step)

        def _hook_layers(self, model: Any) -> None:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
            layers = list(getattr(decoder, "layers", None) or [])
            if not layers:
                return
            self.share = 1.0 / (2 * len(layers) + 1)

            def forward_hook(module: Any, args: Any, output: Any) -> None:
                self._inside()
                out = output[0] if isinstance(output, tuple) else output
                if getattr(out, "requires_grad", False):
                    out.register_hook(lambda grad: self._inside())

            self.handles = tuple(layer.register_forward_hook(forward_hook) for layer in layers)

        def _credit(self) -> None:
            self.count += 1
            self.training_bar.update(self.count - self.training_bar.n)
            self.training_bar.n = self.count  # whole micro-batches exactly, whatever the shares' float sum
            self.moved = 0.0

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            for h in self.handles:
                h.remove()
            self.handles = ()
            super().on_train_end(args, state, control, **kwargs)

        def on_train_begin(self, args: Any, state: Any, control: Any, train_dataloader: Any = None, **kwargs: Any) -> None:
            self.current_step = 0
            if not state.is_world_process_zero:
                return
            if kwargs.get("model") is not None:
                self._hook_layers(kwargs["model"])
            per_epoch = len(train_dataloader) if train_dataloader is not None and has_length(train_dataloader) else None
            if per_epoch:
                total = micro_batches(state.max_steps, per_epoch, args.gradient_accumulation_steps)
                done = micro_batches(state.global_step, per_epoch, args.gradient_accumulation_steps)
            else:
                total = state.max_steps * args.gradient_accumulation_steps
                done = state.global_step * args.gradient_accumulation_steps
            self.training_bar = progress_bar(total, "DPO training", "micro-batch", initial=done)
            self.count = done
            self._step(state)

        def _step(self, state: Any) -> None:
            self.training_bar.set_postfix_str(f"optimizer step {state.global_step}/{state.max_steps}", refresh=False)

        def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero and self.training_bar is not None:
                self._credit()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero and self.training_bar is not None:
                self._step(state)
                self._credit()
                self.current_step = state.global_step

    return MicroBatchProgress()


def lora_config(lora: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules, task_type="CAUSAL_LM")


def training_precision(dtype: Any, finetune: str) -> tuple[Any, str | None]:
    """(dtype the TRAINABLE model is loaded in, autocast dtype name or None) for the requested model ``dtype``.

    Full fine-tuning in bf16/fp16 keeps fp32 master weights and trains under autocast (DPOConfig ``bf16``/``fp16``):
    in pure bf16 an AdamW update of lr ~5e-7 is far below half an ulp of weights ~0.02 (ulp ~1.2e-4) and rounds away,
    so the "trained" model would stay the start model. LoRA keeps the frozen base in the requested dtype (it never
    updates, and a fp32 copy would double its memory) and no autocast: peft already holds the adapters, the only
    trained weights, in fp32 (``get_peft_model``'s ``autocast_adapter_dtype``) and computes them in fp32, as before.
    The frozen DPO reference of full fine-tuning stays in the requested dtype."""
    import torch

    requested = dtype or torch.float32
    if finetune == "full" and requested in (torch.bfloat16, torch.float16):
        return torch.float32, "bf16" if requested == torch.bfloat16 else "fp16"
    return requested, None


@dataclass(frozen=True)
class DPOLoss:
    """trl's loss terms and their weights (DPOConfig ``loss_type`` / ``loss_weights``; weights None: trl's, 1 each)."""

    loss_type: tuple[str, ...]
    loss_weights: tuple[float, ...] | None

    @classmethod
    def sigmoid(cls) -> DPOLoss:
        """The anchor's loss: DPO sigmoid alone, trl's default weight."""
        return cls(("sigmoid",), None)

    @classmethod
    def sigmoid_nll(cls, nll_weight: float) -> DPOLoss:
        """An iteration's loss: DPO sigmoid + ``nll_weight`` x NLL on chosen (trl's "sft" term); sigmoid alone at weight 0."""
        return cls(("sigmoid", "sft"), (1.0, nll_weight)) if nll_weight > 0 else cls(("sigmoid",), (1.0,))

    def as_record(self) -> dict[str, Any]:
        """``loss_type`` and ``loss_weights`` as lists (None stays None), as the stage record writes them."""
        return {"loss_type": list(self.loss_type), "loss_weights": None if self.loss_weights is None else list(self.loss_weights)}


def dpo_args(out_dir: Path, dpo: AnchorParams | TrainingParams, *, loss: DPOLoss, autocast: str | None, device: str, seed: int) -> Any:
    """trl's DPOConfig as :func:`train_dpo` uses it, from the stage's DPO params ``dpo`` (beta, learning_rate, epochs,
    batch_size, grad_accum, max_length, warmup_ratio, precompute_ref_log_probs, checkpoint_steps). Warmup is
    ``dpo.warmup_ratio`` of the optimizer steps transformers itself counts (``warmup_steps`` < 1 is a ratio in
    transformers 5: ceil(ratio x max_steps), with max_steps from the per-process dataloader, so the number of processes
    counts). ``autocast``: see :func:`training_precision`."""
    from trl import DPOConfig

    warmup_ratio, batch_size = dpo.warmup_ratio, dpo.batch_size
    if not 0 <= warmup_ratio < 1:  # the schema checks it; a model_copy(update=...) does not
        raise ValueError(
            f"warmup_ratio={warmup_ratio}: must be in [0, 1) (a fraction of the optimizer steps). "
            "Fix: set anchor.warmup_ratio / training.warmup_ratio in [0, 1)."
        )
    return DPOConfig(
        output_dir=str(out_dir / "checkpoints"),
        beta=dpo.beta,
        loss_type=list(loss.loss_type),
        loss_weights=list(loss.loss_weights) if loss.loss_weights else None,
        learning_rate=dpo.learning_rate,
        num_train_epochs=dpo.epochs,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=dpo.grad_accum,
        warmup_steps=float(warmup_ratio),  # a float < 1: a ratio of the real optimizer steps (transformers' get_warmup_steps)
        max_length=dpo.max_length,
        precompute_ref_log_probs=dpo.precompute_ref_log_probs,
        # on CPU one pair at a time: a batch of 4 pairs took 40 s per forward in fp32 on a 2-core AMD EPYC, so trl's bar
        # (one move per batch) stood still that long (bench/progress.py); a GPU gains from batching it
        precompute_ref_batch_size=batch_size if device == "cpu" else max(batch_size, 4),
        bf16=autocast == "bf16",  # trl's default (True) errors without a GPU; only fp32 master weights train under autocast
        fp16=autocast == "fp16",
        use_cpu=device == "cpu",
        activation_checkpointing=False,  # trl's gradient_checkpointing (on by default; transformers 5 renamed it): needless at this size, slower on CPU
        logging_steps=1,
        save_strategy="steps",
        save_steps=dpo.checkpoint_steps,
        save_total_limit=2,
        report_to=[],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def train_dpo(
    start_spec: str,
    pairs: Sequence[dict[str, Any]],
    out_dir: Path,
    dpo: AnchorParams | TrainingParams,
    *,
    loss: DPOLoss,
    seed: int,
    dtype: Any,
    device: str,
    reference_spec: str | None = None,
) -> dict[str, Any]:
    """DPO of ``start_spec`` on conversational ``pairs`` with the stage's DPO params ``dpo`` (the anchor's or an
    iteration's, its ``head`` already resolved by the stage: :func:`xlr.runtime.dpo_head`) and ``loss``; resumes from
    the last checkpoint in ``out_dir``.

    Writes ``out_dir/adapter`` (LoRA), ``out_dir/model`` (merged, hash-recorded; always for full fine-tuning, for
    LoRA when ``dpo.save_merged``: always for the anchor, whose merged model is pi0), ``out_dir/metrics.json``
    (trl's per-step log: loss, rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies, lr, ...).
    ``reference_spec``: a different DPO reference than the start model (full fine-tuning, or LoRA with an explicit
    reference); None: the reference is the start model. Warmup: linear over ``dpo.warmup_ratio`` of the optimizer
    steps, all processes counted (:func:`dpo_args`).

    Precision (:func:`training_precision`): full fine-tuning with ``dtype`` bf16 trains fp32 master weights under bf16
    autocast, with the frozen reference in bf16; LoRA keeps the frozen base in ``dtype`` and peft's fp32 adapters. The
    merged model is saved in ``dtype``. The record (train_record.json) names ``master_dtype`` (of the trained
    parameters, as measured) and ``autocast`` (None: off).
    """
    import torch
    from accelerate.utils import DistributedType
    from datasets import Dataset
    from trl import DPOTrainer

    from xlr.models import load_model

    out_dir.mkdir(parents=True, exist_ok=True)
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # under accelerate launch / torchrun: this process's own GPU
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    save_dtype = dtype or torch.float32
    finetune, max_length = dpo.finetune, dpo.max_length
    train_dtype, autocast = training_precision(save_dtype, finetune)
    if autocast == "fp16" and device == "cpu":
        raise ValueError(
            "runtime.dtype fp16 with full fine-tuning trains fp32 master weights under fp16 autocast with a grad scaler, which needs a GPU. "
            "Fix: on CPU set runtime.dtype: bf16 (or fp32)."
        )
    model, tok = load_model(start_spec, dtype=train_dtype, device=device)
    keep, counts = length_report(tok, pairs, max_length)
    if not keep:
        raise ValueError(f"no trainable pairs: all {len(pairs)} prompts are >= max_length={max_length} tokens. Fix: raise max_length.")
    ds = Dataset.from_list([{k: pairs[i][k] for k in ("prompt", "chosen", "rejected")} for i in keep])
    ref_model = None
    if reference_spec is not None and reference_spec != start_spec:
        ref_model, _ = load_model(reference_spec, dtype=save_dtype, device=device)
    elif finetune == "full":
        # trl would reload a reference from config._name_or_path; pass the start model's own copy instead.
        ref_model, _ = load_model(start_spec, dtype=save_dtype, device=device)
    args = dpo_args(out_dir, dpo, loss=loss, autocast=autocast, device=device, seed=seed)
    resume = last_complete_checkpoint(out_dir / "checkpoints")
    head = dpo.head
    if head not in ("trl-compact", "bf16"):
        raise ValueError(f"head={head!r}: use 'trl-compact' or 'bf16'")
    patch = bf16_cpu_head() if head == "bf16" else compact_fused_head()
    with patch:  # covers __init__ too: trl precomputes the reference log-probs there
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=ds,
            processing_class=tok,
            peft_config=lora_config(dpo.lora) if finetune == "lora" else None,
            callbacks=[_resume_callback()],
        )
        from transformers.trainer_callback import ProgressCallback

        if any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks):
            trainer.remove_callback(ProgressCallback)  # the per-step bar, replaced by one per micro-batch
            trainer.add_callback(_micro_batch_progress())
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    history = [h for h in trainer.state.log_history if "loss" in h or "train_runtime" in h]
    step_losses = [h["loss"] for h in history if "loss" in h and "train_runtime" not in h]
    for h in history:
        if "train_loss" in h and step_losses:
            # transformers averages only the losses of this process's steps, so after a resume its train_loss
            # leaves out the steps restored from the checkpoint; the mean of all logged step losses does not
            h["train_loss"] = float(np.mean(step_losses))
    acc = trainer.accelerator
    record: dict[str, Any] = {
        "start": start_spec,
        "reference": reference_spec or start_spec,
        "finetune": finetune,
        "pairs": len(ds),
        "resumed": resume is not None,
        **counts,
        "distributed_type": str(acc.distributed_type).rsplit(".", 1)[-1],
        "num_processes": acc.num_processes,
        "mixed_precision": str(acc.mixed_precision),
        **_precision_record(trainer.model, acc),
    }
    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED) or acc.num_processes > 1:
        _save_distributed(trainer, tok, start_spec, out_dir, history, record, finetune, dpo.save_merged, save_dtype)
        del trainer, model, ref_model
        release_memory()
        return record
    atomic_write_json(out_dir / "metrics.json", history)
    trained = trainer.model
    if finetune == "lora":
        adapter = out_dir / "adapter"
        trained.save_pretrained(adapter)
        _write_adapter_manifest(adapter, start_spec)
        record["adapter"] = str(adapter)
        merged = trained.merge_and_unload()
    else:
        merged = trained
    if dpo.save_merged or finetune == "full":
        _write_model_dir(merged, out_dir / "model", tok, start_spec, record, dtype=save_dtype)
    atomic_write_json(out_dir / "train_record.json", record)
    del trainer, trained, merged, model, ref_model
    release_memory()  # the next step (accuracy pass, next stage's models) would otherwise sit on the freed training heap
    return record


def _precision_record(model: Any, acc: Any) -> dict[str, Any]:
    """What the trained parameters are stored in (the optimizer's master weights) and the autocast dtype in force."""
    import torch

    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    stored = sorted({names.get(p.dtype, str(p.dtype)) for p in model.parameters() if p.requires_grad})
    autocast = {"bf16": "bf16", "fp16": "fp16"}.get(str(acc.mixed_precision)) if getattr(acc, "native_amp", False) else None
    out: dict[str, Any] = {"master_dtype": stored[0] if len(stored) == 1 else stored, "autocast": autocast}
    if str(acc.distributed_type).endswith("DEEPSPEED"):
        out["master_note"] = (
            f"DeepSpeed ({acc.mixed_precision}): master_dtype is what the model's parameters compute with; "
            "ZeRO keeps its own master copy in the optimizer"
        )
    return out


def _save_distributed(
    trainer: Any,
    tok: Any,
    start_spec: str,
    out_dir: Path,
    history: list[dict[str, Any]],
    record: dict[str, Any],
    finetune: str,
    save_merged: bool,
    save_dtype: Any = None,
) -> None:
    """Saving after training under accelerate (several processes, or FSDP/DeepSpeed wrapping even on one).

    The weights are sharded across ranks there, so the single-process path's ``model.save_pretrained`` would write
    one rank's shard (or fail on DTensors): every rank joins ``accelerator.get_state_dict`` (gathers the full state dict),
    and the main process alone writes. A LoRA merge is not done on the sharded model: the main process reloads the start
    model, applies the saved adapter and merges there (peft's documented way)."""
    from xlr.models import load_model

    acc = trainer.accelerator
    # collective: every rank must call it. Wrappers' prefixes (activation checkpointing, FSDP1) are dropped so the
    # names are the model's own, as peft and save_pretrained expect them.
    state = {_canonical_name(k): v for k, v in acc.get_state_dict(trainer.model).items()}
    unwrapped = acc.unwrap_model(trainer.model)
    if acc.is_main_process:
        atomic_write_json(out_dir / "metrics.json", history)
        target = out_dir / "model"
        if finetune == "lora":
            from peft import PeftModel

            adapter = out_dir / "adapter"
            trainable = sorted(_canonical_name(n) for n, p in unwrapped.named_parameters() if p.requires_grad)
            saved = write_adapter_from_state(unwrapped, state, adapter)
            if sorted(saved) != sorted(
                k.replace(".default.", ".") for k in trainable
            ):  # a silently empty adapter would make the "trained" model the start model
                raise RuntimeError(
                    f"{adapter}: saved {len(saved)} adapter tensors, the model trains {len(trainable)} (names gathered: "
                    f"{[k for k in state if 'lora_' in k][:3]}, in the model: {trainable[:3]}). The weights gathered across ranks did not map "
                    "onto the adapter's names; please report it with these lines."
                )
            _write_adapter_manifest(adapter, start_spec)
            record["adapter"] = str(adapter)
            if save_merged:
                base, _ = load_model(start_spec, dtype=next(iter(state.values())).dtype, device="cpu")
                _write_model_dir(PeftModel.from_pretrained(base, str(adapter)).merge_and_unload(), target, tok, start_spec, record)
        else:
            _write_model_dir(unwrapped, target, tok, start_spec, record, state_dict=state, dtype=save_dtype)
        atomic_write_json(out_dir / "train_record.json", record)
    acc.wait_for_everyone()


def write_adapter_from_state(peft_model: Any, state: dict[str, Any], adapter_dir: Path, adapter_name: str = "default") -> list[str]:
    """Write a LoRA adapter (peft's files: adapter_config.json, adapter_model.safetensors) from a full state dict of
    the peft model. Returns the saved tensor names.

    Hand-written because peft's ``save_pretrained(state_dict=...)`` picks the adapter's tensors by walking the model's
    module names, which distributed wrappers rename: under accelerate's FSDP2 config (activation checkpointing on) it
    saved an empty adapter (H200, bench/gpu_accelerate_check.sh). The file format is peft's documented one: the
    adapter's tensors with the adapter name dropped from their keys (``...q_proj.lora_A.default.weight`` ->
    ``...q_proj.lora_A.weight``); tests check it equal to what peft itself writes."""
    from safetensors.torch import save_file

    marker = f".{adapter_name}."
    tensors = {k.replace(marker, "."): v.detach().to("cpu").contiguous() for k, v in state.items() if "lora_" in k and marker in k}
    adapter_dir.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(peft_model.peft_config[adapter_name])
    config.inference_mode = True  # as peft's save_pretrained writes it
    config.save_pretrained(str(adapter_dir))
    save_file(tensors, str(adapter_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return list(tensors)


def _write_model_dir(
    model: Any, target: Path, tok: Any, start_spec: str, record: dict[str, Any], state_dict: dict[str, Any] | None = None, dtype: Any = None
) -> None:
    """The trained model as a loadable folder: weights (safetensors) in ``dtype`` (the requested one, not fp32 master
    weights; None: as they are), tokenizer, and xlr's manifest with their hashes. Casts ``model`` in place."""
    from xlr.models import MODEL_MANIFEST

    if dtype is not None and state_dict is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    elif dtype is not None:
        model.to(dtype)
    model.save_pretrained(target, state_dict=state_dict, safe_serialization=True)
    if dtype is not None and state_dict is not None:  # save_pretrained names the (fp32, sharded) model's dtype in config.json
        cfg_path = target / "config.json"
        atomic_write_json(cfg_path, {**json.loads(cfg_path.read_text()), "dtype": str(dtype).removeprefix("torch.")})
    tok.save_pretrained(target)
    atomic_write_json(
        target / MODEL_MANIFEST,
        {
            "kind": "dpo",
            "start": start_spec,
            "record": record,
            "weights": {p.name: sha256_file(p) for p in sorted(target.glob("*.safetensors"))},
        },
    )
    record["model"] = str(target)


def _canonical_name(name: str) -> str:
    """A parameter's name without the wrapper modules' prefixes that distributed training can put in it."""
    for wrapper in ("_checkpoint_wrapped_module.", "_fsdp_wrapped_module.", "_orig_mod."):
        name = name.replace(wrapper, "")
    return name


def _write_adapter_manifest(adapter: Path, start_spec: str) -> None:
    """Name the base by its xlr spec (so the adapter loads anywhere) and record the weights' hashes."""
    from xlr.models import MODEL_MANIFEST

    cfg_path = adapter / "adapter_config.json"
    cfg = {**json.loads(cfg_path.read_text()), "base_model_name_or_path": start_spec}
    if isinstance(cfg.get("target_modules"), list):  # peft writes a set in hash order: sorted, two runs write the same file
        cfg["target_modules"] = sorted(cfg["target_modules"])
    atomic_write_json(cfg_path, cfg)
    atomic_write_json(
        adapter / MODEL_MANIFEST,
        {"kind": "lora-adapter", "start": start_spec, "weights": {p.name: sha256_file(p) for p in sorted(adapter.glob("*.safetensors"))}},
    )


def read_metrics(out_dir: Path) -> list[dict[str, Any]]:
    return json.loads((out_dir / "metrics.json").read_text())
