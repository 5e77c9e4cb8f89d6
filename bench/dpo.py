"""DPO training: seconds per step, tokens/s and peak memory of the ways xlr can train, side by side.

Every variant runs in its own fresh process (so its peak RSS is its own), on the same model and the same English
UltraFeedback train pairs, with the loss xlr trains with (DPO sigmoid, beta 0.1, + NLL on chosen, weight 1.0: trl's
loss_type=["sigmoid", "sft"]), 4 pairs per optimizer step, max_length 512 (the anchor setting). Tables (``--table``):

- heads: trl 1.16 as shipped (its fused LM head scores every position on CPU, in fp32 tiles) / trl inside
  xlr.train.compact_fused_head (labelled positions only) / trl with xlr's tiled bf16 head (`head: bf16`) / a plain
  PyTorch loop (its first-step loss checked against trl's);
- batching: the bf16 head at 4 pairs x 1, 2 x 2 and 1 x 4 micro-batches (gradient accumulation);
- reference: reference log-probs precomputed once (xlr's default) vs recomputed every step (peft's disabled adapter);
- finetune: LoRA r16 vs full fine-tuning (a second model copy as the reference).

Seconds per step exclude the first step; tokens/s uses trl's own ``num_tokens`` count (prompt + both responses,
no padding). First-step losses must agree within a table where the computation is the same.

    .venv/bin/python bench/dpo.py [--table all|heads|batching|reference|finetune] [--steps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time

MODEL = "qwen2.5-coder-0.5b-instruct"
MAX_LENGTH = 512
PAIRS_PER_STEP = 4

TABLES = {
    "heads": [
        {"name": "trl stock (fp32 head, every position)", "head": "stock", "micro": 1},
        {"name": "trl + xlr compact head", "head": "compact", "micro": 1},
        {"name": "trl + xlr tiled bf16 head", "head": "bf16", "micro": 1},
        {"name": "plain PyTorch loop (bf16 head)", "head": "plain", "micro": 1},
    ],
    "batching": [
        {"name": "bf16 head, 4 pairs x 1", "head": "bf16", "micro": 4},
        {"name": "bf16 head, 2 pairs x 2", "head": "bf16", "micro": 2},
        {"name": "bf16 head, 1 pair x 4", "head": "bf16", "micro": 1},
    ],
    "reference": [
        {"name": "reference log-probs precomputed", "head": "bf16", "micro": 1, "precompute": True},
        {"name": "reference recomputed each step", "head": "bf16", "micro": 1, "precompute": False},
    ],
    "finetune": [
        {"name": "LoRA r16 (all linear layers)", "head": "bf16", "micro": 1},
        # pure-bf16 weights, as xlr trained before issue 16; xlr's full fine-tuning now keeps fp32 master weights under bf16
        # autocast (xlr.train.training_precision; measured side by side in bench/master_weights.py)
        {"name": "full fine-tuning (bf16 weights)", "head": "bf16", "micro": 1, "finetune": "full"},
    ],
}


def _pairs(n: int) -> list[dict]:
    from xlr import data
    from xlr.train import to_conversational

    prefs = data.load_english_preferences("ultrafeedback", "train")
    return [to_conversational(r["messages"], r["chosen"], r["rejected"]) for r in prefs.select(range(n))]


def trl_variant(v: dict, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from xlr.config import LoraParams
    from xlr.models import load_model
    from xlr.train import bf16_cpu_head, compact_fused_head, lora_config

    pairs = _pairs(steps * PAIRS_PER_STEP)
    model, tok = load_model(MODEL, dtype=torch.bfloat16)
    full = v.get("finetune") == "full"
    ref_model = load_model(MODEL, dtype=torch.bfloat16)[0] if full else None
    before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    patch = {"stock": contextlib.nullcontext(), "compact": compact_fused_head(), "bf16": bf16_cpu_head()}[v["head"]]
    with tempfile.TemporaryDirectory() as d, patch:
        args = DPOConfig(
            output_dir=d,
            beta=0.1,
            loss_type=["sigmoid", "sft"],
            loss_weights=[1.0, 1.0],
            learning_rate=5e-5,
            max_steps=steps,
            per_device_train_batch_size=v["micro"],
            gradient_accumulation_steps=PAIRS_PER_STEP // v["micro"],
            max_length=MAX_LENGTH,
            precompute_ref_log_probs=v.get("precompute", True),
            precompute_ref_batch_size=4,
            bf16=False,
            use_cpu=True,
            gradient_checkpointing=False,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=0,
            disable_tqdm=True,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=Dataset.from_list(pairs),
            processing_class=tok,
            peft_config=None if full else lora_config(LoraParams(r=16, alpha=32, dropout=0.0)),
            callbacks=[Clock()],
        )
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    trained = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    after = trained.model.layers[0].mlp.down_proj.weight.detach()
    out = {
        "s_per_step": sum(times[1:]) / max(len(times) - 1, 1),
        "first_loss": logs[0]["loss"],
        "tokens_per_s": (logs[-1]["num_tokens"] - logs[0]["num_tokens"]) / max(sum(times[1:]), 1e-9),
    }
    if full:  # pure-bf16 weights: how many of one matrix's entries did 'steps' AdamW updates at lr 5e-5 actually move?
        out["changed"] = float((after != before).float().mean())
    return out


def plain_variant(v: dict, steps: int) -> dict:
    """The same loss by hand (peft LoRA, AdamW), reference log-probs from the disabled adapter, precomputed; micro-
    batches of v['micro'] pairs accumulated to 4 per step, trl's way (DPO loss mean over pairs, NLL token mean per
    micro-batch, both divided by the number of micro-batches)."""
    import torch
    from peft import get_peft_model

    from xlr.chat import chat_ids
    from xlr.config import LoraParams
    from xlr.models import load_model
    from xlr.train import lora_config

    pairs = _pairs(steps * PAIRS_PER_STEP)
    model, tok = load_model(MODEL, dtype=torch.bfloat16)
    model = get_peft_model(model, lora_config(LoraParams(r=16, alpha=32, dropout=0.0)))
    model.train()

    def encode(p):
        prompt = chat_ids(tok, p["prompt"], add_generation_prompt=True)
        return [(chat_ids(tok, p["prompt"] + p[key])[:MAX_LENGTH], len(prompt)) for key in ("chosen", "rejected")]

    def logps(batch_pairs):
        seqs = [s for p in batch_pairs for s in encode(p)]  # chosen, rejected, chosen, rejected, ...
        width = max(len(s) for s, _ in seqs)
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s, _ in seqs])
        attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in seqs])
        hidden = model.get_base_model().model(input_ids=ids, attention_mask=attn).last_hidden_state
        head = model.get_base_model().lm_head
        sums, chosen = [], []
        for b, (s, p) in enumerate(seqs):
            lp = -torch.nn.functional.cross_entropy(head(hidden[b, p - 1 : len(s) - 1]).float(), ids[b, p : len(s)], reduction="none")
            sums.append(lp.sum())
            if b % 2 == 0:
                chosen.append(lp)
        return (
            torch.stack(sums),
            torch.cat(chosen),
            sum(len(s) for s, _ in seqs),
        )  # tokens as trl counts them: both sequences, prompt included

    micro = [pairs[k : k + v["micro"]] for k in range(0, len(pairs), v["micro"])]
    with torch.no_grad(), model.disable_adapter():
        ref = [logps(m)[0] for m in micro]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
    per_step = PAIRS_PER_STEP // v["micro"]
    times, tokens, first = [], [], None
    for k in range(steps):
        t, total, n_tok = time.perf_counter(), 0.0, 0
        for j in range(k * per_step, (k + 1) * per_step):
            pol, chosen_tok, n = logps(micro[j])
            margin = (pol[0::2] - ref[j][0::2]) - (pol[1::2] - ref[j][1::2])
            loss = (-torch.nn.functional.logsigmoid(0.1 * margin).mean() - chosen_tok.mean()) / per_step
            loss.backward()
            total, n_tok = total + loss.item(), n_tok + n
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
        tokens.append(n_tok)
        first = first if first is not None else total
    return {
        "s_per_step": sum(times[1:]) / max(len(times) - 1, 1),
        "first_loss": first,
        "tokens_per_s": sum(tokens[1:]) / max(sum(times[1:]), 1e-9),
    }


def run_one(v: dict, steps: int) -> dict:
    """Run one variant in a fresh interpreter; returns its numbers and its own peak RSS."""
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(v), "--steps", str(steps)], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"variant {v['name']!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default="all", choices=["all", *TABLES])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from xlr.runtime import set_threads

    set_threads()
    if args.one:
        v = json.loads(args.one)
        out = plain_variant(v, args.steps) if v["head"] == "plain" else trl_variant(v, args.steps)
        out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print("RESULT " + json.dumps(out))
        return
    print(
        f"model {MODEL} (bf16 weights; LoRA r16 adapters in fp32 unless full), {PAIRS_PER_STEP} pairs per step, max_length {MAX_LENGTH}, "
        f"{args.steps} steps (first excluded from times), 2 threads"
    )
    for table in TABLES if args.table == "all" else [args.table]:
        rows = [(v, run_one(v, args.steps)) for v in TABLES[table]]
        base = rows[0][1]["s_per_step"]
        print(
            f"\n[{table}]\n| way | s/step | pairs/s | tokens/s | peak RSS GiB | first-step loss | speed vs first row |\n|---|---|---|---|---|---|---|"
        )
        for v, r in rows:
            extra = f" ({r['changed']:.1%} of a weight matrix's bf16 entries changed)" if "changed" in r else ""
            print(
                f"| {v['name']}{extra} | {r['s_per_step']:.1f} | {PAIRS_PER_STEP / r['s_per_step']:.3f} | {r['tokens_per_s']:.0f} | {r['peak_rss_gib']:.2f} | "
                f"{r['first_loss']:.4f} | {base / r['s_per_step']:.2f}x |"
            )
        losses = [r["first_loss"] for v, r in rows if v["head"] != "plain"]
        print(
            f"first-step losses of the trl rows: spread {max(losses) - min(losses):.4f}"
            + (" (micro-batches change the NLL term: token mean per micro-batch, averaged)" if table == "batching" else "")
        )
        for v, r in rows:
            if v["head"] == "plain":
                print(
                    f"plain loop's first-step loss differs from trl's by {abs(r['first_loss'] - rows[0][1]['first_loss']):.4f}: it truncates prompts "
                    "that trl drops and counts tokens its own way, so its row is indicative only"
                )


if __name__ == "__main__":
    main()
