"""Data loaders. Every loader returns a ``datasets.Dataset``; raw files are never modified.

Expected layout under the data root (see ``../shared/data/README.md``)::

    ultrafeedback-prompts/{lang}.jsonl                         {"instruction", "instruction_id"}
    x-alpacaeval/prompts/{lang}.json                           [{"id", "dataset", "instruction"}]
    x-alpacaeval/references/<generator>/{lang}.json            AlpacaEval format (en.json has no "id")
    english-preferences/ultrafeedback/{train,eval}.jsonl       {"prompt", "chosen", "rejected", ...}
    english-preferences/hh-rlhf/{helpful,harmless}-base_test.jsonl.gz   {"chosen", "rejected"} dialogues
    SHA256SUMS                                                 checked for every file loaded from the root

Problems are errors that name the file (and line, id or field) and the fix; nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlr.paths import DataRootNotFound, data_root
from xlr.runs import sha256_file

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


class DataError(ValueError):
    """Bad or missing data; the message names file, field and fix."""


# ----------------------------------------------------------------------------------------------------------------
# reading and checksums

_VERIFIED: dict[Path, str] = {}


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


def verify_checksum(path: Path, root: Path) -> None:
    """Compare a file under ``root`` with ``root/SHA256SUMS`` (once per process); mismatch is an error."""
    path = path.resolve()
    if path in _VERIFIED:
        return
    rel = str(path.relative_to(root.resolve()))
    expected = _checksums(root).get(rel)
    if expected is None:
        _VERIFIED[path] = "unlisted"
        return
    got = sha256_file(path)
    if got != expected:
        raise DataError(
            f"{path}: sha256 {got} differs from {expected} in {root / 'SHA256SUMS'}. The raw data was changed; "
            "xlr treats raw data as immutable. Fix: restore the original file."
        )
    _VERIFIED[path] = got


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
        raise DataError(f"{path}: {what} not found under data root {root}. Fix: add the file, or drop the language from the params.")
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
            rows.append({"instruction_id": iid, "lang": lang, "instruction": text[iid], "instruction_en": pivot_text[iid], "index": offset + k})
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
        prompts[rid] = {"id": rid, "lang": lang, "dataset": row.get("dataset", ""), "instruction": _require(row, "instruction", ppath, f"id {rid}")}
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
    prompts = {int(r["id"]): r["instruction"] for r in _read_json_list(_file(root, f"{XAE_PROMPTS}/{lang}.json", f"X-AlpacaEval prompts for '{lang}'"))}
    rows = _read_json_list(opath)
    has_ids = all("id" in r for r in rows)
    order = sorted(prompts)
    if not has_ids and len(rows) != len(order):
        raise DataError(f"{opath}: {len(rows)} outputs without 'id' but {len(order)} prompts; cannot join by row order.")
    out: dict[int, str] = {}
    for k, r in enumerate(rows):
        rid = int(r["id"]) if has_ids else order[k]
        if rid not in prompts:
            raise DataError(f"{opath}: output id {rid} (record {k}) has no X-AlpacaEval prompt. Fix: the file must answer the shipped prompts.")
        if r.get("instruction", "").strip() != prompts[rid].strip():
            raise DataError(f"{opath} record {k} (id {rid}): instruction differs from the prompt file's: {r.get('instruction', '')[:60]!r} vs "
                            f"{prompts[rid][:60]!r}. Fix: the outputs must follow the prompt file's order and text.")
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


def load_english_preferences(source: str = "ultrafeedback", split: str = "train", data_dir: str | Path | None = None, report: LoadReport | None = None):
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
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "messages": [{"role": "user", "content": prompt}], "source": source,
                         "tie": margin == 0.0, "score_margin": margin})
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
            rows.append({"prompt": prompt, "chosen": c, "rejected": rj, "messages": hh_to_messages(prompt), "source": source, "tie": False, "score_margin": None})
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
            return {"prompt": prompt, "chosen": to_text(r["chosen"]), "rejected": to_text(r["rejected"]), "messages": [{"role": "user", "content": prompt}],
                    "source": source, "tie": margin == 0.0, "score_margin": margin}

        return ds.map(convert, with_indices=True, remove_columns=[c for c in ds.column_names if c not in ("prompt", "chosen", "rejected")])
    rows = [dict(zip(("prompt", "chosen", "rejected"), p, strict=True)) for p in (split_hh_dialogue(r["chosen"], r["rejected"]) for r in ds) if p]
    return datasets.Dataset.from_list([{**r, "messages": hh_to_messages(r["prompt"]), "source": source, "tie": False, "score_margin": None} for r in rows])


def _score_margin(meta: dict[str, Any], where: Any, line: int) -> float | None:
    """score_chosen - score_rejected from a pair's rating fields; None where the pair has none (never a guess)."""
    if "score_chosen" not in meta and "score_rejected" not in meta:
        return None
    try:
        return float(meta["score_chosen"]) - float(meta["score_rejected"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where} (line {line}): fields 'score_chosen' and 'score_rejected' must both be numbers "
                        f"(got {meta.get('score_chosen')!r}, {meta.get('score_rejected')!r}). Fix: correct them, or remove both.") from None


# ----------------------------------------------------------------------------------------------------------------
# data check (xlr data check)


def check_data(data_dir: str | Path | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """Inspect every data file found; return (root, rows) with one row per file: kind, lang, rows, checksum,
    problems. Problems are reported, not raised, so one bad file does not hide the others."""
    root = _root(data_dir)
    sums = _checksums(root)
    out: list[dict[str, Any]] = []

    def add(kind: str, path: Path, lang: str, n: int | None, problems: list[str]) -> None:
        rel = str(path.relative_to(root))
        if rel in sums:
            checksum = "ok" if sha256_file(path) == sums[rel] else "MISMATCH"
            if checksum != "ok":
                problems.append("sha256 differs from SHA256SUMS")
        else:
            checksum = "unlisted"
        out.append({"kind": kind, "file": rel, "lang": lang, "rows": n, "sha256": checksum, "problems": "; ".join(problems) or "-"})

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
                row["problems"] = f"not a prefix of {PIVOT} by instruction_id ({extra} ids without English)" if extra else "same ids as en, other order"
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
                add("english-preferences", path, "en", n, [f"{skipped} skipped when loaded: no shared prompt, or empty/identical responses"] if skipped else [])
            except DataError as e:
                add("english-preferences", path, "en", None, [str(e)])
    return root, out
