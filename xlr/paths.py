"""One place for paths: the repository, the data root, the cache, runs and reports.

Data root resolution, in order: an explicit path (params ``data.data_dir`` or ``--data-dir``), the
environment variable ``XLR_DATA_DIR``, ``../shared/data`` beside the checkout, ``../shared/data`` beside the current
directory, then the fetch cache ``$XLR_CACHE/data`` (where ``xlr data fetch`` puts the public files). Raw data is
read-only for xlr: nothing is ever written under the data root (the fetch command fills the cache; nothing else does).
"""

from __future__ import annotations

import os
from pathlib import Path

from xlr.errors import XlrError

REPO_ROOT = Path(__file__).resolve().parents[1]


def project_root() -> Path:
    """The checkout when xlr runs from one (editable install), else the current directory."""
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()


class DataRootNotFound(XlrError, FileNotFoundError):
    def __init__(self, tried: list[str]):
        self.tried = tried
        super().__init__(
            "no data root found. Tried, in order:\n  - " + "\n  - ".join(tried) + "\n"
            "Fix: run `xlr data fetch` (downloads the public files into the fetch cache "
            f"{data_cache_dir()}), set data.data_dir in the params file, export XLR_DATA_DIR=/path/to/data, or place "
            "the data at ../shared/data beside the checkout."
        )


def data_root(explicit: str | os.PathLike | None = None, required: bool = True) -> Path | None:
    """The first data root that exists (see module docstring), absolute but not resolved (a root that is a link stays
    the path given); ``None`` or an error naming all tried."""
    tried: list[str] = []
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("params data.data_dir / --data-dir", Path(explicit).expanduser()))
    else:
        tried.append("params data.data_dir / --data-dir: not set")
    env = os.environ.get("XLR_DATA_DIR")
    if env:
        candidates.append(("env XLR_DATA_DIR", Path(env).expanduser()))
    else:
        tried.append("env XLR_DATA_DIR: not set")
    candidates.append(("../shared/data beside the checkout", REPO_ROOT.parent / "shared" / "data"))
    candidates.append(("../shared/data beside the current directory", Path.cwd().parent / "shared" / "data"))
    candidates.append(("the fetch cache ($XLR_CACHE/data, filled by `xlr data fetch`)", data_cache_dir()))
    for label, path in candidates:
        if path.is_dir():
            return Path(os.path.abspath(path))
        tried.append(f"{label}: {path} (not a directory)")
        if label.startswith(("params", "env")):
            # An explicit location that does not exist is a mistake, not a reason to fall through silently.
            raise DataRootNotFound(tried)
    if required:
        raise DataRootNotFound(tried + ["the Hugging Face hub: see xlr.data for which sources have a hub fallback"])
    return None


def cache_dir() -> Path:
    """``$XLR_CACHE`` or ``~/.cache/xlr``: prepared models, the tiny model, tokenizers."""
    path = Path(os.environ.get("XLR_CACHE", Path.home() / ".cache" / "xlr")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_cache_dir() -> Path:
    """``$XLR_CACHE/data`` (default ``~/.cache/xlr/data``): where ``xlr data fetch`` writes the data root; the last place
    :func:`data_root` looks. Not created here (its existence is what makes it a data root)."""
    return Path(os.environ.get("XLR_CACHE", Path.home() / ".cache" / "xlr")).expanduser() / "data"


def runs_dir() -> Path:
    return Path(os.environ.get("XLR_RUNS_DIR", project_root() / "runs"))


def reports_dir() -> Path:
    return Path(os.environ.get("XLR_REPORTS_DIR", project_root() / "reports"))
