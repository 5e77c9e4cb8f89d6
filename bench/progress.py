"""Progress that moves (issue 19): how often each long stage's bar advances on this machine, with a real model.

Every stage runs through xlr's own code path, with its bar as the study draws it; ``tqdm.auto.tqdm`` (and
accelerate's wrapper of it, which trl's reference pass uses) is swapped for a subclass that records the wall-clock
time of the bar's creation and of every update. Per bar it reports: updates, the largest gap between two consecutive
moves (the creation counts as the first: a bar that sits at 0 is what users see), the median gap, the final count
against the total, and whether the largest gap is within ``--max-gap`` seconds (the issue's requirement: 30 s on the
slowest CPU we run on, 2 threads, fp32).

Stages (``--stages``, default all, in this order):
  - ``sampling``: sample_language on ``--prompts`` German training prompts x ``--samples`` samples x ``--max-new-tokens``
    tokens, ``--batch-size`` rows (the study's sampling stage; bar in token budget, moves at every decoding step);
  - ``rewards``: annotate those samples with R_c (the rewards stage; pi0 and pi_ref are the same weights here, so the
    cost is that of two models, one copy in memory);
  - ``accuracy``: reward_accuracy on the first ``--pairs`` usable UltraFeedback held-out pairs (the anchor's check);
  - ``probe``: xlr.probe.run_probe with params/cpu.yaml's probe (variants R_c, R_m) on ``--probe-items`` instructions
    per language (pi0 = pi_ref = ``--model``: the cost of the study's probe, not its numbers);
  - ``judging``: judge_pairs with the local ``--judge-model`` (``--protocol``, cpu.yaml's pointwise_score by default)
    on ``--judgments`` X-AlpacaEval items: the GPT-4-turbo reference (cut to ``--max-chars``) against a shortened copy;
  - ``dpo``: train_dpo (LoRA, as params/cpu.yaml's anchor: micro-batch 1, grad_accum 4, max_length 512) on the first
    ``--dpo-pairs`` UltraFeedback train pairs: trl's reference pass, then xlr's micro-batch bar.

    .venv/bin/python bench/progress.py [--model qwen2.5-coder-0.5b-instruct] [--judge-model qwen2.5-coder-1.5b-instruct]
        [--threads 2] [--dtype fp32] [--stages sampling,rewards,accuracy,judging,dpo] [--json bench/progress.json]
    .venv/bin/python bench/progress.py --model tiny:0 --judge-model tiny:0   # the plumbing end to end, in seconds

Run it alone on the machine (it measures wall time). Prints one markdown table (stage, bar, total, updates, max and
median gap, ok) and, with ``--json PATH``, writes the same rows with every update's time and the machine's details.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.std import tqdm as std_tqdm

from xlr import data
from xlr.config import AnchorParams, JudgeParams, LoraParams, RewardParams, SamplingParams
from xlr.models import load_model
from xlr.runtime import cpu_name, set_threads

STAGES = ("sampling", "rewards", "accuracy", "probe", "judging", "dpo")
STAGE = {"name": "setup"}  # the stage now running: each bar is filed under it
BARS: list[dict] = []


class RecordingBar(std_tqdm):
    """A tqdm bar that records when it was made and when it moved; it still draws (to stderr, as the study does)."""

    def __init__(self, *args, **kwargs):
        self.record = {"stage": STAGE["name"], "desc": kwargs.get("desc") or "", "times": [time.monotonic()], "ns": [0]}
        super().__init__(*args, **kwargs)
        self.record["desc"] = self.desc
        self.record["times"][0] = time.monotonic()
        self.record["ns"][0] = self.n
        BARS.append(self.record)

    def update(self, n=1):
        out = super().update(n)
        if not getattr(self, "_iterating", False):
            self._mark(self.n)
        return out

    def __iter__(self):  # a bar over an iterable (trl's reference pass, loading bars): a move per item
        self._iterating = True
        try:
            for i, obj in enumerate(super().__iter__(), 1):
                yield obj
                self._mark(i)  # the consumer asks for the next item: the previous one is done
        finally:
            self._iterating = False

    def _mark(self, n):
        self.record["times"].append(time.monotonic())
        self.record["ns"].append(n)
        self.record["total"] = self.total

    def close(self):
        self.record["total"], self.record["n"], self.record["closed"] = self.total, self.n, time.monotonic()
        super().close()


def install() -> None:
    import tqdm.auto

    tqdm.auto.tqdm = RecordingBar
    try:
        import accelerate.utils.tqdm as acc

        acc._tqdm = RecordingBar  # trl's reference log-prob pass draws through accelerate's wrapper
    except ImportError:
        pass


def summarize(rec: dict, max_gap: float) -> dict:
    times = rec["times"]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {
        "stage": rec["stage"],
        "bar": rec["desc"],
        "total": rec.get("total"),
        "n": rec.get("n", rec["ns"][-1]),
        "updates": len(times) - 1,
        "wall_s": round(rec.get("closed", times[-1]) - times[0], 2),
        "max_gap_s": round(max(gaps), 2) if gaps else None,
        "median_gap_s": round(statistics.median(gaps), 3) if gaps else None,
        "ok": bool(gaps) and max(gaps) <= max_gap,
    }


# ------------------------------------------------------------------------------------------------------------------
# the stages


def stage_sampling(args, model, tok, work: Path) -> list[dict]:
    from xlr.sampling import GenConfig, HFBackend, load_samples, sample_language

    rows = list(data.load_train_prompts([args.lang], args.prompts))
    cfg = GenConfig(n=args.samples, temperature=0.9, top_p=1.0, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    out = work / "samples"
    sample_language(HFBackend(model, tok), rows, args.lang, out, cfg, seed=0, shard_size=SamplingParams().shard_size)
    english = {r["instruction_id"]: r["instruction_en"] for r in rows}
    return [{**s, "_en": english[s["id"]]} for s in load_samples(out)]


def stage_rewards(args, model, tok, samples: list[dict]) -> None:
    from xlr.rewards import annotate

    if not samples:
        print("rewards: no samples (run the sampling stage first); skipped", file=sys.stderr)
        return
    english = {s["id"]: s["_en"] for s in samples}
    reward = RewardParams(variant="R_c", batch_tokens=args.batch_tokens)
    annotate(samples, english, model, model, tok, reward, None, fp32_head=args.dtype == "fp32")


def stage_accuracy(args, model, tok) -> None:
    from xlr.rewards import reward_accuracy

    held = data.load_english_preferences("ultrafeedback", "eval")
    rows = [r for r in held if not r["tie"]][: args.pairs]
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "score_margin": r["score_margin"]} for r in rows]
    reward_accuracy(model, model, tok, pairs, n_boot=100, seed=0, batch_tokens=args.batch_tokens, fp32_head=args.dtype == "fp32")


def stage_probe(args, work: Path) -> None:
    from xlr.config import load_params
    from xlr.probe import run_probe

    repo = Path(__file__).resolve().parents[1]
    over = {"models": {"pi_ref": args.model}, "probe": {"n_items": args.probe_items, "variants": ["R_c", "R_m"]}}
    over["reward"] = {"dtype": "fp32" if args.dtype == "fp32" else "bf16-fp32head"}
    params = load_params(repo / "params/cpu.yaml", over)
    run_probe(params, args.model, args.model, work / "probe", dtype=None, device="cpu")


def stage_judging(args, dtype, work: Path) -> None:
    from xlr import judge as J

    model, tok = load_model(args.judge_model, dtype=dtype)
    judge = J.LocalJudge(model, tok, args.judge_model)  # make_judge's settings (batch_tokens 2048, grouped prefix cache)
    rows = list(data.load_xalpacaeval("en", data.xalpacaeval_ids(args.judgments, 0)))
    items = []
    for r in rows:
        ref = r["reference_output"][: args.max_chars]
        items.append({"key": str(r["id"]), "instruction": r["instruction"], "output": ref[: max(1, len(ref) // 3)], "baseline_output": ref})
    jp = JudgeParams(protocol=args.protocol)
    J.judge_pairs(judge, items, J.JudgeCache(work / "judge-cache.jsonl"), jp, J.protocol_template(True), desc="judging")
    del model, judge


def stage_dpo(args, dtype, work: Path) -> None:
    from xlr.train import DPOLoss, to_conversational, train_dpo

    train = data.load_english_preferences("ultrafeedback", "train")
    pairs = [to_conversational(r["messages"], r["chosen"], r["rejected"]) for r in train.select(range(args.dpo_pairs))]
    anchor = AnchorParams(
        beta=0.1,
        learning_rate=5e-5,
        epochs=1,
        batch_size=1,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        finetune="lora",
        lora=LoraParams(r=16, alpha=32, dropout=0.05, target_modules="all-linear"),
        head=args.dpo_head,
        warmup_ratio=0.0,
    )
    train_dpo(args.model, pairs, work / "dpo", anchor, loss=DPOLoss.sigmoid(), seed=0, dtype=dtype, device="cpu")


# ------------------------------------------------------------------------------------------------------------------


def table(rows: list[dict], max_gap: float) -> str:
    head = ["stage", "bar", "n / total", "updates", "wall [s]", "max gap [s]", "median gap [s]", f"max gap <= {max_gap:g} s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        total = "?" if r["total"] is None else f"{r['total']:g}"
        lines.append(
            f"| {r['stage']} | {r['bar']} | {r['n']:g} / {total} | {r['updates']} | {r['wall_s']:.1f} | "
            f"{'-' if r['max_gap_s'] is None else r['max_gap_s']} | {'-' if r['median_gap_s'] is None else r['median_gap_s']} | "
            f"{'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="pi_ref / pi0 / the sampled policy (xlr model spec)")
    ap.add_argument("--judge-model", default="qwen2.5-coder-1.5b-instruct", help="the local judge (params/cpu.yaml's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    ap.add_argument("--lang", default="de", help="sampling language")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt (params/cpu.yaml: 4)")
    ap.add_argument("--max-new-tokens", type=int, default=160, help="params/cpu.yaml: 160")
    ap.add_argument("--batch-size", type=int, default=64, help="rows of the continuous loop (params/cpu.yaml: 64)")
    ap.add_argument("--batch-tokens", type=int, default=RewardParams().batch_tokens, help="reward.batch_tokens")
    ap.add_argument("--pairs", type=int, default=8, help="held-out pairs of the accuracy pass")
    ap.add_argument("--judgments", type=int, default=4, help="X-AlpacaEval items judged")
    ap.add_argument("--probe-items", type=int, default=4, help="probe instructions per language")
    ap.add_argument("--protocol", default="pointwise_score", help="judge.protocol (params/cpu.yaml: pointwise_score)")
    ap.add_argument("--max-chars", type=int, default=1000, help="outputs cut to this many characters (judge.validation_max_chars)")
    ap.add_argument("--dpo-pairs", type=int, default=8, help="DPO pairs (8 with grad_accum 4: 2 optimizer steps)")
    ap.add_argument("--grad-accum", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--dpo-head", default="bf16", choices=["bf16", "trl-compact"], help="anchor.head (bf16 on an fp32 model: fp32 tiles)")
    ap.add_argument("--max-gap", type=float, default=30.0, help="seconds: the requirement")
    ap.add_argument("--json", type=Path, help="also write the rows (with every update's time) here")
    args = ap.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if unknown := sorted(set(stages) - set(STAGES)):
        ap.error(f"--stages: unknown {unknown}; use {', '.join(STAGES)}")
    threads = set_threads(args.threads)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    install()
    meta = {"cpu": cpu_name(), "threads": threads, "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()}}
    print(f"{meta['cpu']}, {threads} threads, {args.model} ({args.dtype}), stages: {', '.join(stages)}", file=sys.stderr)
    walls = {}
    with tempfile.TemporaryDirectory(prefix="xlr-bench-progress-") as d:
        work = Path(d)
        model, tok = load_model(args.model, dtype=dtype) if {"sampling", "rewards", "accuracy"} & set(stages) else (None, None)
        samples: list[dict] = []
        for name in STAGES:
            if name not in stages:
                continue
            STAGE["name"] = name
            t0 = time.monotonic()
            if name == "sampling":
                samples = stage_sampling(args, model, tok, work)
            elif name == "rewards":
                stage_rewards(args, model, tok, samples)
            elif name == "accuracy":
                stage_accuracy(args, model, tok)
            elif name == "probe":
                stage_probe(args, work)
            elif name == "judging":
                stage_judging(args, dtype, work)
            elif name == "dpo":
                model = tok = None  # the trainer loads its own copy
                stage_dpo(args, dtype, work)
            walls[name] = round(time.monotonic() - t0, 1)
    rows = [summarize(r, args.max_gap) for r in BARS]
    print(table(rows, args.max_gap))
    print("\nstage wall times [s]: " + ", ".join(f"{k} {v}" for k, v in walls.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        detail = [
            {**row, "times": [round(t - r["times"][0], 3) for t in r["times"]], "ns": r["ns"]} for row, r in zip(rows, BARS, strict=True)
        ]
        args.json.write_text(json.dumps({"meta": meta, "stage_wall_s": walls, "bars": detail}, indent=1))
        print(f"wrote {args.json}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
