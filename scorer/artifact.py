"""Model directory = ``model.safetensors`` + ``config.json``; no pickle anywhere.

Loading checks everything it can (files, JSON, schema, method, weight hash, tensor shapes) and
reports any problem as one error type naming the file, so a deploy fails loudly and clearly.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class ArtifactError(Exception):
    """A model directory is missing, corrupt or does not match what the code expects."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class Artifact:
    """What a method persists: named tensors plus a JSON-serialisable config."""

    method: str
    tensors: dict[str, torch.Tensor]
    config: dict[str, Any]
    model_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    names = ("torch", "numpy", "scikit-learn", "safetensors", "opencv-python-headless")
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_artifact(artifact: Artifact, directory: Path | str) -> str:
    """Write the directory; returns the model version (method + weight hash prefix)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in artifact.tensors.items()}
    save_file(tensors, str(weights), metadata={"method": artifact.method})
    digest = _digest(weights)
    version = f"{artifact.method}-{digest[:12]}"
    doc = {
        "schema_version": SCHEMA_VERSION,
        "method": artifact.method,
        "model_version": version,
        "weights_sha256": digest,
        "library_versions": library_versions(),
        **artifact.config,
    }
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False))
    tmp.replace(directory / CONFIG_FILE)
    artifact.model_version = version
    return version


def load_artifact(directory: Path | str, expected_method: str | None = None) -> Artifact:
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(directory, "model directory does not exist")
    cfg_path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (cfg_path, weights):
        if not p.is_file():
            raise ArtifactError(p, "file is missing")
    try:
        doc = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(cfg_path, f"not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise ArtifactError(cfg_path, "top level must be a JSON object")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            cfg_path, f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})"
        )
    for key in ("method", "model_version", "weights_sha256"):
        if not isinstance(doc.get(key), str):
            raise ArtifactError(cfg_path, f"missing or invalid field {key!r}")
    if expected_method is not None and doc["method"] != expected_method:
        raise ArtifactError(cfg_path, f"method is {doc['method']!r}, expected {expected_method!r}")
    if _digest(weights) != doc["weights_sha256"]:
        raise ArtifactError(weights, "SHA-256 does not match config.json (corrupt or replaced)")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(weights, f"cannot read safetensors ({e})") from e
    return Artifact(doc["method"], tensors, doc, doc["model_version"])


def require(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    """Fetch a config field of the expected type or raise ArtifactError naming it."""
    if key not in doc:
        raise ArtifactError(where, f"missing field {key!r}")
    value = doc[key]
    if not isinstance(value, kind):
        raise ArtifactError(where, f"field {key!r} has type {type(value).__name__}")
    return value


def check_state_dict(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: Path, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Compare names and shapes against a freshly built model; return the matching subset."""
    sub = {k[len(prefix) :]: v for k, v in found.items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(sub))
    unexpected = sorted(set(sub) - set(expected))
    if missing or unexpected:
        raise ArtifactError(
            where,
            f"tensor names differ from the architecture: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}",
        )
    for k, v in expected.items():
        if tuple(sub[k].shape) != tuple(v.shape):
            raise ArtifactError(
                where,
                f"tensor {prefix + k!r} has shape {tuple(sub[k].shape)}, "
                f"architecture expects {tuple(v.shape)}",
            )
    return sub
