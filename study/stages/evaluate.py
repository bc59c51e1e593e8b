"""Stage ``evaluate@<baseline>``: how sure each accuracy is, from per-image test predictions of every model.

Every model of a baseline (dense, each scheme's selected pruned model, every quantized one) and every
step of its pruning schedules (ADMM's for each scheme, the magnitude baseline's) is run once more on the
test set. Its accuracy gets a 95% Wilson interval, and McNemar's exact test compares it with the dense
fp32 baseline on the same images (``study/report/uncertainty.py``). The per-image correctness is kept
(``correct.npz``, bit-packed) so any other pair can be tested without rerunning a model.

The recomputed accuracy must equal the one its stage recorded: a mismatch means a checkpoint and its
record come from different runs, and the stage stops with the name of the stage to rerun.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from study import paths
from study.core import artifacts, catalog, training
from study.core.data import Split
from study.core.vision_data import StreamedSplit
from study.core.params import Params
from study.report import uncertainty
from study.stages.common import StageResult, begin, finish, load_splits, write_tables


def model_key(scheme: str, weight_bits: int) -> str:
    return f"{scheme}-{weight_bits}"


def step_key(method: str, scheme: str, step: int) -> str:
    return f"{method}-{scheme}-step{step}"


def evidence_columns(reference: np.ndarray, hits: np.ndarray, recorded: float) -> dict[str, float | int]:
    """Accuracy, its 95% interval and McNemar against the dense fp32 model's per-image ``reference``."""
    n, right = len(hits), int(hits.sum())
    low, high = uncertainty.wilson_interval(right, n)
    return {"n": n, "correct": right, "test_accuracy": right / n, "recorded_test_accuracy": recorded,
            "ci95_low": low, "ci95_high": high, **uncertainty.paired_comparison(reference, hits)}


def comparison_table(correct: dict[tuple[str, int], np.ndarray], recorded: dict[tuple[str, int], float]) -> pd.DataFrame:
    """One row per model: accuracy, its 95% interval, and McNemar against the dense fp32 model."""
    reference = correct[("dense", 32)]
    return pd.DataFrame([{"scheme": scheme, "weight_bits": bits, **evidence_columns(reference, hits, recorded[(scheme, bits)])}
                         for (scheme, bits), hits in correct.items()])


def checked_predictions(net: torch.nn.Module, test: Split | StreamedSplit, recorded: float, checkpoint: Path) -> np.ndarray:
    """Per-image correctness on ``test``; an accuracy other than the ``recorded`` one stops the stage."""
    hits = training.correct_predictions(net, test)
    if abs(hits.mean() - recorded) > 0.5 / len(hits):
        raise ValueError(f"{checkpoint}: test accuracy {hits.mean():.4f} here, {recorded:.4f} in its record; the "
                         f"checkpoint and the record come from different runs: rerun the stage that wrote them "
                         f"(dvc repro --force <stage>)")
    return hits


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    base = params.baselines[baseline]
    dense_record, entries = catalog.baseline_models(layout, baseline, params.compare.schemes, params.compare.weight_bits)
    test = load_splits(params, base.dataset)["test"]
    correct, recorded = {}, {}
    for entry in entries:
        net, _ = training.load_model(entry.checkpoint, base.model)
        correct[(entry.scheme, entry.weight_bits)] = checked_predictions(net, test, entry.test_accuracy, entry.checkpoint)
        recorded[(entry.scheme, entry.weight_bits)] = entry.test_accuracy
    table = comparison_table(correct, recorded)
    step_hits, step_rows = {}, []
    for step in catalog.step_models(layout, baseline, params.compare.schemes):
        net, _ = training.load_model(step.checkpoint, base.model)
        hits = checked_predictions(net, test, step.test_accuracy, step.checkpoint)
        step_hits[step_key(step.method, step.scheme, step.step)] = hits
        step_rows.append({"method": step.method, "scheme": step.scheme, "step": step.step,
                          "target_rate": step.target_rate, "pruning_rate": step.pruning_rate,
                          **evidence_columns(correct[("dense", 32)], hits, step.test_accuracy)})
    steps = pd.DataFrame(step_rows)
    out = layout.write(paths.tables("evaluate", baseline))
    write_tables(out, {"models": table, "steps": steps})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{model_key(*key): np.packbits(hits) for key, hits in correct.items()},
                        **{key: np.packbits(hits) for key, hits in step_hits.items()})
    artifacts.atomic_write_bytes(out / "correct.npz", buffer.getvalue())
    dense = table[(table["scheme"] == "dense") & (table["weight_bits"] == 32)].iloc[0]
    record = {
        "model": base.model, "dataset": base.dataset, "scheme": "dense", "weight_bits": 32,
        "test_accuracy": float(dense["test_accuracy"]), "val_accuracy": float(dense_record["val_accuracy"]),
        "pruning_rate": 1.0,
        "test_size": int(dense["n"]),
        "dense_ci95": [float(dense["ci95_low"]), float(dense["ci95_high"])],
        "models": table.to_dict(orient="records"),
        "steps": steps.to_dict(orient="records"),
    }
    metrics = finish(layout, "evaluate", baseline, record, clock, ("test_size",), params.seed, {"baseline": baseline})
    return StageResult(metrics, {"models": table, "steps": steps})


def load_correct(path: str | io.BytesIO, n: int) -> dict[str, np.ndarray]:
    """``correct.npz`` back to boolean vectors of length ``n`` (the test-set size in the stage's record)."""
    with np.load(path, allow_pickle=False) as packed:
        return {key: np.unpackbits(packed[key])[:n].astype(bool) for key in packed.files}

