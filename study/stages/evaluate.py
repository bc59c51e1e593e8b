"""Stage ``evaluate@<baseline>``: how sure each accuracy is, from per-image test predictions of every model.

Every model of a baseline (dense, each scheme's selected pruned model, every quantized one) is run once
more on the test set. Its accuracy gets a 95% Wilson interval, and McNemar's exact test compares it with
the dense fp32 baseline on the same images (``study/report/uncertainty.py``). The per-image correctness
is kept (``correct.npz``, bit-packed) so any other pair can be tested without rerunning a model.

The recomputed accuracy must equal the one its stage recorded: a mismatch means a checkpoint and its
record come from different runs, and the stage stops with the name of the stage to rerun.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from study import paths
from study.core import artifacts, catalog, training
from study.core.params import Params
from study.report import uncertainty
from study.stages.common import StageResult, begin, finish, load_splits, write_tables


def model_key(scheme: str, weight_bits: int) -> str:
    return f"{scheme}-{weight_bits}"


def comparison_table(correct: dict[tuple[str, int], np.ndarray], recorded: dict[tuple[str, int], float]) -> pd.DataFrame:
    """One row per model: accuracy, its 95% interval, and McNemar against the dense fp32 model."""
    reference = correct[("dense", 32)]
    rows = []
    for (scheme, bits), hits in correct.items():
        n, right = len(hits), int(hits.sum())
        low, high = uncertainty.wilson_interval(right, n)
        rows.append({"scheme": scheme, "weight_bits": bits, "n": n, "correct": right, "test_accuracy": right / n,
                     "recorded_test_accuracy": recorded[(scheme, bits)], "ci95_low": low, "ci95_high": high,
                     **uncertainty.paired_comparison(reference, hits)})
    return pd.DataFrame(rows)


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    base = params.baselines[baseline]
    dense_record, entries = catalog.baseline_models(layout, baseline, params.compare.schemes, params.compare.weight_bits)
    test = load_splits(params, base.dataset)["test"]
    correct, recorded = {}, {}
    for entry in entries:
        net, _ = training.load_model(entry.checkpoint, base.model)
        hits = training.correct_predictions(net, test)
        if abs(hits.mean() - entry.test_accuracy) > 0.5 / len(hits):
            raise ValueError(f"{entry.checkpoint}: test accuracy {hits.mean():.4f} here, {entry.test_accuracy:.4f} in its "
                             f"record; the checkpoint and the record come from different runs: rerun the stage that wrote "
                             f"them (dvc repro --force <stage>)")
        correct[(entry.scheme, entry.weight_bits)] = hits
        recorded[(entry.scheme, entry.weight_bits)] = entry.test_accuracy
    table = comparison_table(correct, recorded)
    out = layout.write(paths.tables("evaluate", baseline))
    write_tables(out, {"models": table})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{model_key(*key): np.packbits(hits) for key, hits in correct.items()})
    artifacts.atomic_write_bytes(out / "correct.npz", buffer.getvalue())
    dense = table[(table["scheme"] == "dense") & (table["weight_bits"] == 32)].iloc[0]
    record = {
        "model": base.model, "dataset": base.dataset, "scheme": "dense", "weight_bits": 32,
        "test_accuracy": float(dense["test_accuracy"]), "val_accuracy": float(dense_record["val_accuracy"]),
        "pruning_rate": 1.0,
        "test_size": int(dense["n"]),
        "dense_ci95": [float(dense["ci95_low"]), float(dense["ci95_high"])],
        "models": table.to_dict(orient="records"),
    }
    metrics = finish(layout, "evaluate", baseline, record, clock, ("test_size",), params.seed, {"baseline": baseline})
    return StageResult(metrics, {"models": table})


def load_correct(path: str | io.BytesIO, n: int) -> dict[str, np.ndarray]:
    """``correct.npz`` back to boolean vectors of length ``n`` (the test-set size in the stage's record)."""
    with np.load(path, allow_pickle=False) as packed:
        return {key: np.unpackbits(packed[key])[:n].astype(bool) for key in packed.files}

