"""Where every stage's outputs live, resolved from the repository root whatever the working directory.

A notebook opened in JupyterLab starts in ``notebooks/``, papermill may run it from anywhere: every path
goes through here. The pipeline writes under the repository root; a notebook run by hand writes under a
scratch folder (``tmp/explore/`` by default) and reads what it has not produced itself from the pipeline's
outputs, so a hand run never overwrites or invalidates the study.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def from_root(path: Path | str) -> Path:
    """``path`` as given when absolute, else relative to the repository root (not the working directory)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def item(baseline: str, *parts: str | int) -> str:
    """The name of a stage item of one baseline below it, ``<baseline>/<part>-<part>`` (``lenet5-mnist/irregular-8``).

    The baseline is a folder of each stage's records, so a later stage of one baseline depends on that folder
    alone: rerunning or adding another baseline leaves it up to date.
    """
    return f"{baseline}/" + "-".join(str(p) for p in parts)


# Relative locations of every output, one function per kind: dvc.yaml declares the same paths.
def dense_checkpoint(baseline: str) -> str:
    return f"models/{baseline}/dense.pt"


def prune_dir(baseline: str, scheme: str) -> str:
    return f"models/{baseline}/prune-{scheme}"


def quantized_checkpoint(baseline: str, scheme: str, bits: int) -> str:
    return f"models/{baseline}/quantize-{scheme}-{bits}/model.pt"


def published(baseline: str) -> str:
    """The folder of a baseline's published model files (committed to git, so a fresh clone has them)."""
    return f"models/published/{baseline}"


def results(stage: str, name: str) -> str:
    """The record a stage writes for later stages: deterministic (no timings, no provenance)."""
    return f"results/{stage}/{name}.json"


def tables(stage: str, name: str) -> str:
    """The folder of a stage's CSV tables (and other data files) beside its results record."""
    return f"results/{stage}/{name}"


def metrics(stage: str, name: str) -> str:
    """The stage's metrics JSON: the common keys with the wall time, headline numbers, provenance."""
    return f"metrics/{stage}/{name}.json"


def resume(stage: str, name: str) -> str:
    return f"tmp/resume/{stage}-{name}.pt"


def executed_notebook(stage: str, name: str) -> str:
    return f"runs/{stage}/{name}.ipynb"


@dataclass(frozen=True)
class Layout:
    """Output and input roots of one run: ``write`` under ``out``; ``read`` prefers ``out`` and falls back
    to ``fallback`` (the repository, where the pipeline keeps its outputs) for what this run did not produce."""

    out: Path
    fallback: Path = REPO_ROOT

    @classmethod
    def at(cls, out_root: Path | str) -> "Layout":
        return cls(from_root(out_root).resolve())

    def write(self, relative: str) -> Path:
        return self.out / relative

    def read(self, relative: str) -> Path:
        own = self.out / relative
        return own if own.exists() or self.out == self.fallback else self.fallback / relative
