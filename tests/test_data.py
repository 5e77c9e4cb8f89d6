import gzip
import json
from pathlib import Path

import pytest
from conftest import write_jsonl

from xlr import data
from xlr.languages import LANGUAGE_NAMES, language_name
from xlr.paths import DataRootNotFound, data_root

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


def _jsonl(path):
    return [json.loads(x) for x in open(path, encoding="utf-8") if x.strip()]


def test_language_table_covers_required_codes():
    assert set("ar bn de en es fr it ja ko ru sw th zh".split()) <= set(LANGUAGE_NAMES)
    assert language_name("zh") == "Chinese" and language_name("yo", {"yo": "Yoruba"}) == "Yoruba"
    with pytest.raises(KeyError, match="languages.names"):
        language_name("yo")


@needs_shared
def test_train_prompts_aligned_with_english():
    ds = data.load_train_prompts(["en", "de", "zh"], n=7, offset=3, data_dir=SHARED)
    assert len(ds) == 21
    en = _jsonl(SHARED / "ultrafeedback-prompts/en.jsonl")
    de = _jsonl(SHARED / "ultrafeedback-prompts/de.jsonl")
    en_by_id = {r["instruction_id"]: r["instruction"] for r in en}
    de_rows = [r for r in ds if r["lang"] == "de"]
    assert [r["instruction_id"] for r in de_rows] == [r["instruction_id"] for r in de[3:10]]
    assert [r["instruction"] for r in de_rows] == [r["instruction"] for r in de[3:10]]
    assert all(r["instruction_en"] == en_by_id[r["instruction_id"]] for r in ds)
    assert [r["index"] for r in de_rows] == list(range(3, 10))


@needs_shared
def test_train_prompts_too_few_rows_is_an_error():
    with pytest.raises(data.DataError, match=r"bn.jsonl: 1000 prompts.*n_train_prompts"):
        data.load_train_prompts(["en", "bn"], n=3000, data_dir=SHARED)


def _fake_root(tmp_path, de_rows, en_rows=None):
    en_rows = en_rows or [{"instruction": f"English {i}", "instruction_id": f"id{i}"} for i in range(4)]
    write_jsonl(tmp_path / "ultrafeedback-prompts/en.jsonl", en_rows)
    write_jsonl(tmp_path / "ultrafeedback-prompts/de.jsonl", de_rows)
    return tmp_path


def test_misaligned_prompts_name_both_languages(tmp_path):
    root = _fake_root(tmp_path, [{"instruction": f"Deutsch {i}", "instruction_id": f"id{i}"} for i in (0, 1, 3, 2)])
    assert len(data.load_train_prompts(["en", "de"], 2, data_dir=root)) == 4  # same set in another order is fine
    with pytest.raises(data.DataError) as e:
        data.load_train_prompts(["en", "de"], 3, data_dir=root)
    msg = str(e.value)
    assert "id2" in msg and "en.jsonl" in msg and "de.jsonl" in msg and "'en'" in msg and "'de'" in msg


def test_duplicate_id_names_both_lines(tmp_path):
    root = _fake_root(
        tmp_path,
        [
            {"instruction": "a", "instruction_id": "id0"},
            {"instruction": "b", "instruction_id": "id1"},
            {"instruction": "c", "instruction_id": "id0"},
        ],
    )
    with pytest.raises(data.DataError, match=r"de.jsonl: duplicate instruction_id id0 on lines 1 and 3"):
        data.load_train_prompts(["de"], 1, data_dir=root)


def test_empty_instruction_and_bad_json(tmp_path):
    root = _fake_root(tmp_path, [{"instruction": "  ", "instruction_id": "id0"}])
    with pytest.raises(data.DataError, match=r"de.jsonl \(line 1, instruction_id id0\): field 'instruction' is empty"):
        data.load_train_prompts(["de"], 1, data_dir=root)
    (root / "ultrafeedback-prompts/de.jsonl").write_text('{"instruction": "x", "instruction_id": "id0"}\n{oops\n')
    with pytest.raises(data.DataError, match=r"de.jsonl:2: not valid JSON"):
        data.load_train_prompts(["de"], 1, data_dir=root)


def test_missing_language_file(tmp_path):
    root = _fake_root(tmp_path, [{"instruction": "a", "instruction_id": "id0"}])
    with pytest.raises(data.DataError, match=r"fr.jsonl: training prompts for language 'fr' not found"):
        data.load_train_prompts(["fr"], 1, data_dir=root)


@needs_shared
@pytest.mark.parametrize("lang", ["en", "zh", "sw"])
def test_xalpacaeval_join(lang):
    ds = data.load_xalpacaeval(lang, data_dir=SHARED)
    assert len(ds) == 805 and ds[0]["id"] == 1 and ds[804]["id"] == 805
    refs = json.load(open(SHARED / f"x-alpacaeval/references/gpt-4-turbo-2024-04-09/{lang}.json", encoding="utf-8"))
    by_id = {int(r["id"]): r for r in refs} if "id" in refs[0] else {k + 1: r for k, r in enumerate(refs)}
    for row in ds.select(range(0, 805, 97)):
        assert row["reference_output"] == by_id[row["id"]]["output"]
        assert row["instruction"].strip() == by_id[row["id"]]["instruction"].strip()


def test_subset_ids_are_seeded_and_shared():
    a, b = data.xalpacaeval_ids(50, seed=0), data.xalpacaeval_ids(50, seed=0)
    assert a == b and len(set(a)) == 50 and a == sorted(a) and all(1 <= i <= 805 for i in a)
    assert data.xalpacaeval_ids(50, seed=1) != a
    assert data.xalpacaeval_ids(None) == list(range(1, 806))


def test_reference_instruction_mismatch_is_an_error(tmp_path):
    (tmp_path / "x-alpacaeval/prompts").mkdir(parents=True)
    (tmp_path / "x-alpacaeval/references/g").mkdir(parents=True)
    (tmp_path / "x-alpacaeval/prompts/en.json").write_text(
        json.dumps([{"id": 1, "dataset": "d", "instruction": "A"}, {"id": 2, "dataset": "d", "instruction": "B"}])
    )
    (tmp_path / "x-alpacaeval/references/g/en.json").write_text(
        json.dumps([{"instruction": "B", "output": "x"}, {"instruction": "A", "output": "y"}])
    )
    with pytest.raises(data.DataError, match=r"en.json record 0 \(id 1\): instruction differs.*row order"):
        data.load_xalpacaeval("en", reference_generator="g", data_dir=tmp_path)


@needs_shared
def test_ultrafeedback_pairs_counted_not_dropped():
    rep = data.LoadReport("ultrafeedback")
    ds = data.load_english_preferences("ultrafeedback", "train", data_dir=SHARED, report=rep)
    raw = _jsonl(SHARED / "english-preferences/ultrafeedback/train.jsonl")
    bad = sum(1 for r in raw if not r["chosen"].strip() or not r["rejected"].strip() or r["chosen"].strip() == r["rejected"].strip())
    assert len(raw) == 1000 and len(ds) == 1000 - bad and sum(rep.skipped.values()) == bad
    assert ds[0]["prompt"] == raw[0]["prompt"] and ds[0]["messages"] == [{"role": "user", "content": raw[0]["prompt"]}]


@needs_shared
def test_ultrafeedback_score_margin_and_ties_from_the_ratings():
    ds = data.load_english_preferences("ultrafeedback", "eval", data_dir=SHARED)
    raw = [
        r
        for r in _jsonl(SHARED / "english-preferences/ultrafeedback/eval.jsonl")
        if r["chosen"].strip() and r["rejected"].strip() and r["chosen"].strip() != r["rejected"].strip()
    ]
    want = [r["metadata"]["score_chosen"] - r["metadata"]["score_rejected"] for r in raw]
    assert list(ds["score_margin"]) == want and list(ds["tie"]) == [m == 0 for m in want] and 0 < sum(ds["tie"]) < len(want)
    hh = data.load_english_preferences("hh-rlhf-helpful", "eval", data_dir=SHARED)
    assert set(hh["score_margin"]) == {None}


def test_ultrafeedback_bad_score_is_an_error_naming_file_and_field(tmp_path):
    d = tmp_path / "english-preferences/ultrafeedback"
    d.mkdir(parents=True)
    (d / "train.jsonl").write_text(
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "metadata": {"score_chosen": "high", "score_rejected": 2}}) + "\n"
    )
    with pytest.raises(
        data.DataError, match=r"train.jsonl \(line 1\): fields 'score_chosen' and 'score_rejected' must both be numbers.*Fix"
    ):
        data.load_english_preferences("ultrafeedback", "train", data_dir=tmp_path)


def test_hh_prompt_is_shared_prefix_to_last_assistant():
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did..."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No."
    prompt, c, r = data.split_hh_dialogue(chosen, rejected)
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant:"
    assert (c, r) == ("Why did...", "No.")
    assert data.hh_to_messages(prompt) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke"},
    ]
    assert data.split_hh_dialogue(chosen, "\n\nHuman: Other\n\nAssistant: x") is None


@needs_shared
def test_hh_split_partition_is_complete():
    raw = [json.loads(x) for x in gzip.open(SHARED / "english-preferences/hh-rlhf/helpful-base_test.jsonl.gz", "rt")]
    reps = {s: data.LoadReport("h") for s in ("train", "eval")}
    sizes = {s: len(data.load_english_preferences("hh-rlhf-helpful", s, data_dir=SHARED, report=reps[s])) for s in reps}
    assert sizes["train"] + sizes["eval"] + sum(sum(r.skipped.values()) for r in reps.values()) == len(raw)


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("XLR_DATA_DIR", raising=False)
    with pytest.raises(DataRootNotFound) as e:
        data_root(tmp_path / "missing")
    assert "missing" in str(e.value) and "XLR_DATA_DIR" in str(e.value)
    monkeypatch.setenv("XLR_DATA_DIR", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    monkeypatch.setenv("XLR_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataRootNotFound, match="env XLR_DATA_DIR"):
        data_root()


def test_checksum_mismatch_is_refused(tmp_path):
    root = _fake_root(tmp_path, [{"instruction": "a", "instruction_id": "id0"}])
    (root / "SHA256SUMS").write_text("0" * 64 + "  ./ultrafeedback-prompts/de.jsonl\n")
    with pytest.raises(data.DataError, match=r"de.jsonl: sha256 .* differs .*SHA256SUMS"):
        data.load_train_prompts(["de"], 1, data_dir=root)


@needs_shared
def test_check_data_lists_every_shipped_file():
    root, rows = data.check_data(SHARED)
    listed = {r["file"] for r in rows}
    shipped = {line.split()[1].removeprefix("./") for line in (SHARED / "SHA256SUMS").read_text().splitlines() if line.strip()}
    assert listed == shipped  # nothing missing (no row of the data-sources table without its file)
    assert all(r["sha256"] == "ok" and r["fix"] == "-" for r in rows)
    counts = {(r["kind"], r["lang"]): r["rows"] for r in rows if r["kind"] == "train-prompts"}
    assert counts[("train-prompts", "en")] == 5000 and counts[("train-prompts", "bn")] == 1000 and counts[("train-prompts", "de")] == 3000


@needs_shared
def test_xalpacaeval_outputs_join_by_id_and_match_the_files():
    assert data.xalpacaeval_output_generators(SHARED) == ["gpt-3.5-turbo-0125", "gpt-4-0613", "gpt-4o-mini"]
    for lang in ("en", "de"):
        out = data.load_xalpacaeval_outputs("gpt-4o-mini", lang, data_dir=SHARED)
        raw = json.load(open(SHARED / f"x-alpacaeval/outputs/gpt-4o-mini/{lang}.json", encoding="utf-8"))
        assert len(out) == 805 and out[int(raw[10]["id"])] == raw[10]["output"]
    sub = data.load_xalpacaeval_outputs("gpt-3.5-turbo-0125", "ru", ids=[5, 3], data_dir=SHARED)
    assert list(sub) == [5, 3]


def test_xalpacaeval_outputs_bad_files_name_the_problem(tmp_path):
    (tmp_path / "x-alpacaeval/prompts").mkdir(parents=True)
    (tmp_path / "x-alpacaeval/outputs/g").mkdir(parents=True)
    (tmp_path / "x-alpacaeval/prompts/de.json").write_text(
        json.dumps([{"id": 1, "dataset": "d", "instruction": "A"}, {"id": 2, "dataset": "d", "instruction": "B"}])
    )
    out = tmp_path / "x-alpacaeval/outputs/g/de.json"
    out.write_text(json.dumps([{"id": 1, "instruction": "A", "output": "x"}, {"id": 2, "instruction": "Z", "output": "y"}]))
    with pytest.raises(data.DataError, match=r"de.json record 1 \(id 2\): instruction differs"):
        data.load_xalpacaeval_outputs("g", "de", data_dir=tmp_path)
    out.write_text(json.dumps([{"id": 1, "instruction": "A", "output": "x"}, {"id": 2, "instruction": "B", "output": " "}]))
    with pytest.raises(data.DataError, match=r"field 'output' is empty"):
        data.load_xalpacaeval_outputs("g", "de", data_dir=tmp_path)
    out.write_text(json.dumps([{"id": 1, "instruction": "A", "output": "x"}]))
    with pytest.raises(data.DataError, match=r"no output for id\(s\) \[2\]"):
        data.load_xalpacaeval_outputs("g", "de", data_dir=tmp_path)
    with pytest.raises(data.DataError, match=r"g's X-AlpacaEval answers for 'fr' not found"):
        data.load_xalpacaeval_outputs("g", "fr", data_dir=tmp_path)


@needs_shared
def test_paper_table2_rows_average_to_the_papers_avg():
    t = data.load_paper_table2(SHARED)
    assert {"model", "lang", "lc", "wr"} <= set(t.columns)
    for _model, g in t.groupby("model"):
        langs = g[g["lang"] != "avg"]
        avg = g[g["lang"] == "avg"]
        if len(avg) and len(langs) == 5:
            assert abs(langs["lc"].mean() - avg["lc"].iloc[0]) < 0.02 and abs(langs["wr"].mean() - avg["wr"].iloc[0]) < 0.02
    row = t[(t["model"].str.contains("gpt-4o-mini")) & (t["lang"] == "de")].iloc[0]
    assert (row["lc"], row["wr"]) == (48.54, 44.20)  # the paper's Table 2, as quoted in the issue


def test_paper_table2_bad_number_names_row_and_field(tmp_path):
    (tmp_path / "x-alpacaeval").mkdir()
    (tmp_path / "x-alpacaeval/paper-table2.csv").write_text("model,lang,lc,wr\nm,en,1.0,2.0\nm,de,x,2.0\n")
    with pytest.raises(data.DataError, match=r"row 3: field 'lc' is not a number"):
        data.load_paper_table2(tmp_path)


def test_data_root_search_ends_with_the_fetch_cache(tmp_path, monkeypatch):
    from xlr import paths

    monkeypatch.delenv("XLR_DATA_DIR", raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "a" / "checkout")
    (tmp_path / "b" / "cwd").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "b" / "cwd")
    monkeypatch.setenv("XLR_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "data"
    assert paths.data_cache_dir() == cache and not (tmp_path / "cache").exists()  # named, not created
    with pytest.raises(DataRootNotFound) as e:
        data_root()
    msg = str(e.value)
    places = [
        "params data.data_dir",
        "env XLR_DATA_DIR",
        str(tmp_path / "a" / "shared" / "data"),
        str(tmp_path / "b" / "shared" / "data"),
        str(cache),
    ]
    assert all(p in msg for p in places) and [msg.index(p) for p in places] == sorted(msg.index(p) for p in places), msg
    assert "Fix: run `xlr data fetch`" in msg and not (tmp_path / "cache").exists()
    cache.mkdir(parents=True)
    assert data_root() == cache
    (tmp_path / "b" / "shared" / "data").mkdir(parents=True)  # ../shared/data beside the cwd comes before the cache
    assert data_root() == tmp_path / "b" / "shared" / "data"
    (tmp_path / "a" / "shared" / "data").mkdir(parents=True)  # and beside the checkout before that
    assert data_root() == tmp_path / "a" / "shared" / "data"
    monkeypatch.setenv("XLR_DATA_DIR", str(cache))
    assert data_root() == cache and data_root(tmp_path / "b") == tmp_path / "b"
    monkeypatch.delenv("XLR_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.data_cache_dir() == tmp_path / "home" / ".cache" / "xlr" / "data"


def _sha(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _linked_root(tmp_path, name, files):
    """A data root whose files are links to files of a store outside it, with a SHA256SUMS of the stored files."""
    store, root = tmp_path / f"{name}-store", tmp_path / name
    for rel, rows in files.items():
        write_jsonl(store / rel, rows)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(store / rel)
    (root / "SHA256SUMS").write_text("".join(f"{_sha(store / rel)}  ./{rel}\n" for rel in files))
    return store, root


def _prompts(lang, n=3):
    return [{"instruction": f"{lang} {i}", "instruction_id": f"id{i}"} for i in range(n)]


def test_a_root_of_links_and_a_linked_root_load(tmp_path):
    files = {"ultrafeedback-prompts/en.jsonl": _prompts("en"), "ultrafeedback-prompts/de.jsonl": _prompts("de")}
    store, root = _linked_root(tmp_path, "links", files)
    ds = data.load_train_prompts(["en", "de"], 2, data_dir=root)
    assert [r["instruction"] for r in ds if r["lang"] == "de"] == ["de 0", "de 1"]
    (tmp_path / "rootlink").symlink_to(root)
    assert data_root(tmp_path / "rootlink") == tmp_path / "rootlink"  # the path given, not where it leads
    assert len(data.load_train_prompts(["de"], 3, data_dir=tmp_path / "rootlink")) == 3
    data.verify_checksum(root / "ultrafeedback-prompts/de.jsonl", tmp_path / "rootlink")  # a path through the real folder
    _, rows = data.check_data(tmp_path / "rootlink")
    assert {r["file"]: r["sha256"] for r in rows if r["kind"] == "train-prompts"} == {rel: "ok" for rel in files}
    (root / "elsewhere.jsonl").write_text("")
    with pytest.raises(data.DataError, match=r"elsewhere.jsonl: not under the data root .*Fix"):
        data.verify_checksum(root / "elsewhere.jsonl", store)


def test_a_link_to_an_edited_file_names_link_target_hashes_and_fix(tmp_path):
    files = {"ultrafeedback-prompts/en.jsonl": _prompts("en"), "ultrafeedback-prompts/de.jsonl": _prompts("de")}
    store, root = _linked_root(tmp_path, "edited", files)
    expected = _sha(store / "ultrafeedback-prompts/de.jsonl")
    write_jsonl(store / "ultrafeedback-prompts/de.jsonl", _prompts("de", 2))  # the shared copy was changed
    actual = _sha(store / "ultrafeedback-prompts/de.jsonl")
    with pytest.raises(data.DataError) as e:
        data.load_train_prompts(["de"], 1, data_dir=root)
    msg = str(e.value)
    assert f"{root / 'ultrafeedback-prompts/de.jsonl'} (a link to {store / 'ultrafeedback-prompts/de.jsonl'})" in msg
    assert f"sha256 {actual} differs from {expected}" in msg and str(root / "SHA256SUMS") in msg
    assert f"Fix: restore the original file (`xlr data fetch --only ultrafeedback-prompts --to {root}` downloads the public file)" in msg
    _, rows = data.check_data(root)
    row = next(r for r in rows if r["file"] == "ultrafeedback-prompts/de.jsonl")
    assert row["sha256"] == "MISMATCH" and row["rows"] is None and actual in row["problems"] and str(store) in row["problems"]
    assert row["problems"].count(expected) == 1 and f"xlr data fetch --only ultrafeedback-prompts --to {root}" in row["fix"]


def test_check_data_says_how_to_fetch_what_is_missing(tmp_path, monkeypatch):
    from xlr.data_sources import SOURCES

    files = {"ultrafeedback-prompts/en.jsonl": _prompts("en")}
    _, root = _linked_root(tmp_path, "data", files)
    monkeypatch.setenv("XLR_CACHE", str(tmp_path))  # the root is the fetch cache: the plain command fills it
    assert data.fetch_command("alpaca-eval", root) == "xlr data fetch --only alpaca-eval"
    assert data.fetch_command("alpaca-eval", tmp_path / "my data") == f"xlr data fetch --only alpaca-eval --to '{tmp_path / 'my data'}'"
    (root / "x-alpacaeval/prompts").mkdir(parents=True)
    (root / "x-alpacaeval/prompts/fr.json").symlink_to(tmp_path / "gone.json")  # a broken link
    _, rows = data.check_data(root)
    by_file = {r["file"]: r for r in rows}
    assert all(set(r) == {"kind", "file", "lang", "rows", "sha256", "problems", "fix"} for r in rows)
    assert by_file["ultrafeedback-prompts/en.jsonl"]["sha256"] == "ok" and by_file["ultrafeedback-prompts/en.jsonl"]["fix"] == "-"
    de = by_file["ultrafeedback-prompts/de.jsonl"]
    assert (de["kind"], de["sha256"], de["rows"], de["fix"]) == ("missing", "missing", None, "xlr data fetch --only ultrafeedback-prompts")
    fr = by_file["x-alpacaeval/prompts/fr.json"]
    assert fr["rows"] is None and "does not exist" in fr["problems"] and "xlr data fetch --only x-alpacaeval" in fr["fix"]
    assert by_file["x-alpacaeval/prompts/en.json"]["fix"] == "xlr data fetch --only x-alpacaeval"
    n_lcb = sum(s.group == "language-confusion" for s in SOURCES)
    whole = by_file[f"language-confusion/ (all {n_lcb} files)"]
    assert whole["fix"] == "xlr data fetch --only language-confusion" and whole["rows"] is None
    table2 = by_file["x-alpacaeval/paper-table2.csv"]
    assert table2["kind"] == "not fetchable" and "cannot be fetched" in table2["fix"] and "../shared/data" in table2["fix"]
    # every file of the table is accounted for: its own row (present or missing), or its group's whole-group row
    n = {g: sum(s.group == g for s in SOURCES) for g in {s.group for s in SOURCES}}
    assert all(s.target in by_file or f"{s.group}/ (all {n[s.group]} files)" in by_file for s in SOURCES)


@needs_shared
def test_a_root_of_links_to_the_shared_files(tmp_path):
    root = tmp_path / "links"
    for rel in ("x-alpacaeval/prompts/de.json", "x-alpacaeval/references/gpt-4-turbo-2024-04-09/de.json", "SHA256SUMS"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(SHARED / rel)
    ds = data.load_xalpacaeval("de", data_dir=root)
    first = json.load(open(SHARED / "x-alpacaeval/prompts/de.json", encoding="utf-8"))[0]
    assert len(ds) == 805 and ds[0]["instruction"] == first["instruction"]
    _, rows = data.check_data(root)
    assert {r["file"]: r["sha256"] for r in rows if r["sha256"] != "missing"} == {
        "x-alpacaeval/prompts/de.json": "ok",
        "x-alpacaeval/references/gpt-4-turbo-2024-04-09/de.json": "ok",
    }
