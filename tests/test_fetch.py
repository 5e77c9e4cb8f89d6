"""``xlr data fetch`` against a loopback mirror: GitHub raw and hub layouts, hashes, resume, atomic writes, the CLI.

Nothing leaves the machine: the server listens on 127.0.0.1 and the hub tests point HF_ENDPOINT at it (and lift the
suite's HF_HUB_OFFLINE for themselves only)."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from xlr import fetch as F
from xlr.data_sources import Source

OWNER_REPO, COMMIT = "someone/data-repo", "1" * 40
HUB_REPO, HUB_REV = "org/hub-ds", "2" * 40
SECRET = "hf_FAKEtokenNEVERinLOGS1234567890"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class Mirror:
    """Files by URL path, what was requested, and the faults to inject."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.drop: set[str] = set()  # first GET: announce the full Content-Length, send half, close
        self.fail_once: set[str] = set()  # first request: 503
        self.fail_all = False
        self.ignore_range = False
        self.lock = threading.Lock()

    def gets(self, path_part: str) -> list[dict[str, str]]:
        return [h for m, p, h in self.seen if m == "GET" and path_part in p]


def _handler(m: Mirror) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _serve(self, body: bool) -> None:
            path = unquote(self.path)
            hub = "/resolve/" in path
            with m.lock:
                m.seen.append((self.command, path, {k.lower(): v for k, v in self.headers.items()}))
                if m.fail_all or path in m.fail_once:
                    m.fail_once.discard(path)
                    return self._empty(503 if not m.fail_all else 500)
                drop = body and path in m.drop
                m.drop.discard(path) if drop else None
            data = m.files.get(path)
            if data is None:
                return self._empty(404, {"X-Error-Code": "EntryNotFound"} if hub else None)
            start, status, extra = 0, 200, {}
            rng = self.headers.get("Range")
            if body and rng and not m.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    return self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                status, extra = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            chunk = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            if hub:  # what hf_hub_download reads from its HEAD: the commit, an ETag (blob name) and the size
                self.send_header("ETag", f'"{m.etags.get(path) or _sha(data)}"')
                self.send_header("X-Repo-Commit", path.split("/resolve/")[1].split("/")[0])
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            if not body:
                return
            if drop:
                self.wfile.write(chunk[: len(chunk) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(chunk)

    return H


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    m = Mirror()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(m))
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    m.base = f"http://127.0.0.1:{srv.server_port}"
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import: lift it for this test only
    monkeypatch.setenv("HF_ENDPOINT", m.base)
    monkeypatch.setenv("HF_TOKEN", SECRET)  # a fake token: never sends a real one, and must never be printed
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("XLR_CACHE", str(tmp_path / "xlr-cache"))
    monkeypatch.delenv("XLR_GITHUB_BASE", raising=False)
    monkeypatch.setattr(F, "BACKOFF", 0.0)
    yield m
    srv.shutdown()
    srv.server_close()


PLAIN = b"".join(b'{"id": %d, "instruction": "row %d"}\n' % (i, i) for i in range(6000))  # ~230 KB: several chunks
LINES = b"".join(b'{"prompt": "p%d", "chosen": "c", "rejected": "r"}\n' % i for i in range(500))
MEMBERS = {"test_sets/x.csv": b"prompt,language\nhello,en\n" * 50, "test_sets/y.csv": b"prompt,language\nhola,es\n" * 50}
HUBFILE = b"instruction,difficulty\n" + b"".join(b"q%d,%d\n" % (i, i % 7) for i in range(400))


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in MEMBERS.items():
            z.writestr(name, data)
    return buf.getvalue()


ZIP = _zip()


def _gh(target, group, path, data, **kw) -> Source:
    return Source(target=target, group=group, kind="github", repo=OWNER_REPO, revision=COMMIT, path=path, sha256=_sha(data), **kw)


SOURCES = [
    _gh("grp-a/plain.json", "grp-a", "data/plain.json", PLAIN),
    _gh("grp-a/lines.jsonl.gz", "grp-a", "data/lines.jsonl", LINES, transform="gzip"),
    *(_gh(f"grp-b/{m}", "grp-b", "test_sets.zip", ZIP, transform=f"zip-member:{m}", target_sha256=_sha(d)) for m, d in MEMBERS.items()),
    Source(
        target="grp-hub/difficulty.csv",
        group="grp-hub",
        kind="hub",
        repo=HUB_REPO,
        revision=HUB_REV,
        path="sub/difficulty.csv",
        sha256=_sha(HUBFILE),
    ),
]
GH = f"/{OWNER_REPO}/{COMMIT}"
HUB = f"/datasets/{HUB_REPO}/resolve/{HUB_REV}/sub/difficulty.csv"


def _serve_all(m: Mirror) -> None:
    m.files.update({f"{GH}/data/plain.json": PLAIN, f"{GH}/data/lines.jsonl": LINES, f"{GH}/test_sets.zip": ZIP, HUB: HUBFILE})


def _expected(target: str) -> bytes:
    return {"grp-a/plain.json": PLAIN, "grp-hub/difficulty.csv": HUBFILE, **{f"grp-b/{k}": v for k, v in MEMBERS.items()}}[target]


def _leftovers(to: Path) -> list[str]:
    return sorted(str(p.relative_to(to)) for p in to.rglob("*") if p.name.endswith((".part", ".tmp")) or p.name == ".downloads")


def test_fetch_verifies_every_kind_then_downloads_nothing(mirror, tmp_path):
    _serve_all(mirror)
    to = tmp_path / "data"
    rep = F.fetch(SOURCES, to, github_base=mirror.base, progress=False)
    assert rep["ok"] and rep["counts"] == {"fetched": 5, "present": 0, "failed": 0, "total": 5}, rep["failed"]
    for s in SOURCES:
        got = (to / s.target).read_bytes()
        assert (gzip.decompress(got) == LINES) if s.transform == "gzip" else got == _expected(s.target)
    assert len(mirror.gets("test_sets.zip")) == 1  # one download for both members
    assert [m for m, p, _ in mirror.seen if "difficulty" in p] == ["HEAD", "GET"]  # the hub's requests
    # SHA256SUMS in the shared copy's format, and xlr.data accepts the folder as a data root
    lines = (to / "SHA256SUMS").read_text().splitlines()
    names = [ln.split("  ./", 1)[1] for ln in lines]
    assert names == sorted(names) == sorted(s.target for s in SOURCES)
    from xlr.data import _checksums, verify_checksum

    assert set(_checksums(to)) == {s.target for s in SOURCES}
    for s in SOURCES:
        verify_checksum(to / s.target, to)
    assert _leftovers(to) == []
    gz = (to / "grp-a/lines.jsonl.gz").read_bytes()
    assert gz[4:8] == b"\0\0\0\0" and gz[3] & 0x08 == 0  # mtime 0, no file name: the same bytes on every machine

    mirror.seen.clear()
    again = F.fetch(SOURCES, to, github_base=mirror.base, progress=False)
    assert again["counts"] == {"fetched": 0, "present": 5, "failed": 0, "total": 5} and mirror.seen == []


def test_corrupt_download_is_refused_and_nothing_is_written(mirror, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    _serve_all(mirror)
    bad = bytearray(PLAIN)
    bad[1000] ^= 1
    mirror.files[f"{GH}/data/plain.json"] = bytes(bad)
    mirror.files[HUB] = HUBFILE.replace(b"q1,", b"qX,")
    mirror.etags[HUB] = "same-etag"  # as if the hub served other bytes under the same name: the cached copy must go
    to = tmp_path / "data"
    rep = F.fetch(SOURCES, to, github_base=mirror.base, progress=False)
    assert rep["counts"]["failed"] == 2 and rep["counts"]["fetched"] == 3
    by = {f["target"]: f["reason"] for f in rep["failed"]}
    r = by["grp-a/plain.json"]
    assert f"{mirror.base}{GH}/data/plain.json" in r and _sha(PLAIN) in r and _sha(bytes(bad)) in r
    assert "delete" in r and "rerun" in r and "changed upstream" in r
    h = by["grp-hub/difficulty.csv"]
    assert HUB in h and _sha(HUBFILE) in h and "huggingface_hub's cache" in h
    for t in by:
        assert not (to / t).exists()
    assert set(F.read_sums(to)) == {s.target for s in SOURCES} - set(by)
    assert _leftovers(to) == []
    out = capsys.readouterr()
    assert SECRET not in caplog.text + out.out + out.err + repr(rep)

    # The source fixed: the next run fetches only the two (the hub's bad copy was dropped from its cache).
    _serve_all(mirror)
    mirror.seen.clear()
    rep = F.fetch(SOURCES, to, github_base=mirror.base, progress=False)
    assert rep["ok"] and rep["counts"]["fetched"] == 2 and rep["counts"]["present"] == 3
    assert (to / "grp-hub/difficulty.csv").read_bytes() == HUBFILE


def test_dropped_connection_is_resumed_with_range(mirror, tmp_path):
    _serve_all(mirror)
    mirror.drop |= {f"{GH}/data/plain.json", HUB}
    to = tmp_path / "data"
    rep = F.fetch(SOURCES, to, only=["grp-a", "grp-hub"], github_base=mirror.base, progress=False)
    assert rep["ok"], rep["failed"]
    gets = mirror.gets("plain.json")
    assert len(gets) == 2 and "range" not in gets[0]
    resumed_at = int(gets[1]["range"].removeprefix("bytes=").rstrip("-"))  # resumed from what the cut left
    assert 0 < resumed_at <= len(PLAIN) // 2
    assert (to / "grp-a/plain.json").read_bytes() == PLAIN
    # huggingface_hub retries a cut itself (with Range from what it kept: its reads are 10 MB, so here from 0)
    assert len(mirror.gets("difficulty.csv")) == 2
    assert (to / "grp-hub/difficulty.csv").read_bytes() == HUBFILE


def test_part_from_an_earlier_run_is_resumed_or_restarted(mirror, tmp_path):
    _serve_all(mirror)
    to = tmp_path / "data"
    part = to / "grp-a/plain.json.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PLAIN[:1234])
    assert F.fetch(SOURCES, to, only=["grp-a"], github_base=mirror.base, progress=False)["ok"]
    assert mirror.gets("plain.json")[0]["range"] == "bytes=1234-"
    assert (to / "grp-a/plain.json").read_bytes() == PLAIN and not part.exists()
    # a server that ignores Range answers 200: the part is started over, not appended to
    (to / "grp-a/plain.json").unlink()
    part.write_bytes(b"garbage" * 10)
    mirror.ignore_range = True
    assert F.fetch(SOURCES, to, only=["grp-a"], github_base=mirror.base, progress=False)["ok"]
    assert (to / "grp-a/plain.json").read_bytes() == PLAIN


def test_transient_503_is_retried(mirror, tmp_path):
    _serve_all(mirror)
    mirror.fail_once.add(f"{GH}/data/plain.json")
    rep = F.fetch(SOURCES, tmp_path / "data", only=["grp-a"], github_base=mirror.base, progress=False)
    assert rep["ok"] and len(mirror.gets("plain.json")) == 2


def test_404_names_the_url_and_the_fix(mirror, tmp_path):
    to = tmp_path / "data"
    rep = F.fetch(SOURCES, to, github_base=mirror.base, progress=False, retries=1)  # nothing served
    assert rep["counts"]["failed"] == 5
    by = {f["target"]: f["reason"] for f in rep["failed"]}
    r = by["grp-a/plain.json"]
    assert f"{mirror.base}{GH}/data/plain.json" in r and "404" in r and "Fix:" in r and _sha(PLAIN) in r
    assert len(mirror.gets("test_sets.zip")) == 1  # a broken archive is tried once, not once per member
    assert "its archive" in by["grp-b/test_sets/y.csv"] and "grp-b/test_sets/x.csv" in by["grp-b/test_sets/y.csv"]
    h = by["grp-hub/difficulty.csv"]
    assert HUB in h and "Fix:" in h and "not on the hub" in h
    assert SECRET not in repr(rep)
    assert not to.exists()  # not even an empty folder, which xlr.paths would take for a data root


def test_unreachable_server_is_a_clear_failure(mirror, tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    rep = F.fetch(SOURCES, tmp_path / "data", only=["grp-a"], github_base=dead, progress=False, retries=1)
    r = rep["failed"][0]["reason"]
    assert rep["counts"]["failed"] == 2 and f"{dead}{GH}/data/plain.json" in r and "check the network" in r
    # the host is unreachable: the second file is not tried (an offline machine would otherwise retry 172 files), and says why
    second = rep["failed"][1]
    assert "not tried" in second["reason"] and rep["failed"][0]["target"] in second["reason"] and "check the network" in second["reason"]


def test_only_selects_groups_and_unknown_is_an_error(mirror, tmp_path):
    _serve_all(mirror)
    rep = F.fetch(SOURCES, tmp_path / "data", only=["grp-b"], github_base=mirror.base, progress=False)
    assert rep["ok"] and sorted(rep["fetched"]) == [f"grp-b/{m}" for m in sorted(MEMBERS)]
    assert {p for _, p, _ in mirror.seen} == {f"{GH}/test_sets.zip"}
    with pytest.raises(F.FetchError, match=r"unknown data group\(s\): nope\. The groups are: grp-a, grp-b, grp-hub"):
        F.fetch(SOURCES, tmp_path / "data", only=["nope"], progress=False)


def test_redact_and_default_target(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert F.redact(f"Bearer {SECRET} at https://user:pw@example.org/x") == "Bearer *** at https://***@example.org/x"
    monkeypatch.setenv("XLR_CACHE", str(tmp_path / "c"))
    assert F.default_target() == tmp_path / "c" / "data"


def test_cli_exit_codes_and_if_missing(mirror, tmp_path, monkeypatch, capsys):
    from xlr import data_sources
    from xlr.cli import main

    monkeypatch.setattr(data_sources, "SOURCES", tuple(SOURCES))
    _serve_all(mirror)
    to = tmp_path / "data"
    assert main(["data", "fetch", "--to", str(to), "--github-base", mirror.base]) == 0
    out = capsys.readouterr().out
    assert "5 fetched" in out and "grp-b" in out

    # --if-missing with a data root that holds every target: nothing is asked of a server that fails everything
    monkeypatch.setenv("XLR_DATA_DIR", str(to))
    mirror.fail_all = True
    mirror.seen.clear()
    assert main(["data", "fetch", "--if-missing", "--github-base", mirror.base]) == 0
    assert mirror.seen == [] and "nothing fetched" in capsys.readouterr().out

    # --if-missing with a root that lacks a file: fetches into --to; failures give exit 1 and their reasons
    (to / "grp-a/plain.json").unlink()
    other = tmp_path / "other"
    assert main(["data", "fetch", "--if-missing", "--only", "grp-a", "--to", str(other), "--github-base", mirror.base]) == 1
    err = capsys.readouterr().err
    assert "FAILED grp-a/plain.json" in err and "HTTP 500" in err and SECRET not in err
    mirror.fail_all = False
    assert main(["data", "fetch", "--if-missing", "--only", "grp-a", "--to", str(other), "--github-base", mirror.base]) == 0
    assert (other / "grp-a/plain.json").read_bytes() == PLAIN

    assert main(["data", "fetch", "--only", "nope", "--to", str(other)]) == 2
    assert "grp-a, grp-b, grp-hub" in capsys.readouterr().err


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_the_real_table_fetched_from_a_mirror_of_the_public_files_loads_as_a_data_root(mirror, tmp_path, monkeypatch):
    """xlr's own SOURCES (real repos, commits, paths and hashes) for two groups, the public bytes served at their GitHub
    raw paths (the shared copy holds them unchanged; the gzipped annotations gunzipped back to the public file): the
    fetch verifies every file against the shipped hash, and xlr's loaders read the result as a data root."""
    import gzip

    from xlr import data
    from xlr.data_sources import SOURCES as REAL

    wanted = [s for s in REAL if s.group == "english-preferences" or s.target.endswith(("leaderboard.csv", "gpt4_gamed.json.gz"))]
    assert len(wanted) >= 5 and any(s.transform == "gzip" for s in wanted)
    for s in wanted:
        body = (SHARED / s.target).read_bytes()
        mirror.files[f"/{s.repo}/{s.revision}/{s.path}"] = gzip.decompress(body) if s.transform == "gzip" else body
    to = tmp_path / "fetched"
    rep = F.fetch(wanted, to, github_base=mirror.base, progress=False)
    assert rep["ok"] and rep["counts"]["fetched"] == len(wanted), rep["failed"]
    assert len(data.load_english_preferences("ultrafeedback", "train", to)) == len(
        data.load_english_preferences("ultrafeedback", "train", SHARED)
    )
    assert len(data.load_alpaca_leaderboard(to)) == len(data.load_alpaca_leaderboard(SHARED))
    gamed = next(s for s in wanted if s.transform == "gzip")
    assert gzip.decompress((to / gamed.target).read_bytes()) == gzip.decompress((SHARED / gamed.target).read_bytes())
