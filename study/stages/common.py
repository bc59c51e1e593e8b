"""What every stage entry point shares: its result type, data loading, and writing results and metrics."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from study import paths
from study.contract import RESULT_KEYS
from study.core import artifacts, data, execution, vision_data
from study.core.params import Params


@dataclass
class StageResult:
    """What a stage produced: its metrics (as written), and the tables a reader of its notebook wants to see."""

    metrics: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def headline(self) -> pd.Series:
        """The common keys, rounded for reading."""
        return pd.Series({k: round(v, 4) if isinstance(v, float) else v for k, v in self.metrics.items()
                          if k != "provenance" and not isinstance(v, (dict, list))}, name="value")


class Clock:
    """Wall time of a stage, from its start."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def use_threads(params: Params) -> None:
    """Every stage starts here: torch's intra-op threads as ``runtime.threads`` says (not torch's default
    of one per core), so a stage computes the same on any machine and a rerun repeats it bit for bit."""
    torch.set_num_threads(params.runtime.threads)


def begin(params: Params) -> Clock:
    """What every stage does first: use its threads, its device and (under torchrun) its process group,
    start its clock."""
    use_threads(params)
    execution.configure(params.runtime.device, params.runtime.amp)
    return Clock()


def load_splits(params: Params, dataset: str) -> dict[str, data.Split]:
    """The train/val/test splits of a baseline's data set: in memory, or streamed from disk (ImageNet)."""
    root = paths.from_root(params.data.root)
    if dataset in vision_data.VISION_DATASETS:
        return vision_data.load_splits(dataset, root, params.data.val_size, params.seed, params.data.check_sha256,
                                       params.data.workers)
    return data.load_dataset(dataset, root, params.data.val_size, split_seed=params.seed,
                             check_sha256=params.data.check_sha256)


def split_fingerprint(split: data.Split | vision_data.StreamedSplit) -> str:
    """sha256 of a split held in memory (its images and labels, as the stage sees them), or, for a split streamed
    from disk, of its size and its image indices: what a resume file must have been trained on."""
    digest = hashlib.sha256()
    if isinstance(split, data.Split):
        for tensor in (split.images, split.labels):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    else:
        digest.update(str(len(split)).encode())
        digest.update(split.indices.cpu().numpy().tobytes())
    return digest.hexdigest()


def resume_context(params: Params, splits: Mapping[str, Any]) -> dict[str, Any]:
    """Everything besides a stage's own settings that shapes what it trains, for its resume key: the data settings,
    the runtime settings that change bits (threads, device, mixed precision, processes) and the data themselves."""
    return {"data": params.data.model_dump(), "runtime": params.runtime.model_dump(),
            "splits": {name: split_fingerprint(split) for name, split in splits.items()}}


def require(mapping: Mapping[str, Any], key: str, where: str, hint: str) -> Any:
    """``mapping[key]``, or an error that names the missing key of params.yaml and how to fix it."""
    if key not in mapping:
        raise KeyError(f"params.yaml has no {where}.{key}; {hint}")
    return mapping[key]


def finish(layout: paths.Layout, stage: str, name: str, record: dict[str, Any], clock: Clock,
           headline: tuple[str, ...], seed: int, provenance_params: Mapping[str, Any]) -> dict[str, Any]:
    """Write the results record (what later stages read) and the metrics JSON (common keys with the wall
    time, the ``headline`` keys, provenance); return the metrics."""
    artifacts.write_results(layout.write(paths.results(stage, name)), record)
    metrics = {k: record[k] for k in RESULT_KEYS} | {"wall_s": round(clock.seconds(), 1)}
    metrics |= {k: record[k] for k in headline if k in record}
    return artifacts.write_metrics(layout.write(paths.metrics(stage, name)), metrics, seed=seed,
                                   params=dict(provenance_params))


def write_tables(folder: Path, tables: Mapping[str, pd.DataFrame], **to_csv: Any) -> None:
    for table_name, table in tables.items():
        artifacts.atomic_write_text(folder / f"{table_name}.csv", table.to_csv(index=False, **to_csv))
