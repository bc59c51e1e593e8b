"""N:M as a third side, end to end on tiny data: every stage in process, with ``nm`` among the compared schemes (ADMM
through 2:4 then 1:4), so its models are pruned, quantized, stored in N:M formats, priced, judged against both
sides, published and reported. The committed study does not compare N:M yet; this is the path its rerun takes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from study import paths
from study.core.params import load_params
from tests.conftest import run_every_stage, write_tiny_params

@pytest.fixture(scope="module")
def nm_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nm")
    params_file = write_tiny_params(out / "params.yaml", synthetic_root, weight_bits=[8, 1])  # binary: its own paths
    settings = yaml.safe_load(params_file.read_text())
    settings["baselines"] = {b: v for b, v in settings["baselines"].items() if b == "lenet5-mnist"}
    settings["compare"].update(baselines=["lenet5-mnist"], schemes=["irregular", "filter", "nm"], nm_baselines=["lenet5-mnist"])
    schedules = settings["prune"]["lenet5-mnist"]
    settings["prune"] = {"lenet5-mnist": {s: schedules[s] for s in ("irregular", "filter")} | {
        "nm": {"patterns": ["2:4", "1:4"], "density_weights": {"*": 1}, "admm_epochs": 1, "retrain_epochs": 1}}}
    settings["quantize"] = {"lenet5-mnist": settings["quantize"]["lenet5-mnist"]}
    settings["admm"]["tolerance_pp"] = 50.0
    params_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    params = load_params(params_file)
    layout = paths.Layout.at(out)
    run_every_stage(params, layout)
    return out


def test_nm_models_are_pruned_to_their_patterns_stored_in_nm_formats_and_judged_as_a_third_side(nm_run: Path) -> None:
    results = nm_run / "results"
    record = json.loads((results / "prune" / "lenet5-mnist" / "nm.json").read_text())
    assert [s["pattern"] for s in record["steps"]] == ["2:4", "1:4"] and [s["target_rate"] for s in record["steps"]] == [2, 4]
    storage = json.loads((results / "storage" / "lenet5-mnist.json").read_text())
    nm_models = [m for m in storage["models"] if m["scheme"] == "nm"]
    assert nm_models and all(m["indices"] > 0 for m in nm_models)
    layers = pd.read_csv(results / "storage" / "lenet5-mnist" / "layers.csv") if (results / "storage" / "lenet5-mnist" / "layers.csv").is_file() else None
    if layers is not None:
        assert set(layers[layers["scheme"] == "nm"]["format"]) <= {"nm_hw", "nm_min", "dense"}
    judged = pd.read_csv(results / "frontier" / "lenet5-mnist" / "models.csv")
    assert set(judged[judged["scheme"] == "nm"]["side"]) == {"nm"}
    assert set(judged[judged["scheme"] == "nm"]["method"]) == {"ADMM", "ASP"}  # the N:M side pools both pruners
    baseline = json.loads((results / "prune" / "lenet5-mnist" / "asp.json").read_text())
    assert [s["target_rate"] for s in baseline["steps"]] == [2, 4] and baseline["method_label"] == "ASP"
    gaps = pd.read_csv(results / "verdicts" / "lenet5-mnist" / "verdicts.csv")
    assert set(map(tuple, gaps[["base", "challenger"]].drop_duplicates().values)) == {
        ("irregular", "structured"), ("irregular", "nm"), ("structured", "nm")}
    t3 = pd.read_csv(nm_run / "report" / "tables" / "T3_schemes.csv")
    assert set(t3[t3["scheme"] == "nm"]["method"]) == {"ADMM", "ASP"}
    claims = pd.read_csv(nm_run / "report" / "tables" / "claims.csv", keep_default_na=False)
    assert claims["claim"].str.contains("N:M semi-structured pruning stores less than irregular").any()
    published = pd.read_csv(nm_run / "models" / "published" / "lenet5-mnist" / "index.csv")
    assert (published["scheme"] == "nm").any()


def test_the_opening_figure_draws_the_nm_frontier_beside_the_other_two(nm_run: Path) -> None:
    curves = pd.read_csv(nm_run / "results" / "frontier" / "lenet5-mnist" / "curves.csv")
    assert {"nm", "nm_low", "nm_high"} <= set(curves.columns)
    assert (nm_run / "report" / "figures" / "png" / "F0_frontiers_lenet5-mnist.png").stat().st_size > 1000


def test_latency_says_why_nm_has_no_number_on_the_cpu(nm_run: Path) -> None:
    timed = pd.read_csv(nm_run / "results" / "latency" / "lenet5-mnist" / "models.csv")
    semi = timed[timed["kind"] == "N:M"]
    assert len(semi) == 2 and semi["median_s"].isna().all() and semi["note"].str.contains("CUDA only").all()
    t7 = pd.read_csv(nm_run / "report" / "tables" / "T7_latency_lenet5-mnist.csv", keep_default_na=False)
    assert t7[t7["model"] == "N:M"]["note"].str.startswith("not measured").all()


def test_semi_structured_timing_needs_cuda() -> None:
    import torch

    from study.costs import latency

    if torch.cuda.is_available():
        timing = latency.semi_structured_gemm(128, 128, 64, min_run_time=0.05)
        assert timing["speedup"] > 0
    else:
        with pytest.raises(RuntimeError, match="no N:M kernel"):
            latency.semi_structured_gemm(128, 128, 64)


def test_the_reports_opening_says_where_nm_is_cheapest(nm_run: Path) -> None:
    from study.report import claims

    table = pd.read_csv(nm_run / "results" / "verdicts" / "lenet5-mnist" / "verdicts.csv")
    text = claims.nm_cheapest_text({"lenet5-mnist": table}, "test")
    assert text.startswith("Where the N:M frontier is the cheapest of the three") and "lenet5-mnist: " in text
    assert claims.nm_cheapest_text({"lenet5-mnist": table[table["challenger"] != "nm"]}, "test") == ""
