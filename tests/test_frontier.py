"""Frontiers and their bootstrap verdicts on hand-made models with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from study import contract
from study.report import frontier as fr

N = 2000  # images
DENSE_WRONG = 20  # the dense model: 99.0%
TOLERANCE = 10 / N  # 0.5 points: ten images


def correctness(extra_wrong: int, offset: int = 0) -> np.ndarray:
    """Wrong on the dense model's 20 images and on ``extra_wrong`` more (from image 20 + ``offset``): a model
    whose paired loss against dense is exactly ``extra_wrong`` images."""
    hits = np.ones(N, dtype=bool)
    hits[:DENSE_WRONG] = False
    hits[DENSE_WRONG + offset:DENSE_WRONG + offset + extra_wrong] = False
    return hits


DENSE = correctness(0)


def comparison(models: list[tuple[str, float, int]], seed: int = 0, resamples: int = 2000) -> fr.FrontierBootstrap:
    """(side, cost, images lost against dense) per model; the dense model joins both sides at cost 100."""
    sides = [side for side, _, _ in models] + [fr.BOTH]
    costs = [cost for _, cost, _ in models] + [100.0]
    correct = np.stack([correctness(lost, offset=40 * i) for i, (_, _, lost) in enumerate(models)] + [DENSE])
    return fr.FrontierBootstrap(costs, sides, correct, DENSE, resamples=resamples, seed=seed)


@pytest.mark.parametrize("models, verdict", [
    # structured far cheaper, both models far inside the line
    ([("irregular", 20, 2), ("structured", 10, 2)], fr.HOLDS),
    # irregular far cheaper
    ([("irregular", 10, 2), ("structured", 20, 2)], fr.DOES_NOT_HOLD),
    # the cheap structured model sits on the line: cheaper in about half the resamples
    ([("irregular", 20, 2), ("structured", 10, 10)], fr.UNDECIDED),
    # crossing frontiers: irregular cheaper near dense, structured cheaper near the line, whose model sits on it
    ([("irregular", 20, 0), ("irregular", 15, 10), ("structured", 25, 0), ("structured", 12, 9)], fr.UNDECIDED),
    # a near tie in cost does not matter when accuracy decides: both clearly inside, structured a hair cheaper
    ([("irregular", 10.001, 1), ("structured", 10.0, 1)], fr.HOLDS),
    # no structured model at all
    ([("irregular", 10, 2)], fr.NOT_MEASURED),
])
def test_verdicts_on_hand_made_frontiers(models, verdict) -> None:
    result = comparison(models).compare(TOLERANCE)
    assert result.verdict == verdict
    if verdict == fr.HOLDS:
        assert result.probability >= 0.95 and result.structured_cost < result.irregular_cost
    if verdict == fr.DOES_NOT_HOLD:
        assert result.probability <= 0.05 and result.irregular_cost < result.structured_cost
    if verdict == fr.UNDECIDED:
        assert 0.05 < result.probability < 0.95


def test_a_side_whose_models_all_miss_the_line_falls_back_to_the_dense_model() -> None:
    result = comparison([("irregular", 10, 40), ("structured", 20, 2)]).compare(TOLERANCE)
    assert result.irregular_cost == 100.0 and result.irregular_model == 2  # the dense model, shared by both sides
    assert result.verdict == fr.HOLDS


def test_moving_one_image_flips_a_point_pick_but_not_the_paired_pick_nor_the_verdict() -> None:
    """A point rule (the highest step at or above the line) picks the cheap irregular model when it sits on the line
    and the next one when it misses by one image. The paired rule of ``study.contract`` keeps the step well inside
    both times, and the pooled frontier verdict is the same either way, since a second irregular model, well inside
    the line, is cheaper than the structured one too."""
    line = contract.accuracy_threshold(DENSE.mean(), 100 * TOLERANCE)
    point_picks, paired_picks, verdicts = [], [], []
    for lost in (10, 11):  # on the line, one image below it
        steps = [{"step": 1, "pruning_rate": 5.0, **contract.paired_counts(DENSE, correctness(2))},
                 {"step": 2, "pruning_rate": 10.0, **contract.paired_counts(DENSE, correctness(lost))}]
        for step, lost_images in zip(steps, (2, lost)):
            step["val_accuracy"] = correctness(lost_images).mean()
        point_picks.append(max((s for s in steps if s["val_accuracy"] >= line), key=lambda s: s["pruning_rate"])["step"])
        paired_picks.append(contract.select_step(steps, 100 * TOLERANCE)["step"])
        verdicts.append(comparison([("irregular", 10, lost), ("irregular", 12, 2), ("structured", 30, 2)]).compare(TOLERANCE))
    assert point_picks == [2, 1]
    assert paired_picks == [1, 1]
    assert [v.verdict for v in verdicts] == [fr.DOES_NOT_HOLD, fr.DOES_NOT_HOLD]


def test_the_bootstrap_is_seeded() -> None:
    models = [("irregular", 20, 2), ("structured", 10, 10)]
    first, again = comparison(models, seed=3).compare(TOLERANCE), comparison(models, seed=3).compare(TOLERANCE)
    assert first.probability == again.probability
    other = comparison(models, seed=4).compare(TOLERANCE)
    assert other.probability != first.probability  # the seed does something
    assert abs(other.probability - first.probability) < 0.05  # and 2,000 resamples agree to a few percent


def test_bootstrap_accuracies_are_the_mean_over_the_resampled_images() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random((3, 50)) < 0.8
    replicates = fr.bootstrap_accuracies(correct, 7, seed=1)
    counts = np.concatenate(list(fr.resample_counts(50, 7, seed=1)))
    assert counts.sum(axis=1).tolist() == [50] * 7
    for r in range(7):
        indices = np.repeat(np.arange(50), counts[r])  # the resample as image indices
        np.testing.assert_allclose(replicates[r], correct[:, indices].mean(axis=1), rtol=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 1)), min_size=1, max_size=8),
       st.lists(st.floats(-0.1, 1.1), min_size=1, max_size=6))
def test_frontier_agrees_with_a_brute_force_scan(models, levels) -> None:
    costs = np.array([c for c, _ in models])
    accuracies = np.array([a for _, a in models])
    got = fr.frontier(costs, accuracies, np.array(levels))
    for level, value in zip(levels, got):
        reaching = [c for c, a in models if a >= level - fr.ROUNDING]
        assert value == (min(reaching) if reaching else np.inf)
    # replicates: each row its own accuracies and level
    rows = np.stack([accuracies, accuracies[::-1]])
    got_rows = fr.frontier(costs, rows, np.array([levels[0], levels[-1]]))
    assert got_rows[0] == fr.frontier(costs, rows[0], levels[0])
    assert got_rows[1] == fr.frontier(costs, rows[1], levels[-1])


def test_frontier_cost_never_falls_as_the_accuracy_level_rises() -> None:
    rng = np.random.default_rng(1)
    costs, accuracies = rng.random(20) * 50, rng.random(20)
    levels = np.linspace(0, 1, 101)
    values = fr.frontier(costs, accuracies, levels)
    finite = values[np.isfinite(values)]
    assert np.all(np.diff(finite) >= 0)  # a higher accuracy level never costs less
    assert np.all(np.isinf(values[len(finite):]))  # and above the best model nothing reaches it
    assert set(finite) <= set(costs)


def test_curve_and_bands_of_crossing_frontiers() -> None:
    # irregular cheaper near dense (cost 20 at no loss vs structured 25); structured cheaper from 6 lost images on
    models = [("irregular", 20, 0), ("irregular", 15, 30), ("structured", 25, 0), ("structured", 5, 6)]
    curve = comparison(models).curve(np.arange(0, 11) / N)
    assert curve["irregular"][0] == 20 and curve["structured"][0] == 25
    assert curve["structured"][-1] == 5
    assert curve["probability"][0] <= 0.05 and curve["probability"][-1] >= 0.95
    for side in fr.SIDES:
        assert np.all(curve[f"{side}_low"] <= curve[f"{side}_high"])
    found = fr.bands(curve["loss"], curve["probability"])
    assert found["irregular"][0][0] == 0.0
    assert found["structured"][-1][1] == pytest.approx(10 / N)


def test_bands_split_sorted_levels_into_stretches() -> None:
    found = fr.bands(np.array([0, 1, 2, 3, 4.0]), np.array([0.0, 0.01, 0.5, 0.99, 1.0]))
    assert found == {"irregular": [(0.0, 1.0)], "undecided": [(2.0, 2.0)], "structured": [(3.0, 4.0)]}
    with pytest.raises(ValueError, match="sorted"):
        fr.bands(np.array([1.0, 0.0]), np.array([0.5, 0.5]))


def test_bad_inputs_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="unknown sides"):
        fr.FrontierBootstrap([1.0], ["diagonal"], DENSE[None, :], DENSE)
    with pytest.raises(ValueError, match="2 costs"):
        fr.FrontierBootstrap([1.0, 2.0], ["irregular"], DENSE[None, :], DENSE)
    with pytest.raises(ValueError, match="confidence"):
        fr.verdict_of(0.5, confidence=0.4)


def test_priced_reuses_the_replicates_under_other_costs() -> None:
    judged = comparison([("irregular", 20, 2), ("structured", 10, 2)])
    swapped = judged.priced([10.0, 20.0, 100.0])
    assert swapped.replicates is judged.replicates
    assert judged.compare(TOLERANCE).verdict == fr.HOLDS and swapped.compare(TOLERANCE).verdict == fr.DOES_NOT_HOLD
    with pytest.raises(ValueError, match="costs"):
        judged.priced([1.0, float("nan"), 3.0])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([2.0, 4.0, 8.0, 16.0]), st.integers(0, 30), st.integers(0, 10)), min_size=1, max_size=5),
       st.integers(1, 4))
def test_pick_shares_agree_with_the_selection_rule_replicate_by_replicate(steps, replicates) -> None:
    rates = [r for r, _, _ in steps]
    n, tolerance_pp = 1000, 1.0  # ten images
    b = np.array([[(lost + 3 * r) % 31 for _, lost, _ in steps] for r in range(replicates)])  # only dense right
    c = np.array([[(won + r) % 11 for _, _, won in steps] for r in range(replicates)])  # only the step right
    expected = np.zeros(len(steps))
    for row_b, row_c in zip(b, c):
        records = [{"step": i, "pruning_rate": rate, "val_accuracy": 0.9 + (cc - bb) / n, "val_only_dense_right": int(bb),
                    "val_only_step_right": int(cc), "val_images": n} for i, (rate, bb, cc) in enumerate(zip(rates, row_b, row_c))]
        expected[contract.select_step(records, tolerance_pp)["step"]] += 1 / replicates
    np.testing.assert_allclose(fr.pick_shares(rates, b, c, n, tolerance_pp), expected)


def test_bootstrap_counts_are_exact_counts_of_the_drawn_images() -> None:
    flags = np.zeros((2, 30), dtype=bool)
    flags[0, :5] = True
    counts = fr.bootstrap_counts(flags, 3, seed=0)
    draws = np.concatenate(list(fr.resample_counts(30, 3, seed=0)))
    np.testing.assert_array_equal(counts[:, 0], draws[:, :5].sum(axis=1))
    assert (counts[:, 1] == 0).all()


def test_rate_at_line_is_the_highest_rate_reaching_it_or_the_unpruned_model() -> None:
    rows = np.array([[0.99, 0.98, 0.90], [0.97, 0.96, 0.95]])
    assert fr.rate_at_line([2.0, 4.0, 8.0], rows, np.array([0.975, 0.98])).tolist() == [4.0, 1.0]


def test_a_model_exactly_on_the_line_reaches_it() -> None:
    """0.99 - 0.005 is not 0.985 in floating point; a model losing exactly the tolerance is still at the line."""
    judged = comparison([("irregular", 20, 0), ("structured", 10, 10)], resamples=100)
    assert judged.compare(TOLERANCE).structured_cost == 10  # ten images lost of 2,000: exactly 0.5 points
    assert fr.frontier(np.array([1.0]), np.array([0.985]), 0.99 - 0.005) == 1.0
