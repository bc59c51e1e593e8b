"""The paper's claims beside our results, each with a plain verdict computed from the stage outputs.

Each function returns one row: the claim, the published figure, ours, and whether it holds at our scale.
A claim whose evidence is missing (a stage not run) says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from study.report.compute import energy_comparison, latency_comparison

PAPER = "Wang, Ye, He, Ma et al., arXiv 1907.02124"


def _row(claim: str, published: str, ours: str, holds: bool | None) -> dict[str, Any]:
    verdict = {True: "holds", False: "does not hold", None: "not measured"}[holds]
    return {"claim": claim, "published": published, "ours": ours, "at our scale": verdict}


def irregular_rate_claim(prune_records: Iterable[dict], published_rate: float = 348.0) -> dict[str, Any]:
    record = next((r for r in prune_records if r["scheme"] == "irregular"), None)
    if record is None:
        return _row("ADMM-NN-S prunes LeNet-5 non-structured ~348x without accuracy loss", f"{published_rate:g}x", "-", None)
    loss = 100 * (record["baseline_test_accuracy"] - record["test_accuracy"])
    ours = (f"{record['pruning_rate']:.0f}x at {100 * record['test_accuracy']:.2f}% test "
            f"({abs(loss):.2f} pp {'below' if loss >= 0 else 'above'} the dense {100 * record['baseline_test_accuracy']:.2f}%)")
    holds = record["pruning_rate"] >= 0.9 * published_rate and loss <= record["tolerance_pp"]
    return _row("ADMM-NN-S prunes LeNet-5 non-structured ~348x without accuracy loss", f"{published_rate:g}x", ours, holds)


def binarization_claim(quantize_records: Iterable[dict], baseline_test_accuracy: float, tolerance_pp: float) -> dict[str, Any]:
    record = next((r for r in quantize_records if r["scheme"] == "dense" and r["weight_bits"] == 1), None)
    claim = "A fully binarized LeNet-5 (every layer's weights binary) loses no accuracy"
    if record is None:
        return _row(claim, "lossless", "-", None)
    loss = 100 * (baseline_test_accuracy - record["test_accuracy"])
    return _row(claim, "lossless", f"{100 * record['test_accuracy']:.2f}% test ({abs(loss):.2f} pp "
                                   f"{'below' if loss >= 0 else 'above'} dense fp32)",
                loss <= tolerance_pp)


def storage_claim(iso_bits: pd.DataFrame) -> dict[str, Any]:
    """Judged where both models are quantized and within the accuracy tolerance (equal accuracy)."""
    claim = "With quantized weights, structured pruning stores less than irregular pruning (index bits included)"
    quantized = iso_bits[(iso_bits["weight bits"] < 32) & iso_bits["both within tolerance"]] if not iso_bits.empty else iso_bits
    if quantized.empty:
        return _row(claim, "structured smaller", "no quantized irregular and structured pair within tolerance", None)
    wins = quantized[quantized["smaller"] == "structured"]["weight bits"].tolist()
    losses = quantized[quantized["smaller"] == "irregular"]["weight bits"].tolist()
    listed = lambda bits: ", ".join(f"{b}-bit" for b in bits) or "none"  # noqa: E731
    ours = f"models within tolerance: structured smaller at {listed(wins)}; irregular smaller at {listed(losses)}"
    return _row(claim, "structured smaller", ours, not losses)


def energy_claim(energy_models: pd.DataFrame) -> dict[str, Any]:
    claim = "At the same accuracy and bits, structured pruning needs less energy per inference than irregular"
    compared = energy_comparison(energy_models).sort_values("weight_bits", ascending=False)
    if compared.empty:
        return _row(claim, "structured lower", "-", None)
    ours = "lowest energy within tolerance: " + ", ".join(f"{r.weight_bits}-bit {r.lowest}" for r in compared.itertuples())
    return _row(claim, "structured lower", ours, bool((compared["lowest"] != "irregular").all()))


def latency_claim(latency_models: pd.DataFrame) -> dict[str, Any]:
    claim = "Irregular sparsity brings little real speedup; structured pruning does"
    compared = latency_comparison(latency_models)
    if compared.empty:
        return _row(claim, "structured faster", "-", None)
    parts = [f"batch {r.batch}: CSR {r.csr_ratio:.2f}x dense, best structured {r.structured_ratio:.2f}x"
             for r in compared.itertuples()]
    holds = bool((compared["structured_ratio"] < compared["csr_ratio"]).all())
    return _row(claim, "structured faster", "; ".join(parts), holds)


def claims_table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["claim", "published", "ours", "at our scale"])
