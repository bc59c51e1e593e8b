"""Report helpers: read the stages' metrics JSON, build the study's tables, write them as CSV and Markdown."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from study.artifacts import METRICS_KEYS, atomic_write_text


def read_metrics(paths: Iterable[Path | str]) -> list[dict[str, Any]]:
    """Read metrics JSON files; a file lacking the common keys is an error naming it."""
    records = []
    for path in sorted(Path(p) for p in paths):
        record = json.loads(path.read_text())
        missing = [k for k in METRICS_KEYS if k not in record]
        if missing:
            raise ValueError(f"{path}: metrics lack the common keys {missing}; rerun the stage that wrote it")
        records.append(record)
    return records


def baseline_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Table T1: one row per dense baseline."""
    rows = [
        {
            "model": r["model"],
            "dataset": r["dataset"],
            "parameters": r["parameters"],
            "conv+FC weights": r["weights"],
            "MACs": r["macs"],
            "test accuracy (%)": round(100 * r["test_accuracy"], 2),
            "val accuracy (%)": round(100 * r["val_accuracy"], 2),
            "fp32 size (KB)": round(r["fp32_bytes"] / 1024, 1),
            "epochs": r["epochs"],
            "train time (s)": round(r["wall_s"], 1),
        }
        for r in records
        if r["scheme"] == "dense"
    ]
    return pd.DataFrame(rows)


def write_table(table: pd.DataFrame, folder: Path | str, name: str) -> dict[str, Path]:
    """Write ``table`` as ``<name>.csv`` and ``<name>.md`` under ``folder``; return the paths."""
    folder = Path(folder)
    paths = {"csv": folder / f"{name}.csv", "md": folder / f"{name}.md"}
    atomic_write_text(paths["csv"], table.to_csv(index=False))
    atomic_write_text(paths["md"], table.to_markdown(index=False) + "\n")
    return paths
