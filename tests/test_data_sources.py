"""The data-sources table (xlr.data_sources) against independent facts: the pinned commits of the issue and of
shared/data/README.md, the files and hashes of ../shared/data/SHA256SUMS (gzip targets: the hash of the decompressed
shared file), and, where the git mirrors of the six repositories are beside the checkout (../.mirror), the git objects
at the pinned commits."""

import gzip
import hashlib
import io
import re
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from xlr import data_sources as ds

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MIRRORS = Path(__file__).resolve().parents[2] / ".mirror"  # bare git dirs <owner>+<name>/repo
needs_shared = pytest.mark.skipif(not (SHARED / "SHA256SUMS").is_file(), reason="../shared/data not present")
needs_mirrors = pytest.mark.skipif(not MIRRORS.is_dir(), reason="../.mirror (git mirrors of the source repositories) not present")

# The commits named in shared/data/README.md (short) and issue 17 (full).
COMMITS = {
    "ZNLP/Implicit-Cross-Lingual-Rewarding": "168a4207912c562de2f72c7c08ff12156beb2815",
    "tatsu-lab/alpaca_eval": "cd543a149df89434d8a54582c0151c0b945c3d20",
    "for-ai/language-confusion": "0cfdbb4a64502648938c456b2fa9689968f22298",
    "kkminions888-ops/ultrafeedback-dpo-noise-study": "859ef0a82f3a27f71cef9136a432f19945f704de",
    "DaehanKim/EasyRLHF": "45eccb72ddb8c18aa52dc2a184516380e06582fe",
    "anthropics/hh-rlhf": "354e5c3cb8960630860dd5774a6ac2a58313bf4d",
}
GROUPS = {"x-alpacaeval", "ultrafeedback-prompts", "english-preferences", "alpaca-eval", "language-confusion"}
HEX64 = re.compile(r"[0-9a-f]{64}")


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _shared_sums() -> dict[str, str]:
    out = {}
    for line in (SHARED / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip().removeprefix("./")] = digest
    return out


def test_every_source_is_well_formed():
    assert ds.SOURCES, "the table is empty"
    for s in ds.SOURCES:
        where = s.target
        assert s.kind == "github" and s.repo in COMMITS and s.revision == COMMITS[s.repo], where
        assert re.fullmatch(r"[0-9a-f]{40}", s.revision), where
        assert s.group in GROUPS and s.target.split("/")[0] == s.group, where
        assert HEX64.fullmatch(s.sha256), where
        assert not s.target.startswith("/") and ".." not in s.target.split("/") and ".." not in s.path.split("/"), where
        if s.transform.startswith("zip-member:"):
            member = s.transform.removeprefix("zip-member:")
            assert member and s.path.endswith(".zip") and HEX64.fullmatch(s.target_sha256 or ""), where
            assert s.target == f"language-confusion/{member}", where  # unzipped unchanged (README)
        else:
            assert s.transform in ("none", "gzip") and s.target_sha256 is None, where
        if s.transform == "gzip":
            assert s.target.endswith(".gz") and Path(s.target).with_suffix("").suffix == Path(s.path).suffix, where
    targets = [s.target for s in ds.SOURCES]
    assert len(targets) == len(set(targets)), [t for t, n in Counter(targets).items() if n > 1]
    assert not set(targets) & set(ds.NOT_FETCHABLE)
    # the README's counts: 9 + 9 prompts/references, 3 x 5 outputs; 9 training files; 4 English pair files;
    # 52 annotations + leaderboard + LICENSE; 66 test sets + words + 4 outputs + LICENSE
    assert Counter(s.group for s in ds.SOURCES) == {
        "x-alpacaeval": 33,
        "ultrafeedback-prompts": 9,
        "english-preferences": 4,
        "alpaca-eval": 54,
        "language-confusion": 72,
    }


def test_sources_helpers():
    assert ds.sources() == ds.SOURCES
    assert {s.group for s in ds.sources("alpaca-eval")} == {"alpaca-eval"} and len(ds.sources("alpaca-eval")) == 54
    with pytest.raises(ValueError, match=r"'nope' unknown. Fix: use one of x-alpacaeval, .*language-confusion"):
        ds.sources("nope")
    assert "cannot be fetched" in ds.NOT_FETCHABLE["x-alpacaeval/paper-table2.csv"]
    assert "../shared/data" in ds.NOT_FETCHABLE["x-alpacaeval/paper-table2.csv"]


def test_content_sha256_is_of_the_public_bytes(tmp_path):
    raw = b"id,model,completion\n1,m,hello\n"
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(raw, mtime=0))
    plain = tmp_path / "b"
    plain.write_bytes(raw)
    gsrc = next(s for s in ds.SOURCES if s.transform == "gzip")
    nsrc = next(s for s in ds.SOURCES if s.transform == "none")
    assert ds.content_sha256(gz, gsrc) == _sha(raw) != _sha(gz.read_bytes())
    assert ds.content_sha256(plain, nsrc) == _sha(raw)


@needs_shared
def test_targets_are_the_shared_files_minus_the_stated_exclusions():
    listed = set(_shared_sums())
    assert {s.target for s in ds.SOURCES} == listed - set(ds.NOT_FETCHABLE)
    assert set(ds.NOT_FETCHABLE) <= listed  # every exclusion is a real file of the data root


@needs_shared
def test_hashes_equal_the_shared_copy():
    sums = _shared_sums()
    for s in ds.SOURCES:
        shared = SHARED / s.target
        assert _sha(shared.read_bytes()) == sums[s.target], f"{shared} differs from SHA256SUMS"
        if s.transform == "none":
            assert s.sha256 == sums[s.target], s.target
        elif s.transform == "gzip":
            assert s.sha256 == _sha(gzip.decompress(shared.read_bytes())), s.target
        else:
            assert s.target_sha256 == sums[s.target], s.target
    assert len({s.sha256 for s in ds.SOURCES if s.transform.startswith("zip-member:")}) == 1  # one archive


def _blob(repo: str, commit: str, path: str) -> bytes:
    git = MIRRORS / repo.replace("/", "+") / "repo"
    if not git.is_dir():
        pytest.skip(f"{git} not present")
    r = subprocess.run(["git", "-C", str(git), "show", f"{commit}:{path}"], capture_output=True, check=False)
    assert r.returncode == 0, f"{repo}@{commit}:{path}: {r.stderr.decode().strip()}"
    return r.stdout


@needs_mirrors
def test_hashes_equal_the_git_objects_at_the_pinned_commits():
    archives: dict[tuple[str, str, str], zipfile.ZipFile] = {}
    for s in ds.SOURCES:
        key = (s.repo, s.revision, s.path)
        if s.transform.startswith("zip-member:"):
            if key not in archives:
                b = _blob(*key)
                assert _sha(b) == s.sha256, s.path
                archives[key] = zipfile.ZipFile(io.BytesIO(b))
            assert _sha(archives[key].read(s.transform.removeprefix("zip-member:"))) == s.target_sha256, s.target
            continue
        b = _blob(*key)
        assert not b.startswith(b"version https://git-lfs"), f"{s.repo}@{s.revision}:{s.path} is a Git LFS pointer"
        assert _sha(b) == s.sha256, s.target
