"""A content-addressed cache of the English anchor pi0 (issue 19).

pi0 is a LoRA DPO of pi_ref on English preference pairs (:func:`xlr.stages.stage_anchor`): up to an hour on CPU, and
the same inputs give the same anchor. So a finished anchor is stored once under a key computed from everything it is
a function of, and a later run (any name, any run root) whose anchor has the same key reuses it instead of training.

The key (:func:`key_inputs`, :func:`key`) is the sha256 of a canonical JSON (sorted keys, no ASCII escaping) of:

- pi_ref's weights, by their recorded sha256 (``xlr_model.json``: registry, tiny and xlr-written models), the source
  GGUF's sha256 where there is one, and the sha256 of its tokenizer files. A model without recorded hashes (a hub id,
  a plain local folder) is not cacheable: :class:`NotCacheable`, which the stage records as its status;
- the whole ``anchor`` params block, the English source's name, ``seed`` and ``reward.batch_tokens`` (the held-out
  pass batches by it);
- the sha256 of the train pairs actually used and of the held-out rows actually scored (contents, not paths, so the
  data root does not matter);
- the precision actually used: training dtype, DPO head, scoring dtype, device type (bf16 and fp32 give other
  weights), and the number of processes (the effective batch is batch_size x grad_accum x processes).

Versions of torch / transformers / trl / peft and xlr's git sha are recorded beside the key (``inputs.json``) but are
not part of it: an upgrade does not throw the cache away (delete entries with ``xlr anchors rm`` if it should).

Layout of the cache root (env ``XLR_ANCHOR_CACHE``; unset: ``$XLR_CACHE/anchors``; ``off`` or ``0``: no cache)::

    <key>/                  one finished anchor
        model/ adapter/     the merged model (pi0) and the LoRA adapter, as train_dpo wrote them
        metrics.json train_record.json reward_accuracy.json reward_accuracy_pairs.jsonl
        inputs.json         {"keyed": what the key hashes, "recorded": versions, pi_ref's spec}
        entry.json          written last: key, built_at, built_by, files {path: sha256}, size, held-out accuracy
    .tmp-<key>-<pid>/       an entry being written (renamed to <key> when complete)
    .corrupt/<key>-<utc>/   entries that failed their check, moved aside (never deleted silently)

An entry is complete only when its ``entry.json`` exists: :func:`store` fills a temporary folder and renames it into
place (two runs storing the same key at once: the first rename wins, the other drops its copy). :func:`lookup`
re-hashes every file listed in ``entry.json``; a missing or changed file, or ``inputs.json`` not hashing to the key,
moves the entry aside and counts as a miss, so the stage trains anew. Files travel by hard link where the filesystem
allows (no copy of the weights), else by copy. A hard-linked file is one file in two places: xlr only ever replaces
files (atomic writes), so neither side changes the other, and an edit in place is caught by the next lookup's check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from xlr.errors import XlrError
from xlr.files import atomic_write_json, read_json, sha256_file
from xlr.models import model_record
from xlr.paths import cache_dir
from xlr.runs import Run, git_sha, package_versions

log = logging.getLogger(__name__)

ENV = "XLR_ANCHOR_CACHE"
OFF_VALUES = ("off", "0")
ENTRY = "entry.json"
INPUTS = "inputs.json"
KEY_CHARS = 20
SCHEMA = 1  # bump when the keyed inputs change meaning: old entries then simply stop matching
# What a finished anchor folder holds that the cache keeps (train_dpo's outputs and the held-out pass's); checkpoints/
# stay in the run. Folders are taken whole; the optional ones are absent for full fine-tuning / several processes.
ANCHOR_FILES = ("model", "adapter", "metrics.json", "train_record.json", "reward_accuracy.json", "reward_accuracy_pairs.jsonl")
REQUIRED = ("model", "metrics.json", "reward_accuracy.json", "reward_accuracy_pairs.jsonl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt")
RECORDED_PACKAGES = ("python", "torch", "transformers", "trl", "peft", "accelerate")


class AnchorCacheError(XlrError, LookupError):
    """A cache key that names no entry (or several), a cache that is off, an entry that cannot be restored."""


class NotCacheable(XlrError, ValueError):
    """The anchor's inputs cannot be keyed (e.g. pi_ref has no recorded weight hashes); the stage trains, uncached."""


# ----------------------------------------------------------------------------------------------------------------
# the root and the key


def cache_root() -> Path | None:
    """The cache root from ``XLR_ANCHOR_CACHE`` (see the module docstring); None when the cache is off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF_VALUES:
        return None
    return Path(value).expanduser() if value else cache_dir() / "anchors"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def key_inputs(
    params: Any, train_pairs: list[dict[str, Any]], eval_rows: list[dict[str, Any]], precision: dict[str, Any]
) -> dict[str, Any]:
    """``{"keyed": what pi0 and its held-out accuracy are a function of, "recorded": versions and names, not keyed}``.
    ``precision``: what the stage resolved (train_dtype, dpo_head, score_dtype, device, processes). Raises
    :class:`NotCacheable` when pi_ref has no recorded weight hashes."""
    spec = params.models.pi_ref
    rec = model_record(spec)
    weights = rec.get("weights_sha256")
    if not weights:
        raise NotCacheable(
            f"pi_ref {spec!r} ({rec['kind']}) has no recorded weight hashes (no xlr_model.json beside its weights), so the anchor "
            "cannot be keyed by them"
        )
    folder = Path(rec["path"])
    keyed = {
        "schema": SCHEMA,
        "pi_ref": {
            "weights_sha256": weights,
            "source_gguf_sha256": rec.get("source_gguf_sha256"),
            "tokenizer_sha256": {f: sha256_file(folder / f) for f in TOKENIZER_FILES if (folder / f).is_file()},
        },
        "anchor": params.anchor.model_dump(mode="json"),
        "english_source": params.data.english_preferences,
        "train_pairs": {"n": len(train_pairs), "sha256": sha256_json(list(train_pairs))},
        "eval_rows": {"n": len(eval_rows), "sha256": sha256_json(list(eval_rows))},
        "seed": params.seed,
        "reward_batch_tokens": params.reward.batch_tokens,
        "precision": dict(precision),
    }
    versions = package_versions()
    recorded = {
        "pi_ref": {"spec": spec, "kind": rec["kind"], "path": rec["path"]},
        "packages": {k: versions.get(k) for k in RECORDED_PACKAGES},
        "xlr_git_sha": git_sha(),
    }
    return {"keyed": keyed, "recorded": recorded}


def key(inputs: dict[str, Any]) -> str:
    """The cache key: the first 20 hex characters of the sha256 of the canonical JSON of ``inputs["keyed"]``."""
    return sha256_json(inputs["keyed"])[:KEY_CHARS]


def describe(entry: dict[str, Any]) -> str:
    """``"<key> built <date> by <run name>"``: how the stage record and ``xlr anchors list`` name an entry."""
    return f"{entry['key']} built {entry.get('built_at', '?')} by {(entry.get('built_by') or {}).get('run', '?')}"


# ----------------------------------------------------------------------------------------------------------------
# lookup, store, restore


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _move_aside(folder: Path, why: str) -> Path:
    """A damaged entry goes to ``<root>/.corrupt/<key>-<utc>`` (kept for inspection, never deleted), with a warning."""
    dest = folder.parent / ".corrupt" / f"{folder.name}-{_stamp()}"
    if dest.exists():
        dest = dest.with_name(f"{dest.name}-{os.getpid()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(dest)
    log.warning("anchor cache: entry %s %s; moved aside to %s, the anchor is rebuilt", folder.name, why, dest)
    return dest


def _safe_rel(rel: str) -> bool:
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and rel not in ("", ".")


def _check(folder: Path, k: str) -> tuple[dict[str, Any] | None, str]:
    """(entry, "") when ``folder`` is a complete entry of key ``k`` whose files all have their recorded sha256, else
    (None, what is wrong)."""
    try:
        entry = read_json(folder / ENTRY)
        stored = read_json(folder / INPUTS)
    except (ValueError, OSError) as e:
        return None, f"has an unreadable {ENTRY} / {INPUTS} ({e})"
    if entry is None:
        return None, f"has no {ENTRY} (incomplete)"
    if entry.get("key") != k or not isinstance(entry.get("files"), dict):
        return None, f"has an {ENTRY} for key {entry.get('key')!r}"
    if not stored or "keyed" not in stored or key(stored) != k:
        return None, f"has an {INPUTS} that does not hash to its key"
    for rel, digest in entry["files"].items():
        path = folder / rel
        if not _safe_rel(rel):
            return None, f"lists a file outside the entry ({rel!r})"
        if not path.is_file():
            return None, f"lacks {rel}"
        got = sha256_file(path)
        if got != digest:
            return None, f"has {rel} with sha256 {got[:12]}..., {ENTRY} records {digest[:12]}... (changed or corrupted)"
    return {**entry, "path": str(folder), "inputs": stored}, ""


def lookup(k: str, inputs: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The complete, verified entry of key ``k`` (``entry.json`` plus ``path`` and its ``inputs``), or None: cache off,
    no entry, or a damaged entry (moved aside with a warning). With ``inputs``, an entry stored for other keyed inputs
    (a hash collision) is refused with a warning."""
    root = cache_root()
    if root is None:
        return None
    folder = root / k
    if not folder.exists():
        return None
    entry, why = _check(folder, k)
    if entry is None:
        try:
            _move_aside(folder, why)
        except OSError as e:  # a read-only shared cache: say so, and build this run's anchor anyway
            log.warning("anchor cache: entry %s %s and could not be moved aside (%s); not reused", folder, why, e)
        return None
    if inputs is not None and entry["inputs"]["keyed"] != inputs["keyed"]:
        log.warning(
            "anchor cache: entry %s was stored for other inputs than this run's (a key collision); not reused. Fix: `xlr anchors rm %s`",
            folder,
            k,
        )
        return None
    return entry


def _place(src: Path, dest: Path) -> bool:
    """Hard-link ``src`` at ``dest`` where the filesystem allows, else copy it; True when linked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
        return True
    except OSError:
        shutil.copy2(src, dest)
        return False


def _anchor_files(anchor_dir: Path) -> list[str]:
    """The relative paths of the anchor folder's files the cache keeps (see :data:`ANCHOR_FILES`)."""
    missing = [name for name in REQUIRED if not (anchor_dir / name).exists()]
    if missing:
        raise AnchorCacheError(
            f"{anchor_dir}: not a finished anchor ({', '.join(missing)} missing), so it is not stored in the anchor cache. "
            "Fix: rerun the anchor stage (a finished anchor is stored by itself)."
        )
    rels = []
    for name in ANCHOR_FILES:
        src = anchor_dir / name
        if src.is_dir():
            rels += [p.relative_to(anchor_dir).as_posix() for p in sorted(src.rglob("*")) if p.is_file()]
        elif src.is_file():
            rels.append(name)
    return rels


def store(k: str, inputs: dict[str, Any], anchor_dir: Path, run: Run, train: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Store the finished anchor folder ``anchor_dir`` of ``run`` as entry ``k``; return the entry (as :func:`lookup`
    does), the one already there if another run stored the key first, or None when the cache is off. ``train``: the
    training counts the stage records (pairs, dropped_prompt_too_long, truncated), kept for a reuse's stage record."""
    root = cache_root()
    if root is None:
        return None
    anchor_dir = Path(anchor_dir)
    final = root / k
    if (final / ENTRY).is_file():
        existing = lookup(k, inputs)
        if existing is not None:
            return existing
    rels = _anchor_files(anchor_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{k}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of this very process id (a crash, then a reused pid)
    try:
        files = {}
        for rel in rels:
            _place(anchor_dir / rel, tmp / rel)
            files[rel] = sha256_file(tmp / rel)
        atomic_write_json(tmp / INPUTS, inputs)
        files[INPUTS] = sha256_file(tmp / INPUTS)
        acc = read_json(anchor_dir / "reward_accuracy.json") or {}
        entry = {
            "key": k,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "built_by": {"run": run.manifest.get("name", run.root.name), "root": str(run.root)},
            "pi_ref": inputs.get("recorded", {}).get("pi_ref", {}).get("spec"),
            "n_train": inputs["keyed"]["anchor"].get("n_train"),
            "reward_accuracy": {k2: acc.get(k2) for k2 in ("accuracy", "ci95", "n", "score_dtype")},
            "train": train or {},
            "files": files,
            "size_bytes": sum((tmp / rel).stat().st_size for rel in files),
        }
        atomic_write_json(tmp / ENTRY, entry)  # last: the entry is complete
        if final.exists() and not (final / ENTRY).is_file():
            _move_aside(final, f"has no {ENTRY} (incomplete)")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / ENTRY).is_file():
                raise
            log.info("anchor cache: %s was stored meanwhile by another run; keeping that one", final)
            shutil.rmtree(tmp, ignore_errors=True)
            return lookup(k, inputs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("anchor cache: stored %s", final)
    return {**entry, "path": str(final), "inputs": inputs}


def restore(entry: dict[str, Any], anchor_dir: Path) -> list[str]:
    """Put the entry's files into the run's anchor folder (hard links where possible, else copies, each copy checked
    against its sha256; a link is the entry's file itself, checked by :func:`lookup`). What the folder held under the
    same names (a partial attempt) is replaced. Returns the relative paths placed."""
    src_root, anchor_dir = Path(entry["path"]), Path(anchor_dir)
    rels = [rel for rel in entry["files"] if rel not in (INPUTS, ENTRY)]
    for top in sorted({rel.split("/", 1)[0] for rel in rels}):
        old = anchor_dir / top
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for rel in rels:
        dest = anchor_dir / rel
        if not _place(src_root / rel, dest) and sha256_file(dest) != entry["files"][rel]:
            raise AnchorCacheError(
                f"{dest}: the copy of cached anchor {entry['key']}'s {rel} does not have its recorded sha256 (disk trouble?). "
                f"Fix: rerun; if it persists, `xlr anchors rm {entry['key']}` (cache root {src_root.parent}) and the anchor is rebuilt."
            )
    return rels


# ----------------------------------------------------------------------------------------------------------------
# the command line's list and rm


def _root_or_error() -> Path:
    root = cache_root()
    if root is None:
        raise AnchorCacheError(f"the anchor cache is off ({ENV}={os.environ.get(ENV)}). Fix: unset {ENV}, or set it to the cache root.")
    return root


def list_entries() -> list[dict[str, Any]]:
    """The entries in the cache root, oldest first, as their ``entry.json`` (plus ``path``; not re-hashed). A folder
    without a readable ``entry.json`` is listed with ``incomplete: True``."""
    root = _root_or_error()
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            entry = read_json(folder / ENTRY)
        except (ValueError, OSError):
            entry = None
        out.append({**entry, "path": str(folder)} if entry else {"key": folder.name, "path": str(folder), "incomplete": True})
    return sorted(out, key=lambda e: (e.get("built_at") or "", e["key"]))


def resolve_key(key_or_prefix: str) -> Path:
    """The entry folder whose key is ``key_or_prefix`` or starts with it (unique); :class:`AnchorCacheError` otherwise."""
    root = _root_or_error()
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    if key_or_prefix in names:
        return root / key_or_prefix
    found = [n for n in names if key_or_prefix and n.startswith(key_or_prefix)]
    if len(found) == 1:
        return root / found[0]
    if not found:
        raise AnchorCacheError(
            f"no cached anchor {key_or_prefix!r} in the anchor cache {root} ({len(names)} entries). Fix: run `xlr anchors list` for the keys."
        )
    raise AnchorCacheError(
        f"{key_or_prefix!r} is the start of {len(found)} cached anchors in {root} ({', '.join(found)}). Fix: give more of the key "
        "(`xlr anchors list` shows them)."
    )


def remove(key_or_prefix: str) -> Path:
    """Delete the entry named by its key or a unique prefix (renamed away first, so no reader sees half of it); return
    the folder it was. Runs that reused it keep their own links or copies."""
    folder = resolve_key(key_or_prefix)
    doomed = folder.with_name(f".rm-{folder.name}-{os.getpid()}")
    folder.rename(doomed)
    shutil.rmtree(doomed)
    return folder
