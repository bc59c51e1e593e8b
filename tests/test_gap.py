"""The cost-gap statistic behind the storage and energy verdicts: the monotone fit, the cost at a level, the
two-level bootstrap, Holm's rule, the simulation that proves the rule, and the recorded verdicts' stability."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import isotonic_regression

from study.core.params import load_params
from study.report import gap
from study.report.frontier import DOES_NOT_HOLD, HOLDS, UNDECIDED
from study.stages import verdicts as stage
from tests.conftest import REPO

rows_of_losses = arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 8)),
                        elements=st.floats(-1, 1, allow_nan=False, width=32))


@settings(max_examples=150, deadline=None)
@given(rows_of_losses)
def test_isotonic_rows_is_the_least_squares_monotone_fit(values: np.ndarray) -> None:
    fitted = gap.isotonic_rows(values)
    expected = np.stack([isotonic_regression(row).x for row in values])  # scipy's pool adjacent violators
    assert np.allclose(fitted, expected, atol=1e-9)
    assert (np.diff(fitted, axis=1) >= -1e-12).all()  # feasible
    assert np.allclose(gap.isotonic_rows(fitted), fitted)  # idempotent


def test_cost_at_a_level_interpolates_log_cost_between_the_steps_around_it_and_never_extrapolates() -> None:
    fitted = np.array([[0.0, 0.001, 0.003]])
    log_costs = np.log([100.0, 50.0, 10.0])
    assert np.exp(gap.cost_at_level(fitted, log_costs, 0.002))[0] == pytest.approx(np.sqrt(50 * 10))  # halfway, in log
    assert np.exp(gap.cost_at_level(fitted, log_costs, 0.001))[0] == pytest.approx(50.0)  # on a step: that step
    assert np.exp(gap.cost_at_level(fitted, log_costs, 0.01))[0] == pytest.approx(10.0)  # beyond the last: its cost
    assert gap.cost_at_level(fitted + 0.0005, log_costs, 0.0)[0] == np.inf  # even the first point is beyond
    # a step dearer than an earlier one never raises the cost: the cheapest step within stays the answer
    assert np.exp(gap.cost_at_level(fitted, np.log([100.0, 20.0, 50.0]), 0.002))[0] == pytest.approx(20.0)


def test_holm_steps_down_and_leaves_untested_widths_out() -> None:
    assert gap.holm([0.01, 0.04, 0.03, 0.005], 0.05) == [True, False, False, True]  # 0.03 > 0.05 / 2 stops it
    assert gap.holm([0.01, float("nan"), 0.02], 0.05) == [True, False, True]  # two tested: 0.02 <= 0.05 / 1
    assert gap.holm([0.5], 0.05) == [False]


def _gap(probability: float, reached: bool = True) -> gap.Gap:
    return gap.Gap(probability, 0.001, 1.0, 0.5, 2.0, 1.0, 0.5, 2.0, 1.0, 1.0, 0.0, 20000, reached)


def test_family_verdicts_decide_each_width_in_its_direction_after_holm() -> None:
    found = gap.family_verdicts([_gap(0.999), _gap(0.001), _gap(0.96), _gap(0.5, reached=False)], 0.95)
    # two-sided p: 0.002, 0.002, 0.08 (three tested): 0.002 <= 0.05/3, 0.002 <= 0.05/2, 0.08 > 0.05
    assert found == [HOLDS, DOES_NOT_HOLD, UNDECIDED, gap.NOT_AT_BUDGET]
    # two-sided p 0.048 against the cut 0.05, Monte Carlo error 2 x 0.001: within three errors; 0.03 is not
    assert gap.near_cut([_gap(0.976)], 0.95) == [True] and gap.near_cut([_gap(0.985)], 0.95) == [False]
    # in a family of two the first threshold is 0.05 / 2: 0.03 is then within three errors of it
    assert gap.near_cut([_gap(0.985), _gap(0.5)], 0.95) == [True, False]


def test_seed_variance_pools_each_models_spread_with_its_degrees_of_freedom() -> None:
    noise = gap.seed_variance({"a": [0.001, 0.003], "b": [0.0, 0.0, 0.003], "c": [0.002]})
    assert noise.dof == 1 + 2  # c has one seed: nothing to learn from it
    assert noise.variance == pytest.approx((2 * 0.001 ** 2 + (2 * 0.001 ** 2 + 0.002 ** 2)) / 3)
    assert gap.seed_variance({}).dof == 0 and (gap.SeedNoise().draws(np.random.default_rng(0), 3) == 0).all()


def _frontier(n: int = 4000, seed: int = 0, structured_shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, list[gap.Schedule], np.ndarray]:
    """A reference (row 0) and two schedules of three steps each whose true losses rise with the rate; the structured
    side's costs are ``exp(structured_shift)`` times the irregular ones'."""
    rng = np.random.default_rng(seed)
    reference = rng.random(n) < 0.98
    rows, costs = [reference], [1000.0]  # the unpruned model dearer than any step of either side
    schedules = []
    for side, shift in (("irregular", 0.0), ("structured", structured_shift)):
        members = [0]
        for loss, cost in zip((0.0, 0.002, 0.006), (40.0, 20.0, 10.0)):
            model = reference.copy()
            lost = rng.choice(np.flatnonzero(reference), size=int(loss * n), replace=False)
            model[lost] = False
            members.append(len(rows))
            rows.append(model)
            costs.append(cost * np.exp(shift))
        schedules.append(gap.Schedule(side, side, tuple(members)))
    return np.stack(rows), reference, schedules, np.array(costs)


def test_paired_losses_shift_each_schedules_pruned_steps_together_and_leave_the_images_alone() -> None:
    correct, reference, schedules, _ = _frontier()
    quiet = gap.paired_losses(correct, reference, schedules, gap.SeedNoise(), 300, seed=3)
    noisy = gap.paired_losses(correct, reference, schedules, gap.SeedNoise(1e-6, 2), 300, seed=3)
    assert np.allclose(quiet.replicates, quiet.images_only) and np.allclose(noisy.images_only, quiet.images_only)
    assert np.allclose(noisy.point, reference.mean() - correct.mean(axis=1))
    shift = noisy.replicates - noisy.images_only
    assert np.allclose(shift[:, 0], 0)  # the unpruned model is shared by both sides: not shifted
    for schedule in schedules:
        pruned = shift[:, list(schedule.rows[1:])]
        assert np.allclose(pruned, pruned[:, :1]) and pruned.std() > 0


@pytest.mark.parametrize("shift, verdict", [(np.log(3.0), DOES_NOT_HOLD), (-np.log(3.0), HOLDS)])
def test_a_clear_gap_is_decided_for_the_cheaper_side_with_its_ratio(shift: float, verdict: str) -> None:
    correct, reference, schedules, costs = _frontier(structured_shift=shift)
    fitted = gap.FittedSplit.of(gap.paired_losses(correct, reference, schedules, gap.SeedNoise(), 1000, 0), schedules)
    found = gap.gap_at(fitted, costs, schedules, 0.004, 5, 0.95)
    assert found.ratio == pytest.approx(np.exp(shift)) and found.ratio_low <= found.ratio <= found.ratio_high
    assert found.band_ratio == pytest.approx(np.exp(shift))  # the same shift at every level
    assert gap.family_verdicts([found], 0.95) == [verdict]
    equal = gap.gap_at(gap.FittedSplit.of(gap.paired_losses(*_frontier()[:3], gap.SeedNoise(), 1000, 0), schedules),
                       _frontier()[3], schedules, 0.004, 5, 0.95)
    # the same losses and costs on both sides (other images lost): a ratio of 1 on all images, no verdict
    assert equal.ratio == pytest.approx(1.0) and abs(equal.probability - 0.5) < 0.1
    assert gap.family_verdicts([equal], 0.95) == [UNDECIDED]


def test_the_rule_rarely_decides_between_equal_sides_and_decides_a_clear_gap() -> None:
    """The simulation of docs/methods.md, small: 2,000 images, 30 studies of a claim over 4 widths each."""
    study = gap.SyntheticStudy(images=2000, accuracy=0.95, disagreement=0.01, tolerance=0.01, seed_sd=0.0005, steps=5)
    null = gap.simulate_decisions(study, 1.0, studies=30, resamples=300, confidence=0.95, seed=0)
    assert (null != UNDECIDED).any(axis=1).sum() <= 3  # at most ~5% (+ sampling slack) decide with equal sides
    clear = gap.simulate_decisions(study, 4.0, studies=10, resamples=300, confidence=0.95, seed=1)
    assert (clear == DOES_NOT_HOLD).any(axis=1).mean() >= 0.8 and not (clear == HOLDS).any()


def test_the_stage_reads_the_schedules_and_the_seed_noise_from_its_inputs() -> None:
    models = pd.DataFrame({"id": ["m0", "m1", "m2", "m3", "m4", "m5"], "method": ["dense", "ADMM", "ADMM", "magnitude", "dense", "ADMM"],
                           "scheme": ["dense", "irregular", "irregular", "irregular", "dense", "column"],
                           "step": [0, 2, 1, 1, 0, 1], "weight_bits": [32, 32, 32, 32, 8, 8],
                           "side": ["both", "irregular", "irregular", "irregular", "both", "structured"]})
    found = stage.schedules_at(models, 32)
    assert found == [gap.Schedule("irregular", "ADMM irregular", (0, 2, 1)), gap.Schedule("irregular", "magnitude irregular", (0, 3))]
    assert stage.schedules_at(models, 8) == [gap.Schedule("structured", "ADMM column", (4, 5))]
    per_seed = pd.DataFrame({"seed": [0, 0, 1, 1], "scheme": ["dense", "irregular", "dense", "irregular"],
                             "step": [None, 2, None, 2], "test_accuracy": [0.99, 0.989, 0.992, 0.989]})
    noise = stage.training_noise(per_seed)  # losses 0.001 and 0.003 over two seeds: one degree of freedom
    assert noise.dof == 1 and noise.variance == pytest.approx(2 * 0.001 ** 2)
    assert stage.claim_widths("storage_kb", [32, 8, 4]) == [8, 4] and stage.claim_widths("energy_nj", [32, 8]) == [32, 8]


def _small_study() -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The verdicts stage's inputs for a small study: one irregular and one column schedule of 3 steps, structured
    3x dearer, the same images on both splits."""
    correct, reference, schedules, costs = _frontier(structured_shift=np.log(3.0))
    models = pd.DataFrame({"id": [f"m{i}" for i in range(len(costs))], "weight_bits": 32, "storage_kb": costs,
                           "energy_nj": costs, "energy_on_chip_nj": costs, "method": ["dense"] + ["ADMM"] * 6,
                           "scheme": ["dense"] + ["irregular"] * 3 + ["column"] * 3, "step": [0, 1, 2, 3, 1, 2, 3],
                           "side": ["both"] + ["irregular"] * 3 + ["structured"] * 3})
    return models, {f"{split}/m{i}": row for split in ("val", "test") for i, row in enumerate(correct)}


def test_another_bootstrap_seed_gives_the_same_verdicts_on_a_small_study() -> None:
    params = load_params(REPO / "params.yaml")
    params = params.model_copy(update={"gap": params.gap.model_copy(update={"resamples": 400})})
    models, hits = _small_study()
    first = stage.gap_table(models, hits, gap.SeedNoise(1e-7, 2), 0.4, params, seed=0)
    second = stage.gap_table(models, hits, gap.SeedNoise(1e-7, 2), 0.4, params, seed=1)
    assert (first["verdict"] == second["verdict"]).all() and DOES_NOT_HOLD in set(first["verdict"])
    assert not np.allclose(first["p_cheaper"], second["p_cheaper"] + 1e-3)  # other draws


@pytest.mark.parametrize("network", ["lenet5-mnist", "vgg6-fashion_mnist"])
def test_the_recorded_verdicts_are_the_same_with_the_second_bootstrap_seed(network: str) -> None:
    folder = REPO / "results" / "verdicts" / network
    table = pd.read_csv(folder / "verdicts.csv")
    turned = table[table["verdict"] != table["verdict_check_seed"]]
    assert turned.empty, f"{network}: another bootstrap seed turns {turned[['claim', 'weight_bits', 'split']].values.tolist()}"
    record = json.loads((REPO / "results" / "verdicts" / f"{network}.json").read_text())
    assert record["turned_by_check_seed"] == 0 and record["resamples"] >= 20000
    assert (table["mc_error"] <= 0.0036).all()


def test_a_split_with_a_verdict_near_its_cut_is_drawn_again_with_more_replicates(monkeypatch) -> None:
    """The sequential stop: a verdict within 3 Monte Carlo errors of its cut redraws its split with refine_factor
    times the replicates (every row of that split then reports them, with the smaller Monte Carlo error)."""
    params = load_params(REPO / "params.yaml")
    once = params.model_copy(update={"gap": params.gap.model_copy(update={"resamples": 300, "refine_factor": 1})})
    params = params.model_copy(update={"gap": params.gap.model_copy(update={"resamples": 300, "refine_factor": 4})})
    models, hits = _small_study()
    plain = stage.gap_table(models, hits, gap.SeedNoise(1e-7, 2), 0.4, once, seed=0)
    assert (plain["resamples"] == 300).all()
    monkeypatch.setattr(gap, "near_cut", lambda gaps, confidence: [True] * len(gaps))  # every verdict at its cut
    refined = stage.gap_table(models, hits, gap.SeedNoise(1e-7, 2), 0.4, params, seed=0)
    assert (refined.loc[refined["split"] == params.gap.split, "resamples"] == 1200).all()
    assert (refined.loc[refined["split"] != params.gap.split, "resamples"] == 300).all()  # only the verdict's split
    on_split = refined["split"] == params.gap.split
    assert (refined["mc_error"] < plain["mc_error"])[on_split].sum() > on_split.sum() / 2  # a quarter of the variance
