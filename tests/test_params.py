"""params.yaml validation: every bad value is named by its key path with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from study.core.params import ParamsError, load_params, main
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
    # one tolerance per compared baseline, or one for all
    assert [params.admm.tolerance_for(b) for b in params.compare.baselines] == [0.2, 0.5]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda p: p["baselines"]["lenet5-mnist"].update(model="lenet6"),
            r"baselines\.lenet5-mnist\.model: unknown model 'lenet6'; valid models: \['alexnet', 'lenet5', 'resnet18_cifar'",
        ),
        (
            lambda p: p["baselines"]["lenet5-mnist"].update(dataset="mnsit"),
            r"baselines\.lenet5-mnist\.dataset: unknown dataset 'mnsit'; valid datasets: \['cifar10', 'fashion_mnist', 'imagenet', 'mnist'\]",
        ),
        (
            lambda p: p["baselines"]["lenet5-mnist"].update(model="vgg16_cifar"),
            r"baselines\.lenet5-mnist: .*'vgg16_cifar' reads images of shape \(3, 32, 32\), but mnist has \(1, 28, 28\)",
        ),
        (lambda p: p["baselines"]["lenet5-mnist"].update(epoch=3), r"baselines\.lenet5-mnist\.epoch: unknown key"),
        (lambda p: p["baselines"]["lenet5-mnist"].update(epochs="many"), r"baselines\.lenet5-mnist\.epochs: .*integer.*'many'"),
        (lambda p: p["baselines"]["lenet5-mnist"].update(lr=-1), r"baselines\.lenet5-mnist\.lr: .*greater than 0"),
        (lambda p: p["baselines"]["lenet5-mnist"].update(lr_schedule="step"), r"lr_schedule: unknown lr_schedule 'step'"),
        (lambda p: p["data"].update(val_size=-5), r"data\.val_size: .*greater than or equal to 1"),
        (lambda p: p["data"].update(val_size=60000), r"data\.val_size: 60000 holds out every training image of lenet5-\w+'s"),
        (lambda p: p["compare"].update(schemes=["irregular", "kernel"]), r"compare\.schemes: .*valid: \['irregular'"),
        (lambda p: p["compare"].update(schemes=["filter"]), r"compare\.schemes: the comparison needs 'irregular'"),
        (lambda p: p["compare"].update(weight_bits=[4, 32]), r"compare\.weight_bits: .*distinct values of \[1, 2"),
        (lambda p: p["compare"].update(baselines=["lenet5-cifar"]), r"compare\.baselines: 'lenet5-cifar' is not a baseline"),
        (lambda p: p["compare"].update(baselines=["lenet5-fashion_mnist"]), r"prune\.lenet5-fashion_mnist has no schedule"),
        (lambda p: p["report"].update(mask_layer="conv9"), r"report\.mask_layer: lenet5-mnist's model has no layer 'conv9'"),
        (lambda p: p["baselines"]["lenet5-mnist"].update(model="lenet5$(touch /tmp/x)"), r"unknown model 'lenet5\$\(touch"),
        (lambda p: p.update(sed=1), r"sed: unknown key"),
        (lambda p: p["baselines"].update({"x": p["baselines"]["lenet5-mnist"]}), r"entry name must be '<model>-<dataset>'"),
        (lambda p: p["baselines"].clear(), r"baselines: .*at least 1"),
        (
            lambda p: p["prune"]["lenet5-mnist"].update(kernel=p["prune"]["lenet5-mnist"]["filter"]),
            r"prune\.lenet5-mnist\.kernel: unknown pruning scheme 'kernel'",
        ),
        (
            lambda p: p["prune"]["lenet5-mnist"]["channel"]["density_weights"].update(conv1=1),
            r"prune\.lenet5-mnist\.channel\.density_weights\.conv1: conv1 has a single channel unit",
        ),
        (
            lambda p: p["prune"]["lenet5-mnist"]["irregular"]["density_weights"].update(fc3=1),
            r"density_weights\.fc3: the model has no layer 'fc3'",
        ),
        (lambda p: p["prune"]["lenet5-mnist"]["irregular"].update(rates=[40, 15]), r"strictly increasing"),
        (lambda p: p["prune"]["lenet5-mnist"]["irregular"].update(admm_epochs=0), r"admm_epochs: .*greater than or equal to 1"),
        (lambda p: p["prune"].update({"vgg-cifar": {}}), r"prune\.vgg-cifar: no such baseline"),
        (lambda p: p["admm"].update(rho_max=0.001), r"rho_max \(0.001\) must be >= rho"),
        (
            lambda p: p["prune"]["lenet5-mnist"]["filter"].update(allocation="magnitude"),
            r"prune\.lenet5-mnist\.filter\.allocation: 'magnitude' ranks single weights",
        ),
        (lambda p: p["prune"]["lenet5-mnist"]["irregular"].update(allocation="global"), r"allocation: Input should be 'density' or 'magnitude'"),
        (lambda p: p["quantize"]["lenet5-mnist"].update(mapping_fractions=[0.5, 0.9]), r"must increase within \(0, 1\] and end at 1.0"),
        (lambda p: p["admm"].update(tolerance_pp={"lenet5-mnist": 0.2}),
         r"admm.tolerance_pp: give one value per compared baseline \(missing \['vgg6-fashion_mnist'\], not a baseline \[\]\)"),
        (lambda p: p["admm"].update(tolerance_pp={"lenet5-mnist": 0.2, "vgg6-fashion_mnist": -1}), r"tolerance_pp .* must be >= 0"),
        (lambda p: p["admm"].update(stop_tolerance_factor=0.5), r"admm\.stop_tolerance_factor: .*greater than or equal to 1"),
        (lambda p: p["gap"].update(tolerance_factors=[0.5, 1.5]), r"gap\.tolerance_factors: .*include 1\.0"),
        (lambda p: p["gap"].update(check_seed=0), r"gap\.check_seed: 0 is also `seed`"),
        (lambda p: p["baselines"]["vgg6-fashion_mnist"].update(augment="rotate"),
         r"baselines\.vgg6-fashion_mnist\.augment: Input should be 'none', 'hflip' or 'crop_flip'"),
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


def test_the_paper_profile_validates_without_data() -> None:
    """profiles/paper.yaml: every model builds, every density weight resolves to layers (channel spaces of the
    residual networks included), and the stages it defines cover every network and scheme."""
    from study.compression import pruning
    from study.core.models import INPUT_SHAPES, build_model
    from study.stages.launch import stage_items

    params = load_params(REPO / "profiles" / "paper.yaml")
    assert set(params.compare.baselines) == {"vgg16_cifar-cifar10", "resnet18_cifar-cifar10", "alexnet-imagenet",
                                             "resnet50-imagenet"}
    resnet50 = build_model("resnet50")
    schedule = params.prune["resnet50-imagenet"]
    spread = pruning.expand_density_weights(resnet50, "filter", schedule["filter"].density_weights, INPUT_SHAPES["resnet50"])
    assert len(spread) == 37  # one lead per prunable channel space (stem, 32 inside bottlenecks, 4 residual streams)
    irregular = pruning.expand_density_weights(resnet50, "irregular", schedule["irregular"].density_weights)
    assert len(irregular) == 54  # every conv and the FC layer
    items = stage_items(params)
    assert len([n for n in items if n.startswith("prune@")]) == 16
    assert len([n for n in items if n.startswith("quantize@")]) == 4 * 4 * 3


def test_an_nm_pattern_written_back_unquoted_stays_a_pattern(tmp_path) -> None:
    """`dvc exp run -S` writes params.yaml back as YAML 1.2, where 2:4 needs no quotes; PyYAML's YAML 1.1 would read
    it as the base-60 integer 124 and refuse every N:M schedule."""
    from study.core.params import read_yaml

    assert read_yaml("patterns: [2:4, 1:8]\nrates: [2, 0x10, 1_000]\nlr: 5.0e-4") == {
        "patterns": ["2:4", "1:8"], "rates": [2, 16, 1000], "lr": 5.0e-4}
    written_back = (REPO / "params.yaml").read_text().replace('["2:4", "1:4", "1:8"]', "[2:4, 1:4, 1:8]")
    assert "[2:4, 1:4, 1:8]" in written_back
    (tmp_path / "params.yaml").write_text(written_back)
    assert load_params(tmp_path / "params.yaml").prune["lenet5-mnist"]["nm"].patterns == ["2:4", "1:4", "1:8"]
