"""Run directories and the run manifest (file helpers: :mod:`xlr.files`).

Layout of one run (``runs/<name>/``)::

    manifest.json          params hash + full params, git SHA, package versions, stage status, artifact hashes
    params.yaml            the validated params, defaults filled in
    <stage>/...            one folder per stage (``iter1/sampling/`` etc. for per-iteration stages)
    notebooks/             executed notebooks (papermill)

Every file is written to a temporary name in the same folder, flushed, fsynced and renamed, so a crash
leaves either the old file or the new one, never half of one. A stage counts as done only when its status
is ``done`` and every artifact it recorded still has the recorded sha256.

Under several processes (``accelerate launch``, :mod:`xlr.distributed`) only the main process writes the run
directory: :class:`Run`'s writing methods are no-ops on the other ranks, which read the manifest after
:meth:`Run.sync`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xlr import distributed
from xlr.errors import XlrError
from xlr.files import atomic_write_json, atomic_write_text, sha256_file

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "gguf",
    "numpy",
    "pandas",
    "pydantic",
    "papermill",
    "nbconvert",
    "matplotlib",
    "seaborn",
)


class RunMismatch(XlrError, RuntimeError):
    """The run directory was created from different params."""


def git_sha(root: Path | None = None) -> str | None:
    from xlr.paths import REPO_ROOT

    root = root or REPO_ROOT
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (each notebook runs in its own kernel, so under
    ``xlr run`` this is the peak of the notebook's stages up to this one)."""
    import resource
    import sys

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Run:
    """A run directory and its manifest. Create with :meth:`open`.

    Several processes: every method that writes (``open``'s creation, ``save``, ``start_stage``, ``finish_stage``,
    ``fail_stage``, ``move_aside_corrupt``) writes on the main process only and is a no-op on
    the others, so none of them may contain a collective (the main process may call them alone). The other ranks
    learn what the main process wrote by :meth:`sync`, which EVERY rank must call at the same points: after
    :meth:`open` and after each stage."""

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self.manifest = manifest

    # -- creation -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, params: Any, root: Path | None = None, force: bool = False) -> Run:
        """Open (or create) ``runs/<params.name>``. A directory made from other params is refused unless
        ``force``, which moves it aside to ``<name>.replaced-<timestamp>`` (nothing is deleted)."""
        import yaml

        from xlr.paths import runs_dir

        root = Path(root) if root else runs_dir() / params.name
        phash = params.params_hash()
        mpath = root / MANIFEST

        def fresh() -> dict[str, Any]:
            return {
                "name": params.name,
                "params_hash": phash,
                "created": _now(),
                "git_sha": git_sha(),
                "packages": package_versions(),
                "params": params.model_dump(mode="json"),
                "runtime": {},
                "models": {},
                "stages": {},
            }

        if not distributed.is_main():  # the main process checks, creates or moves aside; this rank reads its manifest at sync()
            return cls(root, json.loads(mpath.read_text()) if mpath.is_file() else fresh())
        if mpath.is_file():
            manifest = json.loads(mpath.read_text())
            # Recompute from the stored params under the current schema, so a field added later (with its default)
            # does not orphan existing runs; stored params the schema no longer accepts count as a mismatch.
            try:
                stored = type(params).model_validate(manifest["params"]).compat_hash()
            except Exception:  # noqa: BLE001
                stored = None
            if stored != params.compat_hash():
                if not force:
                    raise RunMismatch(
                        f"{root}: this run directory was made from other params (params_hash "
                        f"{manifest.get('params_hash', '?')[:12]}, yours {phash[:12]}; only `iterations` and "
                        "`description` may change within a run). Fix: give the experiment another `name`, or pass "
                        "--force to move the old run aside and start anew."
                    )
                aside = root.with_name(f"{root.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                root.rename(aside)
                return cls.open(params, root, force=False)
            run = cls(root, manifest)
            run.manifest["reopened"] = [*manifest.get("reopened", []), _now()]
            if manifest["params_hash"] != phash:  # only iterations/description changed: extend the run, keep a trail
                run.manifest["params_history"] = [
                    *manifest.get("params_history", []),
                    {"params_hash": manifest["params_hash"], "iterations": manifest["params"]["iterations"], "until": _now()},
                ]
                run.manifest.update(params_hash=phash, params=params.model_dump(mode="json"))
                atomic_write_text(root / "params.yaml", yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
            run.save()
            return run
        root.mkdir(parents=True, exist_ok=True)
        manifest = fresh()
        atomic_write_text(root / "params.yaml", yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
        run = cls(root, manifest)
        run.save()
        return run

    def save(self) -> None:
        """Write the manifest (main process only)."""
        if distributed.is_main():
            atomic_write_json(self.root / MANIFEST, self.manifest)

    def sync(self) -> None:
        """Collective, on EVERY rank: wait until all ranks got here, then the other ranks reload the manifest the main
        process wrote. A no-op for one process."""
        distributed.barrier()
        if not distributed.is_main():
            self.manifest = json.loads((self.root / MANIFEST).read_text())

    # -- stages ---------------------------------------------------------------------------------------------
    @staticmethod
    def stage_key(stage: str, iteration: int | None = None) -> str:
        return f"iter{iteration}/{stage}" if iteration is not None else stage

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def stage_dir(self, stage: str, iteration: int | None = None) -> Path:
        """The stage's folder (a path: nothing is created; :meth:`start_stage` creates it)."""
        return self.layout.stage(stage, iteration)

    def start_stage(self, stage: str, iteration: int | None = None) -> None:
        """Create the stage's folder (every rank: idempotent) and record the stage as running (main process)."""
        self.stage_dir(stage, iteration).mkdir(parents=True, exist_ok=True)
        if not distributed.is_main():
            return
        key = self.stage_key(stage, iteration)
        prev = self.manifest["stages"].get(key, {})
        self.manifest["stages"][key] = {**prev, "status": "running", "started": _now(), "attempts": prev.get("attempts", 0) + 1}
        self._t0 = time.monotonic()
        self.save()

    def finish_stage(
        self,
        stage: str,
        iteration: int | None = None,
        artifacts: Iterable[str | os.PathLike] = (),
        counts: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        from xlr import faults

        faults.point("finish")  # artifacts written, not yet recorded: a kill here must redo the stage
        if not distributed.is_main():
            return
        key = self.stage_key(stage, iteration)
        entry = self.manifest["stages"].setdefault(key, {})
        entry.update(
            status="done",
            finished=_now(),
            wall_s=round(time.monotonic() - getattr(self, "_t0", time.monotonic()), 2),
            artifacts={str(Path(a).resolve().relative_to(self.root.resolve())): sha256_file(a) for a in artifacts},
            counts=counts or {},
            peak_rss_mib=peak_rss_mib(),
            **extra,
        )
        self.save()

    def fail_stage(self, stage: str, error: str, iteration: int | None = None) -> None:
        if not distributed.is_main():
            return
        key = self.stage_key(stage, iteration)
        self.manifest["stages"].setdefault(key, {}).update(status="failed", error=error, finished=_now())
        self.save()

    def move_aside_corrupt(self, stage: str, iteration: int | None = None) -> list[str]:
        """Artifacts a stage recorded earlier that no longer match their sha256 (truncated, edited) are moved to
        ``corrupt/<timestamp>/<path>`` (kept, not deleted) so the rerun redoes them instead of resuming from them.
        They are listed in the manifest under the stage's ``corrupt_moved_aside``. Main process only ([] elsewhere)."""
        if not distributed.is_main():
            return []
        key = self.stage_key(stage, iteration)
        entry = self.manifest["stages"].get(key, {})
        moved = []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for rel, digest in entry.get("artifacts", {}).items():
            path = self.root / rel
            if path.is_file() and sha256_file(path) != digest:
                dest = self.root / "corrupt" / stamp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                path.rename(dest)
                moved.append(rel)
        if moved:
            entry["corrupt_moved_aside"] = [*entry.get("corrupt_moved_aside", []), *moved]
            self.save()
        return moved

    def stage_done(self, stage: str, iteration: int | None = None) -> bool:
        """Done, and every recorded artifact still exists with its recorded hash."""
        entry = self.manifest["stages"].get(self.stage_key(stage, iteration))
        if not entry or entry.get("status") != "done":
            return False
        for rel, digest in entry.get("artifacts", {}).items():
            path = self.root / rel
            if not path.is_file() or sha256_file(path) != digest:
                return False
        return True


class Layout:
    """Where each artifact of a run lives (``runs/<name>/``): paths only, nothing is created or read. The stages
    write through these paths and the report, plots and readers find the artifacts through them."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def stage(self, stage: str, iteration: int | None = None) -> Path:
        return self.root / Run.stage_key(stage, iteration)

    # data, models, anchor
    @property
    def data_summary(self) -> Path:
        return self.stage("data") / "summary.json"

    @property
    def greedy_check(self) -> Path:
        return self.stage("models") / "greedy_check.json"

    @property
    def reward_accuracy(self) -> Path:
        return self.stage("anchor") / "reward_accuracy.json"

    @property
    def reward_accuracy_pairs(self) -> Path:
        return self.stage("anchor") / "reward_accuracy_pairs.jsonl"

    def policy(self, t: int, merged: bool = True) -> Path:
        """pi^t's folder: the anchor's model for t = 0 (pi0 built here), else iteration t's model (or adapter)."""
        if t == 0:
            return self.stage("anchor") / "model"
        return self.stage("training", t) / ("model" if merged else "adapter")

    def training_metrics(self, t: int) -> Path:
        """trl's logged history of the anchor's DPO (t = 0) or of iteration t's."""
        return (self.stage("anchor") if t == 0 else self.stage("training", t)) / "metrics.json"

    # per iteration
    def samples(self, t: int, lang: str) -> Path:
        return self.stage("sampling", t) / lang

    def rewards(self, t: int) -> Path:
        return self.stage("rewards", t) / "rewards.jsonl"

    def pairs(self, t: int) -> Path:
        return self.stage("pairs", t) / "pairs.jsonl"

    def pairs_stats(self, t: int) -> Path:
        return self.stage("pairs", t) / "pairs_stats.json"

    # evaluation
    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def eval_dir(self, model: str, lang: str) -> Path:
        """One model's X-AlpacaEval answers (outputs.json), judgments and metrics in one language."""
        return self.eval / model / lang

    def lcb_dir(self, model: str, task: str, lang: str) -> Path:
        """One model's Language Confusion Benchmark answers (task: monolingual / crosslingual) in one language."""
        return self.eval / model / f"lcb-{task}" / lang

    @property
    def eval_summary(self) -> Path:
        return self.eval / "summary.json"

    @property
    def fidelity(self) -> Path:
        return self.eval / "fidelity.json"

    @property
    def fidelity_items(self) -> Path:
        return self.eval / "fidelity_items.jsonl"

    @property
    def judge_agreement(self) -> Path:
        """The judge on held-out English preference labels (summary; the judgments: :attr:`judge_agreement_items`)."""
        return self.eval / "judge_validation.json"

    @property
    def judge_agreement_items(self) -> Path:
        return self.eval / "judge_validation.jsonl"

    @property
    def judge_validation_dir(self) -> Path:
        """The judge against GPT-4-turbo's AlpacaEval 2 verdicts (xlr.judge_validation's folder)."""
        return self.eval / "judge_validation_alpacaeval"

    @property
    def judge_validation(self) -> Path:
        return self.judge_validation_dir / "judge_validation.json"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"
