"""The accuracy intervals and the paired test agree with scipy and behave as their definitions say."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from study.report import uncertainty as U


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 20000), data=st.data())
def test_wilson_interval_matches_scipy(n: int, data: st.DataObject) -> None:
    correct = data.draw(st.integers(0, n))
    low, high = U.wilson_interval(correct, n)
    expected = stats.binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert low <= correct / n <= high


def test_the_interval_of_a_typical_accuracy() -> None:
    # 99.16% of 10,000: about +-0.18 points, so 0.1-point differences are inside the noise
    low, high = U.accuracy_interval(0.9916, 10000)
    assert 0.9896 < low < 0.9900 and 0.9931 < high < 0.9935
    assert U.format_interval(0.9916, 10000) == f"[{100 * low:.2f}, {100 * high:.2f}]"
    assert U.format_interval(None, 10000) is None and U.format_interval(0.5, None) is None
    with pytest.raises(ValueError, match="correct=11, n=10"):
        U.wilson_interval(11, 10)


@settings(max_examples=200, deadline=None)
@given(b=st.integers(0, 400), c=st.integers(0, 400))
def test_mcnemar_matches_the_exact_binomial_test(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert U.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert U.mcnemar_exact(b, c) == U.mcnemar_exact(c, b)


def test_paired_comparison_counts_only_disagreements() -> None:
    dense = np.array([1, 1, 1, 0, 0, 1, 1, 1], dtype=bool)
    model = np.array([1, 0, 0, 0, 1, 1, 0, 1], dtype=bool)
    result = U.paired_comparison(dense, model)
    assert (result["only_dense_right"], result["only_model_right"]) == (3, 1)
    assert result["mcnemar_p"] == pytest.approx(0.625)  # 2 * P(X <= 1), X ~ Bin(4, 1/2) = 2 * 5/16
    assert U.paired_comparison(dense, dense)["mcnemar_p"] == 1.0
    # 60 disagreements all one way: no chance
    assert U.mcnemar_exact(60, 0) < 1e-15
    with pytest.raises(ValueError, match="differ in length"):
        U.paired_comparison(dense, model[:-1])
