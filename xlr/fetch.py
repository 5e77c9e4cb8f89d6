"""``xlr data fetch``: build a data root from the public sources of :mod:`xlr.data_sources`, every file checked by sha256.

For each :class:`~xlr.data_sources.Source`: a target that is already there with the right hash is skipped (counted);
otherwise the public file is downloaded (GitHub raw files with ``requests`` and urllib3 ``Retry``, resumed with a
``Range`` request from ``<target>.part`` after a cut; hub files with ``huggingface_hub.hf_hub_download``, which resumes
itself, into ``$XLR_CACHE/hf``), its sha256 checked against the table BEFORE anything is written under the target
name, transformed ("none", "gzip", "zip-member:<m>") and written atomically (temporary name in the same folder, then
``os.replace``). ``<to>/SHA256SUMS`` (``<hex>  ./<target>``, sorted, as ``../shared/data/SHA256SUMS``) is updated after
each written file, so :mod:`xlr.data` verifies the result as it verifies any data root. Secrets (an HF token, URL
credentials) never appear in messages or logs.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from xlr.data import DataError
from xlr.data_sources import Source
from xlr.errors import XlrError
from xlr.files import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

GITHUB_BASE = "https://raw.githubusercontent.com"
BACKOFF = 0.5  # seconds before the first retry, doubled each time (urllib3 Retry and the resume loop; tests set 0)
CHUNK = 1 << 20  # file copies
NET_CHUNK = 1 << 16  # network reads: a read cut short loses its chunk, so resume points are at most this far behind
TIMEOUT = (30, 120)  # connect, read (seconds)
STATUS_RETRY = (429, 500, 502, 503, 504)
_ZIP_PREFIX = "zip-member:"


class FetchError(DataError):
    """A request that cannot be served (unknown group, unsafe target); per-file download failures are reported instead."""


class _Unreachable(XlrError):
    """The host could not be reached at all (after urllib3's retries): the other files from it are not tried."""


class _Failed(XlrError):
    """One file could not be fetched; the message is the full reason (file, URL, hashes, fix)."""


def default_target() -> Path:
    """Where ``xlr data fetch`` writes by default: ``$XLR_CACHE/data`` (``~/.cache/xlr/data``), the last data root searched."""
    from xlr import paths

    if hasattr(paths, "data_cache_dir"):
        return Path(paths.data_cache_dir())
    return Path(os.environ.get("XLR_CACHE", Path.home() / ".cache" / "xlr")).expanduser() / "data"


def github_base_url(explicit: str | None = None) -> str:
    """The GitHub raw base: ``explicit``, else ``$XLR_GITHUB_BASE``, else raw.githubusercontent.com."""
    return (explicit or os.environ.get("XLR_GITHUB_BASE") or GITHUB_BASE).rstrip("/")


def source_url(src: Source, base: str | None = None) -> str:
    """The public URL of ``src`` (hub: the ``resolve`` URL huggingface_hub requests, with ``$HF_ENDPOINT``)."""
    if src.kind == "github":
        return f"{github_base_url(base)}/{src.repo}/{src.revision}/{src.path}"
    if src.kind == "hub":
        from huggingface_hub import hf_hub_url

        return hf_hub_url(src.repo, src.path, repo_type=src.repo_type, revision=src.revision, endpoint=_hf_endpoint())
    raise FetchError(f"{src.target}: unknown source kind {src.kind!r} (expected 'github' or 'hub'). Fix: correct xlr/data_sources.py.")


def select(sources: Iterable[Source], only: Sequence[str] | None = None) -> list[Source]:
    """The sources of the groups in ``only`` (all when None); an unknown group is an error listing the groups."""
    sources = list(sources)
    if only:
        groups = sorted({s.group for s in sources})
        unknown = sorted(set(only) - set(groups))
        if unknown:
            raise FetchError(
                f"unknown data group(s): {', '.join(unknown)}. The groups are: {', '.join(groups) or '(none)'}. "
                "Fix: pass --only with one of these."
            )
        sources = [s for s in sources if s.group in set(only)]
    for s in sources:
        p = Path(s.target)
        if p.is_absolute() or ".." in p.parts or not s.target or s.target == "SHA256SUMS":
            raise FetchError(
                f"{s.target!r}: a data-source target must be a relative path inside the data root. Fix: correct xlr/data_sources.py."
            )
        if s.kind not in ("github", "hub") or not (s.transform in ("none", "gzip") or s.transform.startswith(_ZIP_PREFIX)):
            raise FetchError(f"{s.target}: unknown kind {s.kind!r} or transform {s.transform!r}. Fix: correct xlr/data_sources.py.")
        if s.transform.startswith(_ZIP_PREFIX) and not s.target_sha256:
            raise FetchError(f"{s.target}: a zip member needs target_sha256. Fix: correct xlr/data_sources.py.")
    return sources


def missing_targets(sources: Iterable[Source], root: Path) -> list[str]:
    """Targets of ``sources`` that do not exist under ``root`` (existence only: fast; hashes are checked on load)."""
    return [s.target for s in sources if not (Path(root) / s.target).is_file()]


# ----------------------------------------------------------------------------------------------------------------
# SHA256SUMS of the target


def read_sums(to: Path) -> dict[str, str]:
    """``{target: sha256}`` from ``to/SHA256SUMS`` (empty if absent)."""
    sums = Path(to) / "SHA256SUMS"
    out: dict[str, str] = {}
    if sums.is_file():
        for line in sums.read_text().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                out[name.strip().lstrip("*").removeprefix("./")] = digest
    return out


def _record_sum(to: Path, target: str, digest: str) -> None:
    sums = read_sums(to)
    if sums.get(target) == digest:
        return
    sums[target] = digest
    atomic_write_text(Path(to) / "SHA256SUMS", "".join(f"{d}  ./{t}\n" for t, d in sorted(sums.items())))


def _gunzip_sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
    except (OSError, EOFError):
        return None
    return h.hexdigest()


def _present(src: Source, to: Path, sums: dict[str, str]) -> str | None:
    """The sha256 of ``to/<target>`` if it is there and right (see module docstring), else None."""
    path = to / src.target
    if not path.is_file():
        return None
    digest = sha256_file(path)
    if src.transform == "gzip":
        # Our gzip bytes are not GNU gzip's: the hash is the one recorded when it was written, or else the content's.
        return digest if sums.get(src.target) == digest or _gunzip_sha256(path) == src.sha256 else None
    expected = src.target_sha256 if src.transform.startswith(_ZIP_PREFIX) else src.sha256
    return digest if digest == expected else None


# ----------------------------------------------------------------------------------------------------------------
# secrets


def _secrets() -> list[str]:
    vals = [os.environ.get(k) for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")]
    try:
        from huggingface_hub import get_token

        vals.append(get_token())
    except Exception:  # noqa: BLE001 - no token store is fine
        pass
    return sorted({v for v in vals if v and len(v) >= 6}, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` without tokens from the environment or the HF token store, and without credentials in URLs."""
    for s in _secrets():
        text = text.replace(s, "***")
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


# ----------------------------------------------------------------------------------------------------------------
# downloads


def _session(retries: int):
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=BACKOFF,
        status_forcelist=STATUS_RETRY,
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    s = requests.Session()
    s.mount("https://", HTTPAdapter(max_retries=retry))
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.headers["User-Agent"] = "xlr-data-fetch"
    return s


def _msg(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split()).rstrip('.')}"


def _fix_network(src: Source, part: Path | None) -> str:
    keep = f" The partial download {part} is kept and resumed." if part is not None and part.exists() else ""
    return (
        f"Fix: check the network (a mirror: --github-base or $XLR_GITHUB_BASE) and rerun `xlr data fetch --only {src.group}`.{keep} "
        "If the URL itself is wrong, the pinned file moved upstream: report it."
    )


def _http_download(session, src: Source, url: str, part: Path, *, retries: int, progress: bool) -> None:
    """GET ``url`` into ``part``, resuming an existing ``part`` with ``Range`` (206: append, 200: start over).

    urllib3's ``Retry`` covers connecting and the status line (429/5xx, backoff); a connection dropped mid-body is
    resumed from where it stopped, up to ``retries`` times in a row without new bytes."""
    import requests
    from tqdm.auto import tqdm

    failures = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            r = session.get(url, headers=headers, stream=True, timeout=TIMEOUT)
        except requests.exceptions.ConnectionError as e:  # DNS, refused, unreachable: no other file from this host will do better
            raise _Unreachable(
                f"{src.target}: could not reach {url} after {retries} retries: {_msg(e)}. {_fix_network(src, part)}"
            ) from None
        except requests.RequestException as e:
            raise _Failed(f"{src.target}: could not download {url} after {retries} retries: {_msg(e)}. {_fix_network(src, part)}") from None
        got = 0
        with r:
            if r.status_code == 416 and have:
                # The part is as long as the file (or longer): keep it if it is the file, else start over.
                if sha256_file(part) == src.sha256:
                    return
                part.unlink()
                continue
            if r.status_code >= 400:
                raise _Failed(
                    f"{src.target}: {url} answered HTTP {r.status_code} {r.reason}. "
                    + (
                        f"Fix: check the GitHub base in use, {github_base_of(url, src)} (--github-base, $XLR_GITHUB_BASE); if "
                        f"it is right, the pinned file was removed upstream: report it, or {_by_hand(src)}."
                        if r.status_code in (404, 410)
                        else _fix_network(src, part)
                    )
                )
            append = r.status_code == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {have}-")
            if r.status_code == 206 and not append:
                part.unlink()
                continue
            if not append:
                have = 0
            length = r.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            part.parent.mkdir(parents=True, exist_ok=True)
            try:
                with (
                    open(part, "ab" if append else "wb") as f,
                    tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, desc=src.target[-40:], leave=False, disable=not progress
                    ) as bar,
                ):
                    for chunk in r.iter_content(NET_CHUNK):
                        f.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())  # the part becomes the target by a rename: its bytes must be on disk first
                return
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
                failures = 0 if got else failures + 1
                if failures > retries:
                    raise _Failed(
                        f"{src.target}: the download of {url} broke off {failures} times in a row without new data: "
                        f"{_msg(e)}. {_fix_network(src, part)}"
                    ) from None
                log.info("%s: connection dropped after %d bytes (%s); resuming", src.target, have + got, redact(str(e)))
                time.sleep(BACKOFF * 2 ** max(failures - 1, 0))
            except requests.RequestException as e:
                raise _Failed(f"{src.target}: the download of {url} failed: {_msg(e)}. {_fix_network(src, part)}") from None


def _by_hand(src: Source) -> str:
    if src.transform.startswith(_ZIP_PREFIX):
        return (
            f"place its member {src.transform[len(_ZIP_PREFIX) :]} at <data root>/{src.target} by hand "
            f"(sha256 {src.target_sha256}; the archive's {src.sha256})"
        )
    gz = " gzip-compressed" if src.transform == "gzip" else ""
    return f"place the file{gz} at <data root>/{src.target} by hand (sha256 of the file as published: {src.sha256})"


def github_base_of(url: str, src: Source) -> str:
    return url[: -len(f"/{src.repo}/{src.revision}/{src.path}")] or url


def _hf_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or None


def _hub_download(src: Source, url: str, *, progress: bool) -> Path:
    """The hub file in huggingface_hub's cache under ``$XLR_CACHE/hf`` (it resumes and retries by itself)."""
    from huggingface_hub import constants, hf_hub_download
    from tqdm.auto import tqdm

    from xlr.paths import cache_dir

    class _Quiet(tqdm):
        def __init__(self, *a: Any, **k: Any):
            k["disable"] = True
            super().__init__(*a, **k)

    try:
        return Path(
            hf_hub_download(
                src.repo,
                src.path,
                repo_type=src.repo_type,
                revision=src.revision,
                cache_dir=cache_dir() / "hf",
                endpoint=_hf_endpoint(),
                tqdm_class=None if progress else _Quiet,
            )
        )
    except Exception as e:  # noqa: BLE001 - every hub failure is reported with its reason
        offline = (
            " HF_HUB_OFFLINE is set, which forbids hub downloads: unset it (or run `HF_HUB_OFFLINE=0 xlr data fetch`)."
            if constants.is_offline_mode()
            else ""
        )
        missing = "404" in str(e) or "NotFound" in type(e).__name__
        fix = (
            f"Fix: the repository, revision or file is not on the hub (HF_ENDPOINT={_hf_endpoint() or 'default'}); if this URL is "
            f"right the pinned file was removed upstream: report it, or {_by_hand(src)}."
            if missing
            else "Fix: check the network (a mirror: HF_ENDPOINT) and rerun; huggingface_hub resumes its own partial download."
        )
        raise _Failed(f"{src.target}: the hub download of {url} failed: {_msg(e)}.{offline} {fix}") from None


def _drop_hub_copy(path: Path) -> None:
    """Delete a hub file from huggingface_hub's cache (its snapshot link and blob), so the next run downloads it again."""
    blob = Path(os.path.realpath(path))
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _mismatch(src: Source, url: str, got: str, where: Path, hub: bool) -> _Failed:
    gone = f"its copy in huggingface_hub's cache ({where}) has been deleted" if hub else f"the download {where} has been deleted"
    return _Failed(
        f"{src.target}: sha256 of the download from {url} is {got}, expected {src.sha256}; nothing was written. "
        f"Fix: the source changed or the download is corrupt: {gone}, so rerun `xlr data fetch --only {src.group}`; "
        "if it repeats, the pinned file changed upstream: report it (the URL and both hashes)."
    )


def _write_atomic(final: Path, fill: Callable[[IO[bytes]], None], expect: str | None, what: str, fix: str = "") -> str:
    """Write ``final`` through a temporary file in its folder; check its sha256 against ``expect``; ``os.replace``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        if expect is not None and digest != expect:
            raise _Failed(f"{final}: sha256 of {what} is {digest}, expected {expect}; nothing was written. {fix}")
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def _copy_from(path: Path) -> Callable[[IO[bytes]], None]:
    def fill(f: IO[bytes]) -> None:
        with open(path, "rb") as src:
            shutil.copyfileobj(src, f, CHUNK)

    return fill


def _gzip_from(path: Path) -> Callable[[IO[bytes]], None]:
    def fill(f: IO[bytes]) -> None:
        with open(path, "rb") as src, gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as z:
            shutil.copyfileobj(src, z, CHUNK)

    return fill


def _member_from(zf: zipfile.ZipFile, member: str) -> Callable[[IO[bytes]], None]:
    def fill(f: IO[bytes]) -> None:
        with zf.open(member) as src:
            shutil.copyfileobj(src, f, CHUNK)

    return fill


# ----------------------------------------------------------------------------------------------------------------
# fetch


def fetch(
    sources: Iterable[Source],
    to: Path,
    *,
    only: Sequence[str] | None = None,
    github_base: str | None = None,
    retries: int = 5,
    progress: bool = True,
) -> dict[str, Any]:
    """Bring every source (of the groups in ``only``) to ``to/<target>``, verified; see the module docstring.

    Returns ``{"to", "rows": [{file, group, kind, status: fetched|present|failed, url, reason}], "fetched": [target],
    "present": [target], "failed": [{target, url, reason}], "counts": {fetched, present, failed, total}, "ok"}``."""
    from tqdm.auto import tqdm

    todo = select(sources, only)
    to = Path(to).expanduser().resolve()
    existed = to.exists()  # a folder that exists is a data root to xlr.paths: not created unless a file is written
    sums = read_sums(to)
    session = None
    archives: dict[tuple[str, ...], Path] = {}  # one download per zip archive: (kind, repo, revision, path, sha256) -> file
    broken: dict[tuple[str, ...], str] = {}  # zip archives that failed: their reason (not retried for each member)
    parts: list[Path] = []  # verified zip downloads of ours, deleted at the end
    rows: list[dict[str, Any]] = []
    unreachable: dict[str, str] = {}  # GitHub base -> the first file that could not reach it (the rest are not tried, counted as failed)
    with tqdm(total=len(todo), desc="xlr data fetch", unit="file", disable=not progress) as files_bar:
        for src in todo:
            url = redact(source_url(src, github_base))
            row = {"file": src.target, "group": src.group, "kind": src.kind, "url": url, "status": "", "reason": ""}
            key = (src.kind, src.repo, src.revision, src.path, src.sha256)
            try:
                digest = _present(src, to, sums)
                if digest is not None:
                    row["status"] = "present"
                    if sums.get(src.target) != digest:
                        _record_sum(to, src.target, digest)
                        sums[src.target] = digest
                else:
                    final = to / src.target
                    zipped = src.transform.startswith(_ZIP_PREFIX)
                    hub = src.kind == "hub"
                    if zipped and key in broken:
                        raise _Failed(f"{src.target}: not fetched: its archive {url} failed (the reason is given for {broken[key]})")
                    if zipped and key in archives:
                        downloaded = archives[key]
                    else:
                        if hub:
                            downloaded = _hub_download(src, url, progress=progress)
                        else:
                            base = github_base_of(source_url(src, github_base), src)
                            if base in unreachable:
                                raise _Failed(
                                    f"{src.target}: not tried: {base} could not be reached for {unreachable[base]} "
                                    f"(its reason is given there). {_fix_network(src, None)}"
                                )
                            session = session or _session(retries)
                            downloaded = (
                                to / ".downloads" / f"{Path(src.path).name}.{src.sha256[:12]}.part"
                                if zipped
                                else final.with_name(final.name + ".part")
                            )
                            try:
                                _http_download(session, src, source_url(src, github_base), downloaded, retries=retries, progress=progress)
                            except _Unreachable as e:
                                unreachable[base] = src.target
                                raise _Failed(str(e)) from None
                        got = sha256_file(downloaded)
                        if got != src.sha256:
                            (_drop_hub_copy if hub else Path.unlink)(downloaded)
                            raise _mismatch(src, url, got, downloaded, hub)
                        if zipped:
                            archives[key] = downloaded
                            if not hub:
                                parts.append(downloaded)
                    if zipped:
                        member = src.transform[len(_ZIP_PREFIX) :]
                        with zipfile.ZipFile(downloaded) as zf:
                            if member not in zf.namelist():
                                raise _Failed(
                                    f"{src.target}: the archive {url} (sha256 verified) has no member {member!r}. "
                                    "Fix: correct the transform in xlr/data_sources.py."
                                )
                            digest = _write_atomic(
                                final,
                                _member_from(zf, member),
                                src.target_sha256,
                                f"member {member} of {url}",
                                "Fix: its target_sha256 in xlr/data_sources.py is wrong: report it.",
                            )
                    elif src.transform == "gzip":
                        digest = _write_atomic(final, _gzip_from(downloaded), None, url)
                        if not hub:
                            downloaded.unlink()
                    elif hub:
                        digest = _write_atomic(
                            final,
                            _copy_from(downloaded),
                            src.sha256,
                            f"the copy of {downloaded}",
                            "Fix: huggingface_hub's cached copy changed while it was copied: rerun.",
                        )
                    else:
                        os.replace(downloaded, final)  # the verified .part is the temporary name in the target's folder
                        digest = src.sha256
                    _record_sum(to, src.target, digest)
                    sums[src.target] = digest
                    row["status"] = "fetched"
                    log.info("%s: fetched from %s (sha256 %s)", src.target, url, digest)
            except _Failed as e:
                row["status"], row["reason"] = "failed", redact(str(e))
                if src.transform.startswith(_ZIP_PREFIX) and key not in archives:
                    broken[key] = src.target
            except (OSError, zipfile.BadZipFile) as e:  # local: disk full, permissions, an archive that is not one
                row["status"], row["reason"] = (
                    "failed",
                    redact(
                        f"{src.target}: writing under {to} failed: {_msg(e)}. Fix: free space "
                        "or choose a writable --to, and rerun (verified files are kept)."
                    ),
                )
            rows.append(row)
            files_bar.update(1)
    for p in parts:
        p.unlink(missing_ok=True)
    if (to / ".downloads").is_dir() and not any((to / ".downloads").iterdir()):
        (to / ".downloads").rmdir()
    if not existed and to.is_dir():  # drop the empty folders of failed downloads in a folder we created
        for d in sorted((p for p in [to, *to.rglob("*")] if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
    if session is not None:
        session.close()
    by = {k: [r for r in rows if r["status"] == k] for k in ("fetched", "present", "failed")}
    return {
        "to": str(to),
        "rows": rows,
        "fetched": [r["file"] for r in by["fetched"]],
        "present": [r["file"] for r in by["present"]],
        "failed": [{"target": r["file"], "url": r["url"], "reason": r["reason"]} for r in by["failed"]],
        "counts": {k: len(v) for k, v in by.items()} | {"total": len(rows)},
        "ok": not by["failed"],
    }
