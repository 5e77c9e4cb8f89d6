"""Scale-out check (issue 4): xlr's DPO training (xlr.train.train_dpo) under `accelerate launch` with the shipped
configs in params/accelerate/, on one GPU, against the same training run without accelerate.

What it shows: the code path a multi-GPU user takes (accelerate's DDP / FSDP2 wrapping, its mixed precision, and
saving a model that was wrapped) runs, trains the same thing, and saves weights that load back as the trained
model. What it cannot show: more than one process (the lent machine has one GPU; NCCL refuses two ranks on one
device), so gradient all-reduce across ranks and sharding over several GPUs are not exercised. Model: the tiny
random-weight test model (the real checkpoints are over the 64 MiB that can be carried); numbers mean nothing beyond
agreement between the ways.

Each way writes <out>/<name>/result.json; `--compare` prints the table:

    python3 bench/gpu_accelerate_check.py --name plain --out OUT --finetune full
    accelerate launch --config_file params/accelerate/fsdp.yaml --num_processes 1 bench/gpu_accelerate_check.py --name fsdp --out OUT --finetune full
    python3 bench/gpu_accelerate_check.py --compare --out OUT
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAIRS = [
    ("Name a colour.", "Blue.", "I like turtles and many other animals."),
    ("What is 2+2?", "4", "Five, probably."),
    ("Say hello in German.", "Hallo!", "Bonjour."),
    ("Give a fruit.", "An apple.", "Rock."),
    ("Name a planet.", "Mars.", "A sandwich, with cheese and pickles."),
    ("What colour is the sky?", "Blue.", "Seven."),
    ("Translate 'cat' to French.", "Chat.", "Dog."),
    ("Is ice cold?", "Yes.", "Ice is a kind of fruit that grows on trees."),
]


def train(args: argparse.Namespace) -> None:
    import torch

    from xlr.config import LoraParams, TrainingParams
    from xlr.models import load_model
    from xlr.rewards import score_models
    from xlr.train import DPOLoss, to_conversational, train_dpo

    rank = int(os.environ.get("RANK", "0"))
    out = Path(args.out) / args.name
    pairs = [to_conversational(*p) for p in PAIRS] * 2
    t0 = time.monotonic()
    dpo = TrainingParams(
        beta=0.1,
        learning_rate=1e-3,
        epochs=1,
        batch_size=2,
        grad_accum=1,
        max_length=128,
        finetune=args.finetune,
        lora=LoraParams(r=8, alpha=16),
        warmup_ratio=0.1,
        checkpoint_steps=100,
        save_merged=True,
    )  # the merged model is loaded below
    record = train_dpo("tiny:0", pairs, out, dpo, loss=DPOLoss.sigmoid_nll(1.0), seed=0, dtype=torch.float32, device=args.device)
    wall = time.monotonic() - t0
    if rank != 0:
        return
    history = json.loads((out / "metrics.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h and "train_runtime" not in h]
    # the saved model, loaded back: its implicit reward against the start model on the training pairs
    saved, tok = load_model(str(out / "model"), dtype=torch.float32, device=args.device)
    start, _ = load_model("tiny:0", dtype=torch.float32, device=args.device)
    prompts = [p for p, _, _ in PAIRS] * 2
    responses = [c for _, c, _ in PAIRS] + [r for _, _, r in PAIRS]
    pol, ref = score_models([saved, start], tok, prompts, responses, fp32_head=True)
    n = len(PAIRS)
    margins = [(pol[i] - ref[i]) - (pol[n + i] - ref[n + i]) for i in range(n)]
    changed = sum(int(not torch.equal(a, b)) for a, b in zip(saved.state_dict().values(), start.state_dict().values(), strict=True))
    result = {
        "name": args.name,
        "finetune": args.finetune,
        "distributed_type": record["distributed_type"],
        "num_processes": record["num_processes"],
        "mixed_precision": record["mixed_precision"],
        "steps": len(losses),
        "losses": losses,
        "pairs": record["pairs"],
        "wall_s": round(wall, 1),
        "saved_tensors_changed": changed,
        "saved_tensors": len(saved.state_dict()),
        "train_reward_accuracy": sum(m > 0 for m in margins) / n,
        "train_mean_margin": sum(margins) / n,
        "saved_logps": pol,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("saved_logps",)}))


def compare(args: argparse.Namespace) -> None:
    rows = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(args.out).glob("*/result.json"))}
    print(
        f"{'way':<14} {'finetune':<8} {'type':<10} {'prec':<5} {'steps':>5} {'loss[0]':>8} {'loss[-1]':>9} {'changed':>9} {'acc':>5} "
        f"{'margin':>7} {'max |dlogp| vs plain':>21} {'s':>6}"
    )
    for name, r in rows.items():
        plain = rows.get(f"plain-{r['finetune']}")
        d = max(abs(a - b) for a, b in zip(r["saved_logps"], plain["saved_logps"], strict=True)) if plain else math.nan
        print(
            f"{name:<14} {r['finetune']:<8} {r['distributed_type']:<10} {r['mixed_precision']:<5} {r['steps']:>5} {r['losses'][0]:>8.4f} {r['losses'][-1]:>9.4f} "
            f"{r['saved_tensors_changed']:>4}/{r['saved_tensors']:<4} {r['train_reward_accuracy']:>5.2f} {r['train_mean_margin']:>7.2f} {d:>21.4f} {r['wall_s']:>6.1f}"
        )
        assert all(math.isfinite(x) for x in r["losses"]), name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name")
    ap.add_argument("--finetune", choices=["lora", "full"], default="full")
    ap.add_argument(
        "--device",
        default="cuda",
        help="cpu: try the script here, one process (train_dpo sets use_cpu, so ranks under `accelerate launch --cpu` "
        "would each train alone, not together)",
    )
    ap.add_argument("--compare", action="store_true")
    args = ap.parse_args()
    compare(args) if args.compare else train(args)


if __name__ == "__main__":
    main()
