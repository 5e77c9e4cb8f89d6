"""Data loaders. Every loader returns a ``datasets.Dataset``; raw files are never modified.

Expected layout under the data root (see ``../shared/data/README.md``)::

    ultrafeedback-prompts/{lang}.jsonl                         {"instruction", "instruction_id"}
    x-alpacaeval/prompts/{lang}.json                           [{"id", "dataset", "instruction"}]
    x-alpacaeval/references/<generator>/{lang}.json            AlpacaEval format (en.json has no "id")
    english-preferences/ultrafeedback/{train,eval}.jsonl       {"prompt", "chosen", "rejected", ...}
    english-preferences/hh-rlhf/{helpful,harmless}-base_test.jsonl.gz   {"chosen", "rejected"} dialogues
    SHA256SUMS                                                 checked for every file loaded from the root

Files (or the root) may be links, e.g. to a shared copy: paths are taken as given, the hash of the file a link leads to.
Where each file comes from, and the command that fetches a missing one, is :mod:`xlr.data_sources`.

Problems are errors that name the file (and line, id or field) and the fix; nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlr.errors import XlrError
from xlr.files import sha256_file
from xlr.paths import DataRootNotFound, data_root

log = logging.getLogger(__name__)

TRAIN_PROMPTS = "ultrafeedback-prompts"
XAE_PROMPTS = "x-alpacaeval/prompts"
XAE_REFERENCES = "x-alpacaeval/references"
PIVOT = "en"  # the English instruction every cross-lingual reward prompt G(x) is built from
HH_ASSISTANT = "\n\nAssistant:"

# Hub fallbacks (used only when no local data root exists). Only sources whose hub ids are known are listed.
HUB_ENGLISH_PREFERENCES = {
    "ultrafeedback": ("trl-lib/ultrafeedback_binarized", None, {"train": "train", "eval": "test"}),
    "hh-rlhf-helpful": ("Anthropic/hh-rlhf", "helpful-base", {"train": "train", "eval": "test"}),
    "hh-rlhf-harmless": ("Anthropic/hh-rlhf", "harmless-base", {"train": "train", "eval": "test"}),
}


class DataError(XlrError, ValueError):
    """Bad or missing data; the message names file, field and fix."""


# ----------------------------------------------------------------------------------------------------------------
# reading and checksums

_VERIFIED: dict[tuple[str, str], str] = {}  # (the file a path leads to, expected sha256) -> sha256, once per process


def _checksums(root: Path) -> dict[str, str]:
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        return {}
    out = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip().lstrip("*").removeprefix("./")] = digest
    return out


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as SHA256SUMS lists it, computed on the paths as given (absolute, links not followed:
    a root that is a link, or whose files are links to a shared copy, is a root like any other)."""
    p, r = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    for a, b in ((p, r), (p.parent.resolve() / p.name, r.resolve())):  # second: a path given through the root's real folder
        try:
            return a.relative_to(b).as_posix()
        except ValueError:
            pass
    raise DataError(
        f"{path}: not under the data root {root}, so SHA256SUMS cannot name it. Fix: read data files through the "
        "data root (xlr.data's loaders), or give the folder that holds the file as the data root."
    )


def _shown(path: Path) -> str:
    """The path, and the file it leads to where that differs (a link, or a folder on the way that is one)."""
    target = path.resolve()
    return f"{path} (a link to {target})" if target != Path(os.path.abspath(path)) else str(path)


def fetch_command(group: str, root: Path) -> str:
    """The command that downloads ``group``'s public files into ``root`` (``--to`` unless it is the fetch cache)."""
    import shlex

    from xlr.paths import data_cache_dir

    same = os.path.realpath(root) == os.path.realpath(data_cache_dir())
    return f"xlr data fetch --only {group}" + ("" if same else f" --to {shlex.quote(str(root))}")


def _fetch_hint(rel: str, root: Path) -> str:
    from xlr.data_sources import NOT_FETCHABLE, SOURCES

    group = next((s.group for s in SOURCES if s.target == rel), None)
    if group:
        return f" (`{fetch_command(group, root)}` downloads the public file)"
    return f" ({NOT_FETCHABLE[rel]})" if rel in NOT_FETCHABLE else ""


def verify_checksum(path: Path, root: Path) -> None:
    """Compare a file under ``root`` with ``root/SHA256SUMS`` (once per process); mismatch is an error naming the file (and,
    for a link, the file it leads to), both hashes and the fix. The hash is of the file a link leads to, wherever it is."""
    rel = _relative(path, root)
    expected = _checksums(root).get(rel)
    if expected is None:
        return  # unlisted: nothing to compare with
    key = (str(path.resolve()), expected)
    if key in _VERIFIED:
        return
    got = sha256_file(path)
    if got != expected:
        raise DataError(
            f"{_shown(path)}: sha256 {got} differs from {expected} in {root / 'SHA256SUMS'}. The raw data was changed; "
            f"xlr treats raw data as immutable. Fix: restore the original file{_fetch_hint(rel, root)}."
        )
    _VERIFIED[key] = got


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: not valid JSON ({e.msg}). Fix: repair that line.") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{i}: expected a JSON object per line, got {type(row).__name__}.")
            rows.append(row)
    return rows


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}). Fix: repair or restore the file.") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(rows).__name__}.")
    return rows


def _require(row: dict[str, Any], key: str, path: Path, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in row:
        raise DataError(f"{path} ({where}): field '{key}' missing. Fix: every record needs '{key}'.")
    value = row[key]
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{path} ({where}): field '{key}' should be {want}, got {type(value).__name__}.")
    if kind is str and not value.strip():
        raise DataError(f"{path} ({where}): field '{key}' is empty. Fix: fill it in or remove the record (and its translations).")
    return value


def _root(data_dir: str | Path | None) -> Path:
    return data_root(data_dir, required=True)  # type: ignore[return-value]


def _file(root: Path, rel: str, what: str) -> Path:
    path = root / rel
    if not path.is_file():
        broken = f" (a link to {os.path.realpath(path)}, which does not exist)" if path.is_symlink() else ""
        raise DataError(
            f"{path}{broken}: {what} not found under data root {root}. Fix: add the file{_fetch_hint(rel, root)}, or drop the "
            "language from the params."
        )
    verify_checksum(path, root)
    return path


# ----------------------------------------------------------------------------------------------------------------
# (a) multilingual training prompts


def available_languages(kind: str, data_dir: str | Path | None = None) -> list[str]:
    """Language codes with a file of ``kind`` ('train' or 'xalpacaeval') under the data root."""
    root = _root(data_dir)
    if kind == "train":
        return sorted(p.name.removesuffix(".jsonl") for p in (root / TRAIN_PROMPTS).glob("*.jsonl"))
    return sorted(p.stem for p in (root / XAE_PROMPTS).glob("*.json"))


def _train_file(root: Path, lang: str) -> tuple[Path, list[str], dict[str, str]]:
    path = _file(root, f"{TRAIN_PROMPTS}/{lang}.jsonl", f"training prompts for language '{lang}'")
    ids: list[str] = []
    text: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for i, row in enumerate(_read_jsonl(path), 1):
        iid = _require(row, "instruction_id", path, f"line {i}")
        instr = _require(row, "instruction", path, f"line {i}, instruction_id {iid[:12]}")
        if iid in first_line:
            raise DataError(f"{path}: duplicate instruction_id {iid} on lines {first_line[iid]} and {i}. Fix: keep one of them.")
        first_line[iid] = i
        ids.append(iid)
        text[iid] = instr
    return path, ids, text


def load_train_prompts(languages: list[str], n: int, offset: int = 0, data_dir: str | Path | None = None):
    """The first ``n`` prompts (after ``offset``) of each language, aligned by ``instruction_id``.

    Columns: instruction_id, lang, instruction (target language), instruction_en (the English instruction
    with the same id, from which G(x) is built), index (position in the file). The prefix is taken from each
    language's own file, as the paper's subsets are prefixes; the prefixes must hold the same ids in every
    language, else the error names both languages and the id.
    """
    from datasets import Dataset

    root = _root(data_dir)
    files = {lang: _train_file(root, lang) for lang in dict.fromkeys([PIVOT, *languages])}
    pivot_path, _, pivot_text = files[PIVOT]
    rows: list[dict[str, Any]] = []
    ref_lang, ref_ids = None, None
    for lang in languages:
        path, ids, text = files[lang]
        if len(ids) < offset + n:
            raise DataError(
                f"{path}: {len(ids)} prompts, but the params ask for {n} after an offset of {offset} "
                f"(data.n_train_prompts / data.prompt_offset). Fix: lower data.n_train_prompts to at most {max(len(ids) - offset, 0)}."
            )
        chosen = ids[offset : offset + n]
        if ref_ids is None:
            ref_lang, ref_ids = lang, chosen
        elif set(chosen) != set(ref_ids):
            missing = next(i for i in ref_ids if i not in set(chosen))
            raise DataError(
                f"training prompts misaligned: instruction_id {missing} is among the selected prompts of '{ref_lang}' "
                f"({files[ref_lang][0]}) but not of '{lang}' ({path}). Fix: align the files by instruction_id."
            )
        for k, iid in enumerate(chosen):
            if iid not in pivot_text:
                raise DataError(f"instruction_id {iid} of '{lang}' ({path}) has no English instruction in {pivot_path}; G(x) needs it.")
            rows.append(
                {"instruction_id": iid, "lang": lang, "instruction": text[iid], "instruction_en": pivot_text[iid], "index": offset + k}
            )
    return Dataset.from_list(rows)


# ----------------------------------------------------------------------------------------------------------------
# (b) X-AlpacaEval prompts and references


def xalpacaeval_ids(n: int | None, seed: int = 0, total: int = 805) -> list[int]:
    """All ids 1..total, or a seeded subset of ``n`` (sorted): identical across languages and models."""
    ids = list(range(1, total + 1))
    if n is None or n >= total:
        return ids
    return sorted(random.Random(seed).sample(ids, n))


def load_xalpacaeval(
    lang: str,
    ids: list[int] | None = None,
    reference_generator: str | None = "gpt-4-turbo-2024-04-09",
    data_dir: str | Path | None = None,
):
    """X-AlpacaEval prompts of one language joined with the reference outputs.

    Columns: id, lang, dataset, instruction, and (with a reference generator) reference_output and
    reference_generator. References are joined by ``id``; a file without ``id`` (the English one) is joined by
    row order, and then each instruction must equal the prompt file's instruction.
    """
    from datasets import Dataset

    root = _root(data_dir)
    ppath = _file(root, f"{XAE_PROMPTS}/{lang}.json", f"X-AlpacaEval prompts for language '{lang}'")
    prompts: dict[int, dict[str, Any]] = {}
    for k, row in enumerate(_read_json_list(ppath)):
        rid = int(_require(row, "id", ppath, f"record {k}", (int, str)))  # type: ignore[arg-type]
        if rid in prompts:
            raise DataError(f"{ppath}: duplicate id {rid} (records {list(prompts).index(rid)} and {k}). Fix: keep one.")
        prompts[rid] = {
            "id": rid,
            "lang": lang,
            "dataset": row.get("dataset", ""),
            "instruction": _require(row, "instruction", ppath, f"id {rid}"),
        }
    refs: dict[int, dict[str, Any]] = {}
    if reference_generator:
        rpath = _file(root, f"{XAE_REFERENCES}/{reference_generator}/{lang}.json", f"{reference_generator} references for '{lang}'")
        rrows = _read_json_list(rpath)
        has_ids = all("id" in r for r in rrows)
        order = sorted(prompts)
        if not has_ids and len(rrows) != len(order):
            raise DataError(f"{rpath}: {len(rrows)} references without 'id' but {len(order)} prompts in {ppath}; cannot join by row order.")
        for k, r in enumerate(rrows):
            rid = int(r["id"]) if has_ids else order[k]
            out = _require(r, "output", rpath, f"record {k}")
            if rid not in prompts:
                raise DataError(f"{rpath}: reference id {rid} has no prompt in {ppath}.")
            if r.get("instruction", "").strip() != prompts[rid]["instruction"].strip():
                raise DataError(
                    f"{rpath} record {k} (id {rid}): instruction differs from {ppath}: "
                    f"{r.get('instruction', '')[:60]!r} vs {prompts[rid]['instruction'][:60]!r}. Fix: the two files must list the same prompts"
                    + (" in the same order (this file has no 'id' and is joined by row order)." if not has_ids else ".")
                )
            refs[rid] = {"reference_output": out, "reference_generator": r.get("generator", reference_generator)}
        missing = sorted(set(prompts) - set(refs))
        if missing:
            raise DataError(f"{rpath}: no reference for {len(missing)} prompt id(s), e.g. {missing[:5]}.")
    wanted = sorted(prompts) if ids is None else ids
    unknown = [i for i in wanted if i not in prompts]
    if unknown:
        raise DataError(f"{ppath}: requested id(s) {unknown[:5]} not present ({len(prompts)} prompts).")
    return Dataset.from_list([{**prompts[i], **refs.get(i, {})} for i in wanted])


XAE_OUTPUTS = "x-alpacaeval/outputs"
PAPER_TABLE2 = "x-alpacaeval/paper-table2.csv"


def xalpacaeval_output_generators(data_dir: str | Path | None = None) -> list[str]:
    """Generators whose X-AlpacaEval answers ship under ``x-alpacaeval/outputs/`` (e.g. gpt-3.5-turbo-0125)."""
    root = _root(data_dir) / XAE_OUTPUTS
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def load_xalpacaeval_outputs(generator: str, lang: str, ids: list[int] | None = None, data_dir: str | Path | None = None) -> dict[int, str]:
    """Another model's answers to X-AlpacaEval (``x-alpacaeval/outputs/<generator>/<lang>.json``, AlpacaEval format):
    id -> output. Joined to the prompts by ``id`` (by row order where the file has none, then each instruction must
    equal the prompt file's, as for the references); an empty output is an error, not a silent skip."""
    root = _root(data_dir)
    opath = _file(root, f"{XAE_OUTPUTS}/{generator}/{lang}.json", f"{generator}'s X-AlpacaEval answers for '{lang}'")
    prompts = {
        int(r["id"]): r["instruction"]
        for r in _read_json_list(_file(root, f"{XAE_PROMPTS}/{lang}.json", f"X-AlpacaEval prompts for '{lang}'"))
    }
    rows = _read_json_list(opath)
    has_ids = all("id" in r for r in rows)
    order = sorted(prompts)
    if not has_ids and len(rows) != len(order):
        raise DataError(f"{opath}: {len(rows)} outputs without 'id' but {len(order)} prompts; cannot join by row order.")
    out: dict[int, str] = {}
    for k, r in enumerate(rows):
        rid = int(r["id"]) if has_ids else order[k]
        if rid not in prompts:
            raise DataError(
                f"{opath}: output id {rid} (record {k}) has no X-AlpacaEval prompt. Fix: the file must answer the shipped prompts."
            )
        if r.get("instruction", "").strip() != prompts[rid].strip():
            raise DataError(
                f"{opath} record {k} (id {rid}): instruction differs from the prompt file's: {r.get('instruction', '')[:60]!r} vs "
                f"{prompts[rid][:60]!r}. Fix: the outputs must follow the prompt file's order and text."
            )
        out[rid] = _require(r, "output", opath, f"record {k} (id {rid})")
    wanted = order if ids is None else ids  # None: every prompt must be answered
    missing = [i for i in wanted if i not in out]
    if missing:
        raise DataError(f"{opath}: no output for id(s) {missing[:5]} ({len(missing)} missing). Fix: use ids the file answers.")
    return {i: out[i] for i in wanted}


def load_paper_table2(data_dir: str | Path | None = None):
    """The paper's Table 2 (X-AlpacaEval LC / WR per language, GPT-4-turbo judge): a DataFrame with columns
    model, lang, lc, wr (lang 'avg' = the paper's average). Every row is the paper's number, never ours."""
    import pandas as pd

    path = _file(_root(data_dir), PAPER_TABLE2, "the paper's Table 2")
    df = pd.read_csv(path)
    missing = {"model", "lang", "lc", "wr"} - set(df.columns)
    if missing:
        raise DataError(f"{path}: column(s) {sorted(missing)} missing. Fix: restore the file (columns model, lang, lc, wr).")
    for col in ("lc", "wr"):
        bad = df[pd.to_numeric(df[col], errors="coerce").isna()]
        if len(bad):
            raise DataError(f"{path}: row {int(bad.index[0]) + 2}: field '{col}' is not a number ({bad[col].iloc[0]!r}).")
        df[col] = df[col].astype(float)
    return df


# ----------------------------------------------------------------------------------------------------------------
# (c) English preference pairs


def split_hh_dialogue(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """(prompt, chosen_response, rejected_response) of an hh-rlhf pair: the prompt is the shared prefix up to
    and including the last "\\n\\nAssistant:". ``None`` when the two dialogues do not share that prefix."""
    cut = chosen.rfind(HH_ASSISTANT)
    if cut < 0:
        return None
    prompt = chosen[: cut + len(HH_ASSISTANT)]
    if not rejected.startswith(prompt):
        return None
    return prompt, chosen[len(prompt) :].strip(), rejected[len(prompt) :].strip()


def hh_to_messages(prompt: str) -> list[dict[str, str]]:
    """An hh-rlhf dialogue prefix as chat messages (the trailing empty Assistant turn is dropped)."""
    import re

    parts = re.split(r"\n\n(Human|Assistant):", prompt)
    msgs = []
    for role, text in zip(parts[1::2], parts[2::2], strict=True):
        text = text.strip()
        if text:
            msgs.append({"role": "user" if role == "Human" else "assistant", "content": text})
    return msgs


@dataclass
class LoadReport:
    """What a loader kept and what it skipped (and why): skips are counted, never silent."""

    source: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)


def load_english_preferences(
    source: str = "ultrafeedback", split: str = "train", data_dir: str | Path | None = None, report: LoadReport | None = None
):
    """English preference pairs. Columns: prompt (str), chosen (str), rejected (str), messages (chat turns of the
    prompt), source, tie (the labels' scores are equal), score_margin (score_chosen - score_rejected where the
    source has scores, else None). For hh-rlhf (only its test split is shipped) ``split`` selects a deterministic 90/10
    partition: 'train' or 'eval'."""
    from datasets import Dataset

    if split not in ("train", "eval"):
        raise DataError(f"split {split!r}: use 'train' or 'eval'.")
    report = report if report is not None else LoadReport(source)
    try:
        root = _root(data_dir)
    except DataRootNotFound as e:
        return _hub_english_preferences(source, split, e)
    rows: list[dict[str, Any]] = []
    if source == "ultrafeedback":
        path = _file(root, f"english-preferences/ultrafeedback/{split}.jsonl", "UltraFeedback preference pairs")
        for i, r in enumerate(_read_jsonl(path), 1):
            prompt = _require(r, "prompt", path, f"line {i}")
            chosen, rejected = r.get("chosen"), r.get("rejected")
            if not isinstance(chosen, str) or not isinstance(rejected, str):
                raise DataError(f"{path} (line {i}): fields 'chosen' and 'rejected' must be strings.")
            if not chosen.strip() or not rejected.strip() or chosen.strip() == rejected.strip():
                report.skipped["empty or identical responses"] += 1
                continue
            margin = _score_margin(r.get("metadata") or {}, path, i)
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "messages": [{"role": "user", "content": prompt}],
                    "source": source,
                    "tie": margin == 0.0,
                    "score_margin": margin,
                }
            )
    elif source in ("hh-rlhf-helpful", "hh-rlhf-harmless"):
        kind = source.removeprefix("hh-rlhf-")
        path = _file(root, f"english-preferences/hh-rlhf/{kind}-base_test.jsonl.gz", f"hh-rlhf {kind} pairs")
        for i, r in enumerate(_read_jsonl(path), 1):
            in_split = (i % 10 == 0) == (split == "eval")
            if not in_split:
                continue
            parts = split_hh_dialogue(_require(r, "chosen", path, f"line {i}"), _require(r, "rejected", path, f"line {i}"))
            if parts is None:
                report.skipped["no shared prompt prefix"] += 1
                continue
            prompt, c, rj = parts
            if not c or not rj or c == rj:
                report.skipped["empty or identical responses"] += 1
                continue
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": c,
                    "rejected": rj,
                    "messages": hh_to_messages(prompt),
                    "source": source,
                    "tie": False,
                    "score_margin": None,
                }
            )
    else:
        raise DataError(f"english preference source {source!r}: use one of ultrafeedback, hh-rlhf-helpful, hh-rlhf-harmless.")
    report.kept = len(rows)
    if report.skipped:
        log.info("%s/%s: kept %d pairs, skipped %s", source, split, report.kept, dict(report.skipped))
    return Dataset.from_list(rows)


def _hub_english_preferences(source: str, split: str, why: DataRootNotFound):
    """Load from the Hugging Face hub when no data root exists (users with hub access)."""
    import datasets

    if source not in HUB_ENGLISH_PREFERENCES:
        raise DataError(f"{why}\nNo hub fallback is known for {source!r}.")
    repo, subdir, splits = HUB_ENGLISH_PREFERENCES[source]
    try:
        ds = datasets.load_dataset(repo, data_dir=subdir, split=splits[split])
    except Exception as e:  # noqa: BLE001 - any hub failure becomes the same clear message
        raise DataError(f"{why}\nThe Hugging Face hub ({repo}) was tried as a last resort and failed: {type(e).__name__}: {e}") from None

    def to_text(x: Any) -> str:
        return x[-1]["content"] if isinstance(x, list) else x

    if source == "ultrafeedback":

        def convert(r: dict[str, Any], i: int) -> dict[str, Any]:
            margin = _score_margin(r, f"{repo} ({splits[split]})", i + 1)
            prompt = to_text(r["prompt"]) if r.get("prompt") else r["chosen"][0]["content"]
            return {
                "prompt": prompt,
                "chosen": to_text(r["chosen"]),
                "rejected": to_text(r["rejected"]),
                "messages": [{"role": "user", "content": prompt}],
                "source": source,
                "tie": margin == 0.0,
                "score_margin": margin,
            }

        return ds.map(convert, with_indices=True, remove_columns=[c for c in ds.column_names if c not in ("prompt", "chosen", "rejected")])
    rows = [
        dict(zip(("prompt", "chosen", "rejected"), p, strict=True))
        for p in (split_hh_dialogue(r["chosen"], r["rejected"]) for r in ds)
        if p
    ]
    return datasets.Dataset.from_list(
        [{**r, "messages": hh_to_messages(r["prompt"]), "source": source, "tie": False, "score_margin": None} for r in rows]
    )


def _score_margin(meta: dict[str, Any], where: Any, line: int) -> float | None:
    """score_chosen - score_rejected from a pair's rating fields; None where the pair has none (never a guess)."""
    if "score_chosen" not in meta and "score_rejected" not in meta:
        return None
    try:
        return float(meta["score_chosen"]) - float(meta["score_rejected"])
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"{where} (line {line}): fields 'score_chosen' and 'score_rejected' must both be numbers "
            f"(got {meta.get('score_chosen')!r}, {meta.get('score_rejected')!r}). Fix: correct them, or remove both."
        ) from None


# ----------------------------------------------------------------------------------------------------------------
# AlpacaEval 2 annotations and leaderboard (alpaca-eval/: the judge's own judgments of 52 models, the published table)

ALPACA_ANNOTATIONS = "alpaca-eval/annotations"
ALPACA_LEADERBOARD = "alpaca-eval/leaderboard.csv"
ALPACA_REQUIRED = ("instruction", "output_1", "output_2", "generator_2", "preference")
ALPACA_OPTIONAL = ("generator_1", "dataset", "annotator")
SKIP_NO_PREFERENCE = "preference null/NaN (judge gave none; left out of WR and LC fit, as alpaca_eval drops it)"


def _alpaca_preference(value: Any, path: Path, where: str) -> float:
    """One AlpacaEval preference as a float in [1, 2] (NaN where the judge gave none). alpaca_eval's conventions
    (metrics/helpers.py ``BaseScoringRule.describe_head2head``): 1 = output_1 (baseline) wins, 2 = output_2 (model)
    wins, 1.5 = tie; the legacy draw code 0 means 1.5; NaN is dropped before the win rate."""
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(
            f"{path} ({where}): field 'preference' should be a number in [1, 2], got {type(value).__name__} {value!r}. "
            "Fix: write the judge's preference (1 = output_1 better, 2 = output_2 better, 1.5 = tie), or null if none."
        )
    try:
        x = float(value)
    except ValueError:
        raise DataError(
            f"{path} ({where}): field 'preference' is {value!r}, not a number. "
            "Fix: write the judge's preference as a number in [1, 2] (1.5 = tie), or null if none."
        ) from None
    if x != x:  # NaN
        return x
    if x == 0:
        return 1.5  # alpaca_eval's backward-compatible draw encoding (helpers.py: replace({0: 1.5}))
    if not 1 <= x <= 2:
        raise DataError(
            f"{path} ({where}): field 'preference' is {x}, outside [1, 2]. AlpacaEval preferences are 1 + p "
            "(1 = output_1 better, 2 = output_2 better). Fix: if yours is p in [0, 1], add 1; else correct the record."
        )
    return x


def load_alpaca_annotations(path: str | Path, report: LoadReport | None = None):
    """AlpacaEval-format pairwise annotations (a JSON list, ``.json`` or ``.json.gz``; alpaca_eval's
    ``results/<model>/<annotator>/annotations.json``).

    Returns ``(DataFrame, LoadReport)``. One row per record, in file order (the AlpacaEval GLM uses this row order);
    columns instruction, output_1 (baseline), output_2 (model), generator_2, preference (float in [1, 2], NaN where the
    judge gave none), generator_1 / dataset / annotator where present, and ``record`` (1-based position in the file).
    Rows with a null/NaN preference stay in the frame (alpaca_eval keeps them for the length statistics) but are
    counted in ``report.skipped`` and left out of every win rate; ``report.kept`` counts the judged rows. Bad records
    raise DataError naming the file, the record, the field and the fix."""
    import pandas as pd

    path = Path(path)
    report = report if report is not None else LoadReport(str(path))
    if not path.is_file():
        raise DataError(f"{path}: annotations file not found. Fix: give the path of an AlpacaEval annotations.json(.gz).")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            records = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as e:
        raise DataError(
            f"{path}: not a readable JSON list of annotations ({type(e).__name__}: {e}). Fix: repair or restore the file."
        ) from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of annotation records, got {type(records).__name__}.")
    if not records:
        raise DataError(f"{path}: no annotation records. Fix: give a file with the judge's annotations.")
    rows = []
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise DataError(f"{path} (record {i}): expected a JSON object, got {type(r).__name__}.")
        where = f"record {i}"
        missing = [k for k in ALPACA_REQUIRED if k not in r]
        if missing:
            raise DataError(
                f"{path} ({where}): field{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)} missing. "
                f"Fix: every AlpacaEval annotation needs {', '.join(ALPACA_REQUIRED)}."
            )
        for k in ("instruction", "output_1", "output_2", "generator_2"):
            if not isinstance(r[k], str):
                raise DataError(f"{path} ({where}): field '{k}' should be a string, got {type(r[k]).__name__}. Fix: correct the record.")
        row = {k: r[k] for k in ("instruction", "output_1", "output_2", "generator_2")}
        row["preference"] = _alpaca_preference(r["preference"], path, f"{where}, instruction {r['instruction'][:40]!r}")
        for k in ALPACA_OPTIONAL:
            if k in r:
                row[k] = r[k]
        row["record"] = i
        if row["preference"] != row["preference"]:
            report.skipped[SKIP_NO_PREFERENCE] += 1
        rows.append(row)
    report.kept = len(rows) - report.skipped[SKIP_NO_PREFERENCE]
    if report.skipped:
        log.info("%s: %d judged annotations, skipped %s", path, report.kept, dict(report.skipped))
    df = pd.DataFrame(rows)
    df["preference"] = df["preference"].astype(float)
    return df, report


def alpaca_annotation_files(data_dir: str | Path | None = None) -> dict[str, Path]:
    """The shipped AlpacaEval 2 annotation files: model name (file name, = the leaderboard's name) -> path, each
    checked against SHA256SUMS."""
    root = _root(data_dir)
    folder = root / ALPACA_ANNOTATIONS
    if not folder.is_dir():
        raise DataError(
            f"{folder}: AlpacaEval annotations folder not found under data root {root}. Fix: add alpaca-eval/annotations "
            "(see shared/data/README.md)."
        )
    out = {}
    for p in sorted(folder.iterdir()):
        for suffix in (".json.gz", ".json"):
            if p.name.endswith(suffix):
                out[p.name.removesuffix(suffix)] = _file(root, f"{ALPACA_ANNOTATIONS}/{p.name}", "AlpacaEval annotations")
                break
    if not out:
        raise DataError(f"{folder}: no *.json.gz annotation files. Fix: restore the shipped files.")
    return out


def load_alpaca_leaderboard(data_dir: str | Path | None = None):
    """The published AlpacaEval 2 leaderboard (weighted_alpaca_eval_gpt4_turbo) as a DataFrame indexed by model name
    (columns win_rate, standard_error, n_wins, n_wins_base, n_draws, n_total, discrete_win_rate, mode, avg_length,
    length_controlled_winrate, lc_standard_error)."""
    import pandas as pd

    path = _file(_root(data_dir), ALPACA_LEADERBOARD, "AlpacaEval 2 leaderboard")
    df = pd.read_csv(path, index_col=0)
    for col in ("win_rate", "length_controlled_winrate"):
        if col not in df.columns:
            raise DataError(f"{path}: column '{col}' missing. Fix: restore the published leaderboard file.")
    df.index.name = "model"
    return df


# ----------------------------------------------------------------------------------------------------------------
# data check (xlr data check)


def check_data(data_dir: str | Path | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """Inspect every data file found; return (root, rows) with one row per file: kind, file, lang, rows, sha256 (ok,
    MISMATCH, unlisted or missing), problems, fix. Problems are reported, not raised, so one bad file does not hide the
    others. Every file of :data:`xlr.data_sources.SOURCES` (and NOT_FETCHABLE) that the root lacks gets a row too, whose
    fix is the command that fetches it into this root (:func:`fetch_command`; a group missing whole is one row)."""
    root = _root(data_dir)
    sums = _checksums(root)
    out: list[dict[str, Any]] = []

    def add(kind: str, path: Path, lang: str, n: int | None, problems: list[str]) -> None:
        rel = _relative(path, root)
        fix = "-"
        if not path.is_file():  # e.g. a link whose target is gone: the loader's error says so
            checksum, fix = "missing", "restore the file" + _fetch_hint(rel, root)
        elif rel in sums:
            got = sha256_file(path)
            checksum = "ok" if got == sums[rel] else "MISMATCH"
            if checksum != "ok":
                if not any(sums[rel] in p for p in problems):  # the loader's own error may have said it already
                    problems.append(f"{_shown(path)}: sha256 {got} differs from {sums[rel]} in SHA256SUMS")
                fix = "restore the original file" + _fetch_hint(rel, root)
        else:
            checksum = "unlisted"
        out.append(
            {"kind": kind, "file": rel, "lang": lang, "rows": n, "sha256": checksum, "problems": "; ".join(problems) or "-", "fix": fix}
        )

    train_ids: dict[str, list[str]] = {}
    for path in sorted((root / TRAIN_PROMPTS).glob("*.jsonl")):
        lang = path.name.removesuffix(".jsonl")
        try:
            _, ids, _ = _train_file(root, lang)
            train_ids[lang] = ids
            add("train-prompts", path, lang, len(ids), [])
        except DataError as e:
            add("train-prompts", path, lang, None, [str(e)])
    en = train_ids.get(PIVOT, [])
    for row in out:
        if row["kind"] == "train-prompts" and row["lang"] in train_ids and row["lang"] != PIVOT:
            ids = train_ids[row["lang"]]
            if ids != en[: len(ids)]:
                extra = len(set(ids) - set(en))
                row["problems"] = (
                    f"not a prefix of {PIVOT} by instruction_id ({extra} ids without English)" if extra else "same ids as en, other order"
                )
    for path in sorted((root / XAE_PROMPTS).glob("*.json")):
        lang = path.stem
        try:
            ds = load_xalpacaeval(lang, reference_generator=None, data_dir=root)
            add("x-alpacaeval-prompts", path, lang, len(ds), [])
        except DataError as e:
            add("x-alpacaeval-prompts", path, lang, None, [str(e)])
    for gen_dir in sorted(p for p in (root / XAE_REFERENCES).glob("*") if p.is_dir()):
        for path in sorted(gen_dir.glob("*.json")):
            lang = path.stem
            try:
                ds = load_xalpacaeval(lang, reference_generator=gen_dir.name, data_dir=root)
                add(f"references/{gen_dir.name}", path, lang, len(ds), [])
            except DataError as e:
                add(f"references/{gen_dir.name}", path, lang, None, [str(e)])
    for split in ("train", "eval"):
        path = root / f"english-preferences/ultrafeedback/{split}.jsonl"
        if path.is_file():
            try:
                rep = LoadReport("ultrafeedback")
                ds = load_english_preferences("ultrafeedback", split, data_dir=root, report=rep)
                notes = [f"{sum(ds['tie'])} score ties (kept)"] if sum(ds["tie"]) else []
                notes += [f"{n} skipped when loaded: {why}" for why, n in rep.skipped.items()]
                add("english-preferences", path, "en", len(ds) + sum(rep.skipped.values()), notes)
            except DataError as e:
                add("english-preferences", path, "en", None, [str(e)])
    for kind in ("helpful", "harmless"):
        path = root / f"english-preferences/hh-rlhf/{kind}-base_test.jsonl.gz"
        if path.is_file():
            try:
                n = len(_read_jsonl(path))
                skipped = 0
                for split in ("train", "eval"):
                    rep = LoadReport(f"hh-rlhf-{kind}")
                    load_english_preferences(f"hh-rlhf-{kind}", split, data_dir=root, report=rep)
                    skipped += sum(rep.skipped.values())
                add(
                    "english-preferences",
                    path,
                    "en",
                    n,
                    [f"{skipped} skipped when loaded: no shared prompt, or empty/identical responses"] if skipped else [],
                )
            except DataError as e:
                add("english-preferences", path, "en", None, [str(e)])
    _check_evidence_files(root, add)
    out.extend(_missing_rows(root, {r["file"] for r in out}))
    return root, out


def _missing_rows(root: Path, listed: set[str]) -> list[dict[str, Any]]:
    """check_data's rows for the files of the table that the root lacks: one per file, or one per group missing whole."""
    from xlr.data_sources import GROUPS, NOT_FETCHABLE, SOURCES

    def row(file: str, problem: str, fix: str, kind: str = "missing") -> dict[str, Any]:
        return {"kind": kind, "file": file, "lang": "-", "rows": None, "sha256": "missing", "problems": problem, "fix": fix}

    def problem(rel: str) -> str:
        path = root / rel
        return f"a link to {os.path.realpath(path)}, which does not exist" if path.is_symlink() else f"not found under the data root {root}"

    rows = []
    for group in GROUPS:
        targets = [s.target for s in SOURCES if s.group == group]
        missing = [t for t in targets if t not in listed and not (root / t).is_file()]
        fix = fetch_command(group, root)
        if missing and len(missing) == len(targets):
            rows.append(row(f"{group}/ (all {len(targets)} files)", f"none of the group's files found under the data root {root}", fix))
        else:
            rows.extend(row(t, problem(t), fix) for t in missing)
    rows.extend(
        row(t, problem(t), why, "not fetchable") for t, why in NOT_FETCHABLE.items() if t not in listed and not (root / t).is_file()
    )
    return rows


def _check_evidence_files(root: Path, add: Any) -> None:
    """check_data's rows for the files that check the instruments: other models' X-AlpacaEval answers and the paper's
    Table 2, AlpacaEval 2's annotations and leaderboard, the Language Confusion Benchmark, and their licences."""
    for gen in xalpacaeval_output_generators(root):
        for path in sorted((root / XAE_OUTPUTS / gen).glob("*.json")):
            try:
                add(f"outputs/{gen}", path, path.stem, len(load_xalpacaeval_outputs(gen, path.stem, data_dir=root)), [])
            except DataError as e:
                add(f"outputs/{gen}", path, path.stem, None, [str(e)])
    if (root / PAPER_TABLE2).is_file():
        try:
            add("paper-table2", root / PAPER_TABLE2, "-", len(load_paper_table2(root)), [])
        except DataError as e:
            add("paper-table2", root / PAPER_TABLE2, "-", None, [str(e)])
    for path in sorted((root / ALPACA_ANNOTATIONS).glob("*.json*")) if (root / ALPACA_ANNOTATIONS).is_dir() else []:
        try:
            rep = LoadReport(path.name)
            df, rep = load_alpaca_annotations(path, report=rep)
            add(
                "alpaca-eval-annotations",
                path,
                "en",
                len(df),
                [f"{n} {why} (counted, left out of the win rate)" for why, n in rep.skipped.items()],
            )
        except DataError as e:
            add("alpaca-eval-annotations", path, "en", None, [str(e)])
    if (root / ALPACA_LEADERBOARD).is_file():
        try:
            add("alpaca-eval-leaderboard", root / ALPACA_LEADERBOARD, "-", len(load_alpaca_leaderboard(root)), [])
        except DataError as e:
            add("alpaca-eval-leaderboard", root / ALPACA_LEADERBOARD, "-", None, [str(e)])
    if (root / LCB_DIR).is_dir():
        for task in LCB_TASKS:
            for lang, files in _lcb_files(root, task).items():
                for source, path in files:
                    try:
                        add(f"lcb-{task}/{source}", path, lang, len(_read_csv_rows(path)[1]), [])
                    except DataError as e:
                        add(f"lcb-{task}/{source}", path, lang, None, [str(e)])
        if (root / LCB_DIR / "words").is_file():
            add("lcb-words", root / LCB_DIR / "words", "en", len((root / LCB_DIR / "words").read_text(encoding="utf-8").split()), [])
        for path in sorted((root / LCB_DIR / "outputs").glob("*.csv*")):
            try:
                add("lcb-outputs", path, "-", len(load_lcb_outputs(path)), [])
            except DataError as e:
                add("lcb-outputs", path, "-", None, [str(e)])
    for lic in sorted(root.glob("*/LICENSE")):
        if lic.is_file():
            add("license", lic, "-", len(lic.read_text(encoding="utf-8", errors="replace").splitlines()), [])
        else:
            add("license", lic, "-", None, [f"{_shown(lic)}: not found"])


# ----------------------------------------------------------------------------------------------------------------
# Language Confusion Benchmark (language-confusion/: Marchisio et al. 2024, for-ai/language-confusion): its prompt
# sets, the English word list of its word-level metric, and model completions in its outputs/*.csv format

LCB_DIR = "language-confusion"
LCB_TASKS = ("monolingual", "crosslingual")
# The benchmark's 15 languages (README: monolingual sets cover all 15, cross-lingual ones the 14 besides English).
LCB_LANGUAGES = ("ar", "de", "en", "es", "fr", "hi", "id", "it", "ja", "ko", "pt", "ru", "tr", "vi", "zh")
LCB_OUTPUT_COLUMNS = ("id", "model", "completion", "task", "source", "language")


def _lcb_task(task: str) -> str:
    if task not in LCB_TASKS:
        raise DataError(f"Language Confusion Benchmark task {task!r}: use one of {', '.join(LCB_TASKS)}.")
    return task


def _lcb_files(root: Path, task: str) -> dict[str, list[tuple[str, Path]]]:
    """{lang: [(source folder, csv path), ...]} of ``test_sets/{task}/{source}/{lang}.csv``, sources sorted."""
    folder = root / LCB_DIR / "test_sets" / _lcb_task(task)
    if not folder.is_dir():
        raise DataError(
            f"{folder}: Language Confusion Benchmark test sets not found under data root {root}. "
            "Fix: add language-confusion/test_sets (see shared/data/README.md)."
        )
    out: dict[str, list[tuple[str, Path]]] = {}
    for src in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(src.glob("*.csv")):
            out.setdefault(f.stem, []).append((src.name, f))
    return out


def lcb_languages(task: str, data_dir: str | Path | None = None) -> list[str]:
    """Languages the benchmark has prompts for in ``task`` (sorted)."""
    return sorted(_lcb_files(_root(data_dir), task))


def _read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """CSV (or .csv.gz) rows as strings exactly as written (no NA guessing: a completion "NA" stays "NA")."""
    import csv

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (UnicodeDecodeError, OSError, EOFError, csv.Error) as e:
        raise DataError(f"{path}: not a readable UTF-8 CSV file ({type(e).__name__}: {e}). Fix: repair or restore the file.") from None


def load_lcb_prompts(
    task: str, langs: list[str], n_per_lang: int | None = None, seed: int = 0, data_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """Prompts of the benchmark's ``task`` for ``langs``: dicts ``id`` ("<source>-<row>", unique within task and
    language), ``task``, ``source`` (the CSV's source column, as in the benchmark's outputs), ``lang``, ``prompt``,
    and ``index`` (0-based row in the test-set file, the ``id`` of the benchmark's outputs). All sources of a language
    are pooled; ``n_per_lang`` keeps a seeded random subset per language (file order kept). Each file is checked
    against SHA256SUMS."""
    root = _root(data_dir)
    files = _lcb_files(root, task)
    out: list[dict[str, Any]] = []
    for lang in langs:
        if lang not in files:
            raise DataError(
                f"{root / LCB_DIR / 'test_sets' / task}: no {task} prompts for language {lang!r}; the benchmark has "
                f"{', '.join(sorted(files))}. Fix: drop {lang!r} from the languages asked for (xlr.data.lcb_languages lists them)."
            )
        rows: list[dict[str, Any]] = []
        for src_dir, f in files[lang]:
            path = _file(root, str(f.relative_to(root)), "Language Confusion Benchmark test set")
            columns, records = _read_csv_rows(path)
            if "prompt" not in columns:
                raise DataError(
                    f"{path}: column 'prompt' missing (columns: {', '.join(columns)}). Fix: restore the benchmark's test set file."
                )
            for i, r in enumerate(records):
                where = f"row {i + 1}"
                prompt = r.get("prompt") or ""
                if not prompt.strip():
                    raise DataError(f"{path} ({where}): field 'prompt' is empty. Fix: restore the benchmark's test set file.")
                if r.get("language") not in (None, "", lang):
                    raise DataError(
                        f"{path} ({where}): field 'language' is {r['language']!r} in the file for {lang!r}. Fix: restore the file."
                    )
                source = r.get("source") or src_dir
                rows.append({"id": f"{source}-{i}", "task": task, "source": source, "lang": lang, "prompt": prompt, "index": i})
        if n_per_lang is not None and n_per_lang < len(rows):
            keep = set(random.Random(f"lcb:{task}:{lang}:{seed}").sample(range(len(rows)), n_per_lang))
            rows = [r for k, r in enumerate(rows) if k in keep]
        out.extend(rows)
    return out


def lcb_english_words(data_dir: str | Path | None = None) -> frozenset[str]:
    """The benchmark's English word list as its word-level metric uses it (compute_metrics.py: lower-case words of
    more than 3 characters of ``words``)."""
    path = _file(_root(data_dir), f"{LCB_DIR}/words", "Language Confusion Benchmark English word list")
    words = (w.strip() for w in path.read_text(encoding="utf-8").splitlines())
    return frozenset(w for w in words if w.islower() and len(w) > 3)


def load_lcb_outputs(path: str | Path):
    """Model completions in the benchmark's ``outputs/*.csv`` format (``.csv`` or ``.csv.gz``) as a DataFrame with
    columns id, model, completion, task, source, language (all strings, file order). A missing column, an unknown
    task or language, or an empty model/source is a DataError naming the file, the row (1-based data row), the field
    and the fix. Empty completions are kept (the metrics skip them, as the benchmark does)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: benchmark outputs file not found. Fix: give the path of a .csv or .csv.gz with columns "
            f"{', '.join(LCB_OUTPUT_COLUMNS)}."
        )
    columns, records = _read_csv_rows(path)
    missing = [c for c in LCB_OUTPUT_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{path}: column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} missing (the file has "
            f"{', '.join(columns) or 'no header'}). Fix: write the benchmark's columns {', '.join(LCB_OUTPUT_COLUMNS)}."
        )
    if not records:
        raise DataError(f"{path}: no rows. Fix: give a file with completions.")
    for i, r in enumerate(records, 1):
        for c in LCB_OUTPUT_COLUMNS:
            if r.get(c) is None:
                raise DataError(f"{path} (row {i}): field '{c}' missing (the row has fewer fields than the header). Fix: repair that row.")
        if r["task"] not in LCB_TASKS:
            raise DataError(f"{path} (row {i}, id {r['id']!r}): field 'task' is {r['task']!r}. Fix: use one of {', '.join(LCB_TASKS)}.")
        if r["language"] not in LCB_LANGUAGES:
            raise DataError(
                f"{path} (row {i}, id {r['id']!r}): field 'language' is {r['language']!r}, not a language of the benchmark. "
                f"Fix: use one of {', '.join(LCB_LANGUAGES)} (ISO 639-1, lower case)."
            )
        for c in ("model", "source"):
            if not r[c].strip():
                raise DataError(f"{path} (row {i}, id {r['id']!r}): field '{c}' is empty. Fix: fill it in.")
    return pd.DataFrame([{c: r[c] for c in LCB_OUTPUT_COLUMNS} for r in records], columns=list(LCB_OUTPUT_COLUMNS))


def select_by_score_margin(pairs: Any, min_margin: float, source: str) -> tuple[Any, int]:
    """The pairs whose rating margin is at least ``min_margin`` (in order) and how many were below it. The idea: a
    DPO reward learns UltraFeedback's ties and half-point pairs as firmly as clear ones (in one paired try it did not
    raise the held-out accuracy, bench/RESULTS.md)."""
    if min_margin <= 0:
        return pairs, 0
    margins = pairs["score_margin"]
    if any(m is None for m in margins):
        raise DataError(
            f"anchor.min_score_margin {min_margin}: source {source!r} has pairs without rating scores (score_chosen/score_rejected). "
            "Fix: set anchor.min_score_margin: 0, or use a source with scores (ultrafeedback)."
        )
    keep = [i for i, m in enumerate(margins) if m >= min_margin]
    return pairs.select(keep), len(margins) - len(keep)
