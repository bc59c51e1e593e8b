"""The models one baseline's stages produced, found through their metrics JSON: what later stages evaluate.

dvc.yaml fixes where each stage keeps its checkpoint; this module is the one place that knows it.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from study import report


@dataclass(frozen=True)
class Entry:
    scheme: str
    weight_bits: int
    test_accuracy: float
    val_accuracy: float
    checkpoint: Path


def checkpoint_of(record: dict, models_dir: Path | str) -> Path:
    """Where the stage that wrote ``record`` keeps its model."""
    if "selected_checkpoint" in record:  # prune stages
        return Path(record["selected_checkpoint"])
    if record["weight_bits"] == 32 and record["scheme"] == "dense":  # train stages
        return Path(models_dir) / "dense.pt"
    return Path(models_dir) / f"quantize-{record['scheme']}-{record['weight_bits']}" / "model.pt"


def baseline_models(models_dir: Path | str, train_metrics: str, prune_metrics_glob: str,
                    quantize_metrics_glob: str) -> tuple[dict, list[Entry]]:
    """The dense baseline's metrics and every model (dense, pruned, quantized) with its accuracies.

    Missing metrics or checkpoints are errors that say which stage to rerun.
    """
    dense = report.read_metrics([train_metrics])[0]
    pruned = report.read_metrics(glob.glob(prune_metrics_glob))
    if not pruned:
        raise FileNotFoundError(f"no prune metrics match {prune_metrics_glob!r}: run the prune stages first (dvc repro prune)")
    quantized = report.read_metrics(glob.glob(quantize_metrics_glob))
    entries = []
    for record in [dense, *pruned, *quantized]:
        path = checkpoint_of(record, models_dir)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the checkpoint of {record['scheme']} at {record['weight_bits']} bits is "
                                    "missing; rerun its stage (dvc repro) first")
        entries.append(Entry(record["scheme"], int(record["weight_bits"]), float(record["test_accuracy"]),
                             float(record["val_accuracy"]), path))
    return dense, entries
