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


def _step(step: int, rate: float, val: float, test: float) -> dict:
    return {"step": step, "target_rate": rate, "pruning_rate": rate, "val_accuracy": val, "test_accuracy": test}


def test_every_step_of_t3_and_the_magnitude_row_of_t2_carry_their_own_mcnemar_p() -> None:
    import pandas as pd

    from study.report import common
    from study.stages import evaluate

    rng = np.random.default_rng(0)
    dense = rng.random(400) < 0.95
    hits = {("ADMM", 1): dense.copy(), ("ADMM", 2): dense & (rng.random(400) < 0.97), ("ADMM", 3): rng.random(400) < 0.5,
            ("magnitude", 1): dense & (rng.random(400) < 0.9), ("magnitude", 2): rng.random(400) < 0.6}
    steps = pd.DataFrame([{"method": m, "scheme": "irregular", "step": s, **evaluate.evidence_columns(dense, h, h.mean())}
                          for (m, s), h in hits.items()])
    models = pd.DataFrame([{"scheme": "dense", "weight_bits": 32, **evaluate.evidence_columns(dense, dense, dense.mean())},
                           {"scheme": "irregular", "weight_bits": 32, **evaluate.evidence_columns(dense, hits[("ADMM", 2)], 0.9)}])
    evidence = U.Evidence({"lenet5-mnist": models}, {"lenet5-mnist": steps})
    common_keys = {"model": "lenet5", "dataset": "mnist", "scheme": "irregular", "weight_bits": 32,
                   "baseline_val_accuracy": 0.95, "baseline_test_accuracy": float(dense.mean()), "tolerance_pp": 0.2,
                   "per_layer": {"fc1": 0.1}}
    admm = {**common_keys, "selected_step": 2, "pruning_rate": 40.0, "compact_pruning_rate": 41.0,
            "test_accuracy": float(hits[("ADMM", 2)].mean()),
            "steps": [_step(s, r, 0.95, float(hits[("ADMM", s)].mean())) for s, r in ((1, 15.0), (2, 40.0), (3, 80.0))]}
    magnitude = {**common_keys, "method": "iterative global magnitude pruning", "selected_step": 1, "pruning_rate": 15.0,
                 "test_accuracy": float(hits[("magnitude", 1)].mean()),
                 "steps": [_step(s, r, 0.95, float(hits[("magnitude", s)].mean())) for s, r in ((1, 15.0), (2, 40.0))]}

    t3 = common.structured_table([admm, magnitude], evidence)
    assert len(t3) == 5
    for row in t3.itertuples(index=False):
        method, step, p = row.method, row.step, row[t3.columns.get_loc(common.P_COLUMN)]
        assert p == U.paired_comparison(dense, hits[(method, step)])["mcnemar_p"]
    assert t3[common.P_COLUMN].nunique() >= 3  # the steps' own tests, not one number repeated

    t2 = common.irregular_table([admm, magnitude], pd.DataFrame(columns=["model", "dataset", "scheme"]), evidence)
    by_method = dict(zip(t2["method"], t2[common.P_COLUMN]))
    assert by_method["iterative global magnitude pruning"] == U.paired_comparison(dense, hits[("magnitude", 1)])["mcnemar_p"]
    assert by_method["ours (ADMM-NN-S, this suite)"] == U.paired_comparison(dense, hits[("ADMM", 2)])["mcnemar_p"]

    picks = pd.DataFrame([{"method": "ADMM", "scheme": "irregular", "step": 2, "pick_probability": 0.61},
                          {"method": "ADMM", "scheme": "irregular", "step": 1, "pick_probability": 0.39},
                          {"method": "magnitude", "scheme": "irregular", "step": 1, "pick_probability": 0.97}])
    t2 = common.irregular_table([admm, magnitude], pd.DataFrame(columns=["model", "dataset", "scheme"]), evidence,
                                {"lenet5-mnist": picks})
    assert dict(zip(t2["method"], t2[common.PICK_COLUMN])) == {"ours (ADMM-NN-S, this suite)": 0.61,
                                                               "iterative global magnitude pruning": 0.97}
