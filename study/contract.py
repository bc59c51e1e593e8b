"""The study's shared vocabulary: one definition of each scheme name, bit width, rule and metrics key.

Every stage, the parameter schema and the report import these names instead of spelling them again,
so adding a scheme or changing the tolerance rule is a change in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

# Pruning schemes. Filter = whole output filters / neurons (GEMM rows); channel = whole input channels /
# features; column = one input channel at one kernel position across all filters (GEMM columns).
PRUNING_SCHEMES = ("irregular", "filter", "channel", "column")
STRUCTURED_SCHEMES = ("filter", "channel", "column")
# Semi-structured N:M pruning (below): a model's layers each keep one of NM_PATTERNS, stored in the cheapest it keeps
NM_SCHEME = "nm"
SCHEMES = ("dense", *PRUNING_SCHEMES, NM_SCHEME)  # also the order of every table and legend

SPARSE_FORMATS = ("rel_csc", "rel_csr", "csr", "bitmap")  # how an irregular layer may be stored (study.costs.encoding)

# Semi-structured N:M sparsity: at most N non-zeros in every M consecutive weights of a GEMM row, read in the order
# sparse hardware reads it: a conv weight [out, in, kh, kw] as [out, kh, kw, in] (input channels innermost, NHWC).
NM_PATTERNS = ("2:4", "1:4", "2:8", "1:8")  # the rates 2x, 4x, 4x, 8x
NM_CONV_ORDER = (0, 2, 3, 1)


def nm_pattern(pattern: str) -> tuple[int, int]:
    """(N, M) of ``"N:M"``, with 1 <= N <= M <= 64 (a group's positions fit the encoders' 8-bit header fields)."""
    try:
        n, m = (int(part) for part in str(pattern).split(":"))
    except ValueError:
        raise ValueError(f"N:M pattern {pattern!r}: write it as N:M, e.g. 2:4 (the patterns studied: {list(NM_PATTERNS)})") from None
    if not 1 <= n <= m <= 64:
        raise ValueError(f"N:M pattern {pattern!r}: need 1 <= N <= M <= 64")
    return n, m


def is_nm(scheme: str) -> bool:
    """Whether a scheme names an N:M pattern ("2:4"): the storage and energy of an N:M model take the pattern."""
    try:
        nm_pattern(scheme)
    except ValueError:
        return False
    return True


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


# The selection rule. A step's *loss* is the dense model's validation accuracy minus its own, measured on the same
# images; per image the difference is +1 (only dense right), -1 (only the step right) or 0, so the loss is a mean
# whose standard error comes from the disagreements alone (a paired comparison: a few images where a binomial
# interval of each accuracy would need tens). A step is *within tolerance* when the one-sided 95% upper bound of
# its loss is at most the tolerance, and *clearly outside* when the lower bound exceeds it: a step one image
# past the line is neither, so one image can no longer turn a pick into a miss or stop a schedule.
Z_ONE_SIDED_95 = 1.6448536269514722  # the standard normal's 95% quantile
PAIRED_KEYS = ("val_only_dense_right", "val_only_step_right", "val_images")  # what a step record carries for it
SELECTION_RULE = "highest rate whose paired 95% upper bound of the validation loss is within the tolerance"


def paired_loss_bounds(only_reference_right: Any, only_model_right: Any, n: int, z: float = Z_ONE_SIDED_95) -> tuple[Any, Any]:
    """One-sided lower and upper bounds (fractions) of the loss, reference accuracy minus the model's, from the
    counts of images only one of the two gets right out of ``n``: mean -+ z standard errors of the per-image
    difference. Works elementwise on numpy arrays of counts (bootstrap replicates) as on numbers."""
    if n < 2:
        raise ValueError(f"a paired bound needs at least 2 images, got {n}")
    b, c = np.asarray(only_reference_right, dtype=float), np.asarray(only_model_right, dtype=float)
    mean = (b - c) / n
    variance = np.maximum((b + c) / n - mean**2, 0.0) * n / (n - 1)
    half = z * np.sqrt(variance / n)
    low, high = mean - half, mean + half
    return (float(low), float(high)) if low.ndim == 0 else (low, high)


def step_loss_bounds(step: Mapping[str, Any]) -> tuple[float, float]:
    """The paired loss bounds of a schedule step's record (its ``PAIRED_KEYS``)."""
    missing = [k for k in PAIRED_KEYS if k not in step]
    if missing:
        raise KeyError(f"step {step.get('step')} lacks {missing}: records written before the paired rule; rerun its stage")
    return paired_loss_bounds(step["val_only_dense_right"], step["val_only_step_right"], int(step["val_images"]))


def step_within_tolerance(step: Mapping[str, Any], tolerance_pp: float) -> bool:
    return bool(step_loss_bounds(step)[1] <= tolerance_pp / 100 + 1e-12)


def step_clearly_outside(step: Mapping[str, Any], tolerance_pp: float) -> bool:
    return bool(step_loss_bounds(step)[0] > tolerance_pp / 100 + 1e-12)


def select_step(steps: Iterable[Mapping[str, Any]], tolerance_pp: float) -> Mapping[str, Any]:
    """Model selection of a pruning schedule (``SELECTION_RULE``): the highest-rate step within tolerance by its
    paired upper bound; if none is, the most accurate step. The test split is never looked at."""
    steps = list(steps)
    if not steps:
        raise ValueError("no pruning steps to select from")
    qualifying = [s for s in steps if step_within_tolerance(s, tolerance_pp)]
    if qualifying:
        return max(qualifying, key=lambda s: s["pruning_rate"])
    return max(steps, key=lambda s: s["val_accuracy"])


def paired_counts(reference_hits: np.ndarray, hits: np.ndarray) -> dict[str, int]:
    """The ``PAIRED_KEYS`` of a step from per-image correctness of the dense model and the step's model."""
    reference_hits, hits = np.asarray(reference_hits, dtype=bool), np.asarray(hits, dtype=bool)
    if reference_hits.shape != hits.shape:
        raise ValueError(f"the dense model was judged on {reference_hits.shape} images, the step on {hits.shape}")
    return {"val_only_dense_right": int((reference_hits & ~hits).sum()), "val_only_step_right": int((hits & ~reference_hits).sum()),
            "val_images": int(hits.size)}


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
