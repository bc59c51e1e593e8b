"""How sure an accuracy is: a 95% interval for each, and a paired test of a model against its dense baseline.

A difference of 0.1 points on 10,000 test images is 10 images. Two tools say whether that means anything:

- the Wilson score interval of one accuracy (Wilson 1927; it keeps its coverage near 0 and 1, where
  the textbook normal interval does not, and our accuracies sit at 99%);
- McNemar's exact test of two models on the same images (McNemar 1947): only the images on which they
  disagree carry information, and under "equally accurate" each disagreement goes either way with
  probability 1/2, so the two-sided p-value is a binomial tail.

Written here rather than taken from scipy or statsmodels: the study needs neither at run time, and each
formula is a few lines (the tests check both against scipy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (fractions) of an accuracy of ``correct`` out of ``n``."""
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n > 0, got correct={correct}, n={n}")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if correct == 0 else max(0.0, centre - half)  # exactly 0 / 1 there; rounding would leave ~1e-18
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def accuracy_interval(accuracy: float, n: int) -> tuple[float, float]:
    """The Wilson interval of an accuracy given as a fraction of ``n`` examples (rounded to a whole count)."""
    return wilson_interval(int(round(accuracy * n)), n)


def format_interval(accuracy: float | None, n: int | None) -> str | None:
    """'[98.97, 99.35]' in percent, or None when the accuracy or the test size is unknown."""
    if accuracy is None or n is None or (isinstance(accuracy, float) and math.isnan(accuracy)):
        return None
    low, high = accuracy_interval(accuracy, int(n))
    return f"[{100 * low:.2f}, {100 * high:.2f}]"


def mcnemar_exact(only_first_right: int, only_second_right: int) -> float:
    """Two-sided exact McNemar p-value from the two disagreement counts (1.0 when they never disagree)."""
    b, c = int(only_first_right), int(only_second_right)
    if b < 0 or c < 0:
        raise ValueError(f"disagreement counts must be >= 0, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))  # exact integers: no underflow for any n
    return min(1.0, 2 * tail / 2**n)


def paired_comparison(reference: Sequence[bool] | np.ndarray, model: Sequence[bool] | np.ndarray) -> dict[str, float]:
    """McNemar of ``model`` against ``reference`` from per-example correctness on the same examples."""
    reference, model = np.asarray(reference, dtype=bool), np.asarray(model, dtype=bool)
    if reference.shape != model.shape:
        raise ValueError(f"the two prediction vectors differ in length: {reference.shape} vs {model.shape}")
    only_reference = int((reference & ~model).sum())
    only_model = int((model & ~reference).sum())
    return {"only_dense_right": only_reference, "only_model_right": only_model,
            "mcnemar_p": mcnemar_exact(only_reference, only_model)}


class Evidence:
    """What the evaluate stages measured, for the report's tables: per baseline (``<model>-<dataset>``) the
    test-set size, and per model (scheme, bits) McNemar's p against the dense fp32 model.

    Built from the stages' ``models.csv`` tables (and ``steps.csv``: every step of the pruning schedules);
    an empty one (no evaluate stage run) yields blank cells."""

    def __init__(self, tables: dict[str, pd.DataFrame] | None = None, steps: dict[str, pd.DataFrame] | None = None) -> None:
        self.sizes = {b: int(t["n"].iloc[0]) for b, t in (tables or {}).items() if not t.empty}
        self.p_values = {(b, str(r.scheme), int(r.weight_bits)): float(r.mcnemar_p)
                         for b, t in (tables or {}).items() for r in t.itertuples()}
        self.step_p_values = {(b, str(r.method), str(r.scheme), int(r.step)): float(r.mcnemar_p)
                              for b, t in (steps or {}).items() for r in t.itertuples()}

    def interval(self, baseline: str, accuracy: float | None) -> str | None:
        """The 95% interval of a test accuracy of ``baseline``'s test set, as text (None when unknown)."""
        return format_interval(accuracy, self.sizes.get(baseline))

    def p_value(self, baseline: str, scheme: str, weight_bits: int) -> float | None:
        return self.p_values.get((baseline, scheme, int(weight_bits)))

    def step_p_value(self, baseline: str, method: str, scheme: str, step: int) -> float | None:
        """McNemar's p of one step of a pruning schedule (``method``: "ADMM" or "magnitude") against dense."""
        return self.step_p_values.get((baseline, method, scheme, int(step)))

    def describe(self, baseline: str, scheme: str, weight_bits: int, accuracy: float) -> str:
        """'95% CI [a, b]; McNemar p = x against dense' for a sentence (parts unknown are left out)."""
        parts = []
        interval = self.interval(baseline, accuracy)
        if interval:
            parts.append(f"95% CI {interval}")
        p = self.p_value(baseline, scheme, weight_bits)
        if p is not None and not (scheme == "dense" and weight_bits == 32):
            parts.append(f"McNemar p = {p:.2g} against dense")
        return "; ".join(parts)
