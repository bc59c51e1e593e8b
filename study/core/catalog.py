"""The models one baseline's stages produced, found through their results records: what later stages evaluate.

The lists of the comparison (schemes, bit widths) come from ``params.yaml: compare``; where each stage
keeps its checkpoint comes from ``study.paths``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study import paths
from study.contract import NM_SCHEME, RESULT_KEYS


@dataclass(frozen=True)
class Entry:
    scheme: str
    weight_bits: int
    test_accuracy: float
    val_accuracy: float
    checkpoint: Path


def _stage_of(record_path: Path) -> str:
    """The stage kind of a record path: the folder after ``results`` (records of one baseline sit one level lower)."""
    below = [part for part in reversed(record_path.parents) if part.parent.name == "results"]
    return below[-1].name if below else record_path.parent.name


def read_record(path: Path) -> dict[str, Any]:
    """A results record; a missing file or one lacking the common keys is an error naming it and the stage to rerun."""
    if not path.is_file():
        stage = _stage_of(path)
        raise FileNotFoundError(f"{path} is missing: run the {stage} stage first (dvc repro {stage})")
    record = json.loads(path.read_text())
    missing = [k for k in RESULT_KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: the record lacks the common keys {missing}; rerun the stage that wrote it")
    return record


def record_names(baseline: str, schemes: Iterable[str], weight_bits: Iterable[int]) -> dict[str, list[str]]:
    """Names of the results records of one baseline, per stage, in one fixed (sorted) order."""
    schemes, weight_bits = list(schemes), list(weight_bits)
    return {
        "train": [baseline],
        "prune": sorted(paths.item(baseline, s) for s in schemes),
        "quantize": sorted(paths.item(baseline, s, b) for s in ["dense", *schemes] for b in weight_bits),
    }


def records(layout: paths.Layout, stage: str, names: Iterable[str]) -> list[dict[str, Any]]:
    return [read_record(layout.read(paths.results(stage, name))) for name in names]


def checkpoint_of(record: dict[str, Any], baseline: str) -> str:
    """Where the stage that wrote ``record`` keeps its model (relative to the output root)."""
    if "selected_checkpoint" in record:  # prune stages
        return record["selected_checkpoint"]
    if record["weight_bits"] == 32 and record["scheme"] == "dense":  # train stages
        return paths.dense_checkpoint(baseline)
    return paths.quantized_checkpoint(baseline, record["scheme"], record["weight_bits"])


def existing_checkpoint(layout: paths.Layout, relative: str, what: str) -> Path:
    """Where ``relative`` is found; a missing file is an error that names ``what`` it holds and says to rerun."""
    path = layout.read(relative)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} is missing; rerun its stage (dvc repro) first")
    return path


def baseline_models(layout: paths.Layout, baseline: str, schemes: Iterable[str],
                    weight_bits: Iterable[int]) -> tuple[dict[str, Any], list[Entry]]:
    """The dense baseline's record and every model (dense, pruned, quantized) with its accuracies.

    Missing records or checkpoints are errors that say which stage to rerun.
    """
    names = record_names(baseline, schemes, weight_bits)
    dense = records(layout, "train", names["train"])[0]
    entries = []
    for record in [dense, *records(layout, "prune", names["prune"]), *records(layout, "quantize", names["quantize"])]:
        path = existing_checkpoint(layout, checkpoint_of(record, baseline),
                                   f"the checkpoint of {record['scheme']} at {record['weight_bits']} bits")
        entries.append(Entry(record["scheme"], int(record["weight_bits"]), float(record["test_accuracy"]),
                             float(record["val_accuracy"]), path))
    return dense, entries


@dataclass(frozen=True)
class StepEntry:
    """One progressive step of a pruning schedule (ADMM's, or the magnitude baseline's) and its model."""

    method: str  # "ADMM", "magnitude", "L1 filter" or "ASP", as table T3 names them
    scheme: str
    step: int
    target_rate: float
    pruning_rate: float
    test_accuracy: float
    checkpoint: Path


def step_models(layout: paths.Layout, baseline: str, schemes: Iterable[str]) -> list[StepEntry]:
    """Every step model of the baseline's pruning schedules: each scheme's ADMM steps, then the magnitude
    baseline's, then the L1 filter baseline's (where filter pruning is compared) and ASP's (where N:M is), in the
    records' order.
    Missing records or checkpoints are errors naming the stage to rerun."""
    names = record_names(baseline, schemes, [])["prune"]
    sources = [("ADMM", r) for r in records(layout, "prune", names)]
    sources.append(("magnitude", read_record(layout.read(paths.results("magnitude", baseline)))))
    if "filter" in schemes:
        sources.append(("L1 filter", read_record(layout.read(paths.results("l1filter", baseline)))))
    if NM_SCHEME in schemes:
        sources.append(("ASP", read_record(layout.read(paths.results("prune", paths.item(baseline, "asp"))))))
    entries = []
    for method, record in sources:
        for step in record["steps"]:
            path = existing_checkpoint(layout, step["checkpoint"],
                                       f"the model of {method} {record['scheme']} step {step['step']}")
            entries.append(StepEntry(method, record["scheme"], int(step["step"]), float(step["target_rate"]),
                                     float(step["pruning_rate"]), float(step["test_accuracy"]), path))
    return entries
