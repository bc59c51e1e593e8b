"""Atomic file output, safe checkpoints and the metrics JSON every stage writes.

Every write goes to a temporary file in the target's folder and is renamed into place, so a stage
killed midway leaves the previous output intact instead of half a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import subprocess
import tempfile
import zipfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from study.contract import METRICS_KEYS, RESULT_KEYS
from study.core import execution


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, tampered with, or belongs to a different model."""


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place (all or nothing).

    In a distributed run only rank 0 writes, and every rank waits until it has: all ranks run the same
    code, so a file one of them reads back next (a checkpoint of the previous step) is there for all.
    """
    run = execution.current()
    if run.distributed:
        if run.is_main:
            _write_atomically(Path(path), data)
        execution.barrier()
        return
    _write_atomically(Path(path), data)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, payload: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: Path | str, payload: Mapping[str, Any]) -> None:
    """Save tensors and plain values (no arbitrary pickled objects) atomically."""
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint can carry tensors and plain values, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; run the stage that produces it (`dvc repro`)")
    with path.open("rb") as head:
        zipped = head.read(4) == b"PK\x03\x04"
    if zipped and not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut one lost its central directory
        raise CheckpointError(f"checkpoint {path} is truncated ({path.stat().st_size:,} bytes, an incomplete zip archive): "
                              "rerun the stage that wrote it (`dvc repro --force <stage>`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or not a safe weights-only file: {exc}") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, expected a dict")
    return payload


def differing_keys(written: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The top-level keys whose values differ between the key a resume file was written under and the one wanted
    (what a stage names when it sets the file aside and starts over)."""
    return sorted(k for k in set(written) | set(wanted) if written.get(k) != wanted.get(k))


def load_state_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load weights, turning shape/key mismatches into an error that names the checkpoint."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {source} does not fit the model: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Metrics and provenance
# ---------------------------------------------------------------------------------------------


# What shapes a result besides the parameters: the code that ran and the libraries it called. Outputs
# (results/, metrics/, dvc.lock) are left out of the dirty check: DVC rewrites them while the study runs.
SOURCE_PATHS = ("study", "notebooks", "pyproject.toml", "requirements.lock", "dvc.yaml")
RESULT_PACKAGES = ("torch", "torchvision", "numpy", "pandas", "matplotlib", "seaborn", "papermill", "nbclient",
                   "ipykernel", "pydantic", "pyyaml", "dvc")
REPOSITORY = Path(__file__).resolve().parents[2]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def source_state(root: Path = REPOSITORY) -> dict[str, Any]:
    """The commit the code ran at, and whether the source (``SOURCE_PATHS``, untracked files included)
    differed from it; both None outside a git checkout."""
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--", *SOURCE_PATHS) if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def provenance(seed: int | None = None, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where a result came from: code version, library versions (and the lock file pinning them), seed, parameters."""
    return {
        **source_state(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in RESULT_PACKAGES} | {"torch": torch.__version__},  # with its build tag
        "lock_sha256": _sha256(REPOSITORY / "requirements.lock"),
        "seed": seed,
        "params": dict(params or {}),
    }


def _check_common(path: Path | str, record: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"the record for {path} lacks the common keys {missing}")
    for key in ("test_accuracy", "val_accuracy"):
        value = record[key]
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{path}: {key}={value} must be a fraction in [0, 1]")
    if not math.isfinite(float(record["pruning_rate"])):
        raise ValueError(f"{path}: pruning_rate={record['pruning_rate']} must be finite (all weights pruned?)")


def write_results(path: Path | str, record: Mapping[str, Any]) -> dict[str, Any]:
    """Write a stage's results record: the common keys first, then the stage's own.

    This is what later stages read, so it holds no timing and no provenance: a rerun that reproduces
    the same results writes the same bytes and leaves every later stage up to date.
    """
    _check_common(path, record, RESULT_KEYS)
    if "wall_s" in record or "provenance" in record:
        raise ValueError(f"{path}: timings and provenance belong in the metrics file, not in the results record")
    ordered = {k: record[k] for k in RESULT_KEYS} | {k: v for k, v in record.items() if k not in RESULT_KEYS}
    write_json(path, ordered)
    return ordered


def write_metrics(path: Path | str, metrics: Mapping[str, Any], **provenance_kwargs: Any) -> dict[str, Any]:
    """Write a stage's metrics JSON: the common keys (wall time included), a few headline numbers, provenance."""
    _check_common(path, metrics, METRICS_KEYS)
    ordered = {k: metrics[k] for k in METRICS_KEYS} | {k: v for k, v in metrics.items() if k not in METRICS_KEYS}
    ordered["provenance"] = provenance(**provenance_kwargs)
    write_json(path, ordered)
    return ordered
