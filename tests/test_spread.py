"""The seeds stage's choice of models and the spread table (study.report.spread, study.stages.seeds)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from study.core.params import PruneSchedule
from study.report.spread import headline_models, spread_table, spread_verdict
from study.stages.seeds import cut_at, recorded_rows


def _record(scheme: str, rate: float, meets: bool, compact: float | None = None) -> dict:
    return {"scheme": scheme, "pruning_rate": rate, "compact_pruning_rate": compact or rate, "meets_tolerance": meets,
            "selected_step": 2, "val_accuracy": 0.99, "test_accuracy": 0.98}


def test_headline_models_are_the_irregular_one_and_the_structured_one_of_highest_compacted_rate() -> None:
    records = [_record("irregular", 100, True), _record("filter", 2, True, 15.7), _record("channel", 4, True, 29.8),
               _record("column", 6, False, 40.0)]  # column's rate is highest but outside the tolerance
    chosen = headline_models(records)
    assert list(chosen) == ["irregular", "channel"]
    assert headline_models([_record("irregular", 100, False), _record("filter", 2, False)]) == {}
    tie = headline_models([_record("column", 4, True, 8.0), _record("filter", 4, True, 8.0)])
    assert list(tie) == ["filter"]  # equal rates: the scheme listed first in STRUCTURED_SCHEMES


def test_cut_schedule_keeps_the_first_steps_and_runs_each_of_them() -> None:
    schedule = PruneSchedule(rates=[2, 4, 8, 16], density_weights={"conv1": 1}, admm_epochs=1, retrain_epochs=1)
    cut = cut_at(schedule, 3)
    assert cut.rates == [2, 4, 8] and cut.stop_after_misses == 3
    assert schedule.rates == [2, 4, 8, 16]  # the study's schedule is untouched


def test_spread_table_summarizes_each_model_over_its_seeds_against_the_dense_model_of_the_same_seed() -> None:
    rows = recorded_rows(0, {"val_accuracy": 0.99, "test_accuracy": 0.990},
                         {"irregular": {"selected_step": 4, "pruning_rate": 110.0, "val_accuracy": 0.989,
                                        "test_accuracy": 0.987, "meets_tolerance": True}})
    rows += [{"seed": 1, "scheme": "dense", "step": None, "pruning_rate": 1.0, "val_accuracy": 0.99,
              "test_accuracy": 0.992, "meets_tolerance": None},
             {"seed": 1, "scheme": "irregular", "step": 4, "pruning_rate": 106.0, "val_accuracy": 0.985,
              "test_accuracy": 0.986, "meets_tolerance": False}]
    table = spread_table(rows).set_index("scheme")
    assert list(table.index) == ["dense", "irregular"]
    irregular = table.loc["irregular"]
    assert irregular["seeds"] == 2 and irregular["within_tolerance"] == "1/2"
    assert irregular["test_mean_pct"] == pytest.approx(98.65)
    assert irregular["test_sd_pp"] == pytest.approx(math.sqrt(2 * 0.05 ** 2))  # 98.7 and 98.6 around 98.65
    assert (irregular["test_min_pct"], irregular["test_max_pct"]) == pytest.approx((98.6, 98.7))
    # gaps to the dense model of the same seed: 98.7 - 99.0 and 98.6 - 99.2
    assert (irregular["gap_to_dense_min_pp"], irregular["gap_to_dense_max_pp"]) == pytest.approx((-0.6, -0.3))
    assert (irregular["rate_min"], irregular["rate_max"]) == (106.0, 110.0)
    assert table.loc["dense", "within_tolerance"] == "2/2"  # the dense model is its own reference
    assert spread_table([]).empty


def test_the_verdict_says_when_the_accuracy_order_depends_on_the_seed() -> None:
    def rows(seed: int, dense: float, irregular: float, channel: float) -> list[dict]:
        return [{"seed": seed, "scheme": s, "step": None, "pruning_rate": r, "val_accuracy": a, "test_accuracy": a,
                 "meets_tolerance": None if s == "dense" else True}
                for s, r, a in (("dense", 1.0, dense), ("irregular", 40.0, irregular), ("channel", 6.0, channel))]
    per_seed = pd.DataFrame(rows(0, 0.991, 0.990, 0.989) + rows(1, 0.990, 0.988, 0.989))
    text = spread_verdict(per_seed, spread_table(per_seed.to_dict(orient="records")))
    assert "seeds 0, 1" in text and "irregular 98.80-99.00%" in text
    assert "ahead of the channel model at 1 of 2 seeds: their accuracy order depends on the seed" in text
    steady = pd.DataFrame(rows(0, 0.991, 0.990, 0.989) + rows(1, 0.990, 0.989, 0.988))
    assert "at 2 of 2 seeds." in spread_verdict(steady, spread_table(steady.to_dict(orient="records")))
    one = pd.DataFrame(rows(0, 0.991, 0.990, 0.989))
    assert spread_verdict(one, spread_table(one.to_dict(orient="records"))).startswith("One seed only (0)")
