"""params.yaml validation: every bad value is named by its key path with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from study.params import ParamsError, load_params, main
from tests.conftest import REPO


def _write(tmp_path: Path, edit) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_shipped_params_are_valid() -> None:
    params = load_params(REPO / "params.yaml")
    assert "lenet5-mnist" in params.baselines


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda p: p["baselines"]["lenet5-mnist"].update(model="lenet6"),
            r"baselines\.lenet5-mnist\.model: unknown model 'lenet6'; valid models: \['lenet5'\]",
        ),
        (
            lambda p: p["baselines"]["lenet5-mnist"].update(dataset="mnsit"),
            r"baselines\.lenet5-mnist\.dataset: unknown dataset 'mnsit'; valid datasets: \['fashion_mnist', 'mnist'\]",
        ),
        (lambda p: p["baselines"]["lenet5-mnist"].update(epoch=3), r"baselines\.lenet5-mnist\.epoch: unknown key"),
        (lambda p: p["baselines"]["lenet5-mnist"].update(epochs="many"), r"baselines\.lenet5-mnist\.epochs: .*integer.*'many'"),
        (lambda p: p["baselines"]["lenet5-mnist"].update(lr=-1), r"baselines\.lenet5-mnist\.lr: .*greater than 0"),
        (lambda p: p["baselines"]["lenet5-mnist"].update(lr_schedule="step"), r"lr_schedule: unknown lr_schedule 'step'"),
        (lambda p: p["data"].update(val_size=-5), r"data\.val_size: .*greater than or equal to 0"),
        (lambda p: p.update(sed=1), r"sed: unknown key"),
        (lambda p: p["baselines"].update({"x": p["baselines"]["lenet5-mnist"]}), r"entry name must be '<model>-<dataset>'"),
        (lambda p: p["baselines"].clear(), r"baselines: .*at least 1"),
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, edit, expected: str) -> None:
    with pytest.raises(ParamsError, match=expected):
        load_params(_write(tmp_path, edit))


def test_missing_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(REPO / "params.yaml")]) == 0
    assert main([str(_write(tmp_path, lambda p: p.update(seed=-1)))]) == 1
    assert "seed:" in capsys.readouterr().err
