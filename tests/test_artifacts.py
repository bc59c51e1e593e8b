"""Atomic outputs and the common metrics JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.core import artifacts

GOOD = {
    "model": "lenet5",
    "dataset": "mnist",
    "scheme": "dense",
    "weight_bits": 32,
    "test_accuracy": 0.99,
    "val_accuracy": 0.98,
    "pruning_rate": 1.0,
    "wall_s": 1.5,
}


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.json"
    artifacts.write_json(target, {"v": 1})

    def explode(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.os, "replace", explode)
    with pytest.raises(OSError, match="disk full"):
        artifacts.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_metrics_have_common_keys_first_and_provenance(tmp_path: Path) -> None:
    written = artifacts.write_metrics(tmp_path / "m.json", {**GOOD, "extra": 3}, seed=7, params={"lr": 0.1})
    on_disk = json.loads((tmp_path / "m.json").read_text())
    assert on_disk == written
    assert list(on_disk)[: len(artifacts.METRICS_KEYS)] == list(artifacts.METRICS_KEYS)
    assert on_disk["extra"] == 3
    assert on_disk["provenance"]["seed"] == 7 and on_disk["provenance"]["params"] == {"lr": 0.1}
    assert on_disk["provenance"]["torch"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"test_accuracy": 99.1}, "must be a fraction"),
        ({"pruning_rate": float("inf")}, "must be finite"),
    ],
)
def test_bad_metrics_are_refused_and_nothing_written(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        artifacts.write_metrics(tmp_path / "m.json", {**GOOD, **change})
    assert not (tmp_path / "m.json").exists()


def test_missing_common_key_is_refused(tmp_path: Path) -> None:
    incomplete = {k: v for k, v in GOOD.items() if k != "wall_s"}
    with pytest.raises(ValueError, match=r"lacks the common keys \['wall_s'\]"):
        artifacts.write_metrics(tmp_path / "m.json", incomplete)
