"""Atomic outputs and the common metrics JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

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
    assert on_disk["provenance"]["packages"]["torch"] == torch.__version__
    assert set(artifacts.RESULT_PACKAGES) <= set(on_disk["provenance"]["packages"])
    assert on_disk["provenance"]["packages"]["numpy"] and on_disk["provenance"]["packages"]["pandas"]
    assert len(on_disk["provenance"]["lock_sha256"]) == 64


def test_the_dirty_flag_sees_source_changes_only(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    assert artifacts.source_state(tmp_path) == {"git_commit": None, "git_dirty": None}  # not a checkout
    git("init", "-q")
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "stage.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}")
    (tmp_path / "dvc.lock").write_text("a")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    state = artifacts.source_state(tmp_path)
    assert len(state["git_commit"]) == 40 and state["git_dirty"] is False
    # what DVC rewrites while the study runs is not a change of the code
    (tmp_path / "results" / "r.json").write_text('{"a": 1}')
    (tmp_path / "dvc.lock").write_text("b")
    (tmp_path / "results" / "new.json").write_text("{}")
    assert artifacts.source_state(tmp_path)["git_dirty"] is False
    (tmp_path / "study" / "new_module.py").write_text("y = 2\n")  # an uncommitted new module is a change
    assert artifacts.source_state(tmp_path)["git_dirty"] is True
    (tmp_path / "study" / "new_module.py").unlink()
    (tmp_path / "study" / "stage.py").write_text("x = 2\n")
    assert artifacts.source_state(tmp_path)["git_dirty"] is True


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


def test_provenance_table_names_metrics_files_relative_to_their_root(tmp_path: Path) -> None:
    """The report's provenance table is committed: it must not carry the folders of the machine that ran it."""
    from study.report.common import provenance_table

    out, repo = tmp_path / "scratch", tmp_path / "repo"
    files = [out / "metrics/train/a.json", repo / "metrics/prune/a/irregular.json", tmp_path / "elsewhere.json"]
    for path in files:
        artifacts.write_metrics(path, GOOD, seed=1, params={})
    table = provenance_table(files, roots=(out, repo))
    assert table["metrics"].tolist() == ["metrics/train/a.json", "metrics/prune/a/irregular.json", files[2].as_posix()]
    assert table["seed"].tolist() == [1, 1, 1]
