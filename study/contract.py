"""The study's shared vocabulary: one definition of each scheme name, bit width, rule and metrics key.

Every stage, the parameter schema and the report import these names instead of spelling them again,
so adding a scheme or changing the tolerance rule is a change in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

# Pruning schemes. Filter = whole output filters / neurons (GEMM rows); channel = whole input channels /
# features; column = one input channel at one kernel position across all filters (GEMM columns).
PRUNING_SCHEMES = ("irregular", "filter", "channel", "column")
STRUCTURED_SCHEMES = ("filter", "channel", "column")
SCHEMES = ("dense", *PRUNING_SCHEMES)  # also the order of every table and legend

SPARSE_FORMATS = ("rel_csc", "rel_csr", "csr", "bitmap")  # how an irregular layer may be stored (study.costs.encoding)
ALLOCATIONS = ("density", "magnitude")  # how a pruning step splits its budget over layers (study.compression.pruning)

FULL_PRECISION_BITS = 32
QUANTIZED_BITS = (1, 2, 3, 4, 5, 6, 7, 8)  # what quantization may target; 1 = binary alpha * {-1, +1}
STORABLE_BITS = (*QUANTIZED_BITS, 16, FULL_PRECISION_BITS)  # what the encoders can store per value


def max_level(bits: int, allow_zero: bool = True) -> int:
    """Largest integer level of the b-bit grid, which names at most 2^b levels (quantization and the encoders).

    With 0 a level (a dense model): the symmetric {-m..m} with m = 2^(b-1) - 1, 2^b - 1 levels. Without
    it (a pruned model's survivors, whose zeros the index already marks, and binary): +-1..+-2^(b-1),
    all 2^b codes non-zero levels. Binary is the b = 1 case of the second: +-1.
    """
    return 2 ** (bits - 1) if bits == 1 or not allow_zero else 2 ** (bits - 1) - 1

# Keys every stage's metrics JSON carries, so `dvc metrics show` and the report read all stages alike.
METRICS_KEYS = ("model", "dataset", "scheme", "weight_bits", "test_accuracy", "val_accuracy", "pruning_rate", "wall_s")
# The same keys less the wall time: what a stage's results record (read by later stages) carries.
RESULT_KEYS = tuple(k for k in METRICS_KEYS if k != "wall_s")


def accuracy_threshold(reference_accuracy: float, tolerance_pp: float) -> float:
    """The lowest accuracy (fraction) still "without loss": ``tolerance_pp`` percentage points below the reference."""
    return reference_accuracy - tolerance_pp / 100


def within_tolerance(accuracy: float, reference_accuracy: float, tolerance_pp: float) -> bool:
    """The tolerance rule, for selection (validation vs the dense validation) and claims (test vs dense test)."""
    return bool(accuracy >= accuracy_threshold(reference_accuracy, tolerance_pp))


def select_step(steps: Iterable[Mapping[str, Any]], threshold: float) -> Mapping[str, Any]:
    """Model selection of a pruning schedule: the highest-rate step whose validation accuracy reaches
    ``threshold``; if none does, the most accurate step. The test split is never looked at."""
    steps = list(steps)
    if not steps:
        raise ValueError("no pruning steps to select from")
    qualifying = [s for s in steps if s["val_accuracy"] >= threshold]
    if qualifying:
        return max(qualifying, key=lambda s: s["pruning_rate"])
    return max(steps, key=lambda s: s["val_accuracy"])


def lowest_within_tolerance(table: pd.DataFrame, by: str) -> pd.Series:
    """The row with the lowest ``by`` among rows within tolerance (column ``within_tolerance``); where no
    row is within tolerance, the lowest of all (its ``within_tolerance`` then says False)."""
    if table.empty:
        raise ValueError(f"no models to choose the lowest {by!r} from")
    within = table[table["within_tolerance"].astype(bool)]
    return (within if not within.empty else table).sort_values(by, kind="stable").iloc[0]


def check_scheme(scheme: str, allowed: Iterable[str] = SCHEMES) -> str:
    allowed = tuple(allowed)
    if scheme not in allowed:
        raise ValueError(f"unknown scheme {scheme!r}; valid: {list(allowed)}")
    return scheme
