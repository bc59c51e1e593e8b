"""`make demo`: every stage on the small profile, labelled as a demo, writing nothing outside its folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from study import demo
from study.core.params import load_params
from tests.conftest import REPO, write_tiny_params

STUDY_OUTPUTS = ("dvc.lock", "results", "metrics", "report", "models", "runs")


def _fingerprint() -> dict[str, str]:
    """sha256 of every file of the full study's outputs."""
    files = [REPO / "dvc.lock"] + [p for folder in STUDY_OUTPUTS[1:] for p in sorted((REPO / folder).rglob("*"))]
    return {str(p.relative_to(REPO)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def test_demo_profile_keeps_the_study_keys_and_shrinks_the_run() -> None:
    study = yaml.safe_load((REPO / "params.yaml").read_text())
    values = demo.demo_params(study, "demo/data")
    assert set(values) == set(study)
    assert list(values["baselines"]) == values["compare"]["baselines"] == [study["compare"]["baselines"][0]]
    assert values["compare"]["schemes"] == study["compare"]["schemes"] and len(values["compare"]["weight_bits"]) == 2
    for schedule in values["prune"][values["compare"]["baselines"][0]].values():
        assert len(schedule.get("rates", schedule.get("patterns"))) <= 3 and schedule["admm_epochs"] == schedule["retrain_epochs"] == 1
    assert values["compare"]["nm_baselines"] == values["compare"]["baselines"]  # N:M on the demo's one network


def test_demo_refuses_to_write_over_the_study() -> None:
    before = _fingerprint()
    for out in (".", str(REPO)):
        with pytest.raises(ValueError, match="would overwrite the study's own outputs"):
            demo.run(out_root=out)
    assert demo.main(["--out", "."]) == 2
    assert _fingerprint() == before


def test_demo_runs_every_stage_and_labels_every_table_and_the_page(synthetic_root: Path, tmp_path: Path) -> None:
    before = _fingerprint()
    params = write_tiny_params(tmp_path / "study-params.yaml", synthetic_root)
    out = tmp_path / "demo"
    page = demo.run(params, out, source_data=synthetic_root, sizes=(200, 60, 40), label="DEMO profile: a test")

    assert _fingerprint() == before, "the demo changed the full study's outputs"
    demo_params = load_params(out / "params.yaml")
    assert demo_params.compare.weight_bits == demo.PROFILE["weight_bits"] and demo_params.data.val_size == 40
    for scheme in demo_params.compare.schemes:
        assert (out / "results" / "prune" / "lenet5-mnist" / f"{scheme}.json").is_file()
        for bits in demo_params.compare.weight_bits:
            assert (out / "results" / "quantize" / "lenet5-mnist" / f"{scheme}-{bits}.json").is_file()
    tables = sorted((out / "report" / "tables").glob("*.md"))
    assert len(tables) >= 10 and all(t.read_text().startswith("*DEMO profile: a test*") for t in tables)
    assert all(t.read_text().startswith("% DEMO profile: a test") for t in (out / "report" / "tables").glob("*.tex"))
    figures = {p.name.split("_")[0] for p in (out / "report" / "figures" / "png").glob("*.png")}
    assert figures == {f"F{i}" for i in range(0, 10)}  # one network: each of F0-F9 once
    assert len(list((out / "report" / "figures" / "png").glob("*.png"))) == 10
    seeds = (out / "results" / "seeds" / "lenet5-mnist" / "per_seed.csv").read_text().splitlines()
    assert len(seeds) > 1 and all(line.startswith("0,") for line in seeds[1:])  # the demo runs no extra seed
    assert page == out / "report" / "index.html" and "DEMO profile: a test" in page.read_text()
    assert (out / "runs" / "report.ipynb").is_file()
