"""DPO training step time: trl as xlr runs it vs stock trl vs a plain PyTorch loop, side by side.

Same model, same LoRA, same pairs (the first English UltraFeedback train pairs), same batch and max length, same
loss (DPO sigmoid, beta 0.1, + NLL on chosen with weight 1.0, as trl's loss_type=["sigmoid", "sft"]):
- "trl stock": trl 1.16 DPOTrainer as shipped (its fused LM head scores every position on CPU, in fp32);
- "trl + xlr compact head": the same trainer inside xlr.train.compact_fused_head (labelled positions only);
- "trl + xlr bf16 head": the same trainer with xlr.train.bf16_cpu_head (one bf16 matmul, fp32 log-softmax);
- "plain loop": a hand-written step (forward of chosen+rejected, LM head at completion positions in bf16 with
  fp32 log-softmax, AdamW), its first-step loss checked against trl's.
Reference log-probs are precomputed by every variant before timing. Prints seconds per step and the ratio.

    .venv/bin/python bench/dpo.py [--model qwen2.5-coder-0.5b-instruct] [--steps 3] [--batch 2] [--max-length 384]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
import time
from pathlib import Path

import torch

from xlr import data
from xlr.chat import chat_ids
from xlr.config import LoraParams
from xlr.models import load_model
from xlr.runtime import set_threads
from xlr.train import bf16_cpu_head, compact_fused_head, lora_config, to_conversational


def trl_steps(model_spec, pairs, steps, batch, max_length, head: str) -> tuple[float, float]:
    """(seconds per optimizer step after the first, first-step loss) for trl's DPOTrainer."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    model, tok = load_model(model_spec, dtype=torch.bfloat16)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    patch = {"stock": contextlib.nullcontext(), "compact": compact_fused_head(), "bf16": bf16_cpu_head()}[head]
    with tempfile.TemporaryDirectory() as d, patch:
        args = DPOConfig(output_dir=d, beta=0.1, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0], learning_rate=5e-5, max_steps=steps,
                         per_device_train_batch_size=batch, max_length=max_length, precompute_ref_log_probs=True, bf16=False, use_cpu=True,
                         gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to=[], seed=0, disable_tqdm=True)
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs[: steps * batch]), processing_class=tok,
                             peft_config=lora_config(LoraParams(r=16, alpha=32, dropout=0.0)), callbacks=[Clock()])
        trainer.train()
    first_loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return sum(times[1:]) / max(len(times) - 1, 1), first_loss


def plain_steps(model_spec, pairs, steps, batch, max_length) -> tuple[float, float]:
    """The same loss by hand (peft LoRA, AdamW), reference log-probs from the disabled adapter, precomputed."""
    from peft import get_peft_model

    model, tok = load_model(model_spec, dtype=torch.bfloat16)
    model = get_peft_model(model, lora_config(LoraParams(r=16, alpha=32, dropout=0.0)))
    model.train()

    def encode(p):
        prompt = chat_ids(tok, p["prompt"], add_generation_prompt=True)
        out = []
        for key in ("chosen", "rejected"):
            full = chat_ids(tok, p["prompt"] + p[key])[:max_length]
            out.append((full, len(prompt)))
        return out

    def logps(batch_pairs):
        seqs = [s for p in batch_pairs for s in encode(p)]  # chosen, rejected, chosen, rejected, ...
        width = max(len(s) for s, _ in seqs)
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s, _ in seqs])
        attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in seqs])
        hidden = model.get_base_model().model(input_ids=ids, attention_mask=attn).last_hidden_state
        head = model.get_base_model().lm_head
        sums, tok_logps, chosen_tokens = [], [], 0
        for b, (s, p) in enumerate(seqs):
            h = hidden[b, p - 1 : len(s) - 1]
            lp = -torch.nn.functional.cross_entropy(head(h).float(), ids[b, p : len(s)], reduction="none")
            sums.append(lp.sum())
            if b % 2 == 0:
                tok_logps.append(lp)
                chosen_tokens += lp.numel()
        return torch.stack(sums), torch.cat(tok_logps)

    with torch.no_grad(), model.disable_adapter():
        ref = [logps(pairs[k * batch : (k + 1) * batch])[0] for k in range(steps)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
    times, first = [], None
    for k in range(steps):
        t = time.perf_counter()
        pol, chosen_tok = logps(pairs[k * batch : (k + 1) * batch])
        margin = (pol[0::2] - ref[k][0::2]) - (pol[1::2] - ref[k][1::2])
        loss = -torch.nn.functional.logsigmoid(0.1 * margin).mean() + (-chosen_tok.mean())
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
        first = first if first is not None else loss.item()
    return sum(times[1:]) / max(len(times) - 1, 1), first


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=384)
    args = ap.parse_args()
    set_threads()
    prefs = data.load_english_preferences("ultrafeedback", "train")
    pairs = [to_conversational(r["messages"], r["chosen"], r["rejected"]) for r in prefs.select(range(args.steps * args.batch))]
    rows = {
        "trl stock": trl_steps(args.model, pairs, args.steps, args.batch, args.max_length, "stock"),
        "trl + xlr compact head": trl_steps(args.model, pairs, args.steps, args.batch, args.max_length, "compact"),
        "trl + xlr bf16 head": trl_steps(args.model, pairs, args.steps, args.batch, args.max_length, "bf16"),
        "plain loop": plain_steps(args.model, pairs, args.steps, args.batch, args.max_length),
    }
    print(f"model {args.model} (bf16 base, LoRA r16 fp32), batch {args.batch} pairs, max_length {args.max_length}, {args.steps} steps (first excluded)")
    print(f"{'way':<26}{'s/step':>9}{'pairs/s':>9}{'first-step loss':>17}")
    for name, (sec, loss) in rows.items():
        print(f"{name:<26}{sec:>9.1f}{args.batch / sec:>9.3f}{loss:>17.4f}")
    base = rows["trl stock"][0]
    print(f"speed-up over trl stock: compact head {base / rows['trl + xlr compact head'][0]:.2f}x, bf16 head {base / rows['trl + xlr bf16 head'][0]:.2f}x, "
          f"plain loop {base / rows['plain loop'][0]:.2f}x")
    same = math.isclose(rows["trl stock"][1], rows["trl + xlr compact head"][1], rel_tol=1e-3)
    print(f"first-step losses agree (trl stock vs compact): {same}; plain loop differs by {abs(rows['plain loop'][1] - rows['trl stock'][1]):.4f} "
          "(bf16 logits in the plain loop, fp32 head in trl)")


if __name__ == "__main__":
    main()
