"""The L1 filter baseline: PyTorch's ln_structured removes whole filters of smallest L1 norm, reaches the filter
schedule's per-layer split at each rate, composes with earlier steps, and keeps the filters at zero through
masked retraining."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from study.compression import l1_filter, magnitude, pruning
from study.core import data, models, training
from study.core.training import TrainConfig
from tests.conftest import step_saver

DENSITY = {"conv1": 2, "conv2": 1, "fc1": 1}  # the LeNet-5 filter schedule's split (fc2's rows are the classes)
SHAPE = models.INPUT_SHAPES["lenet5"]


def _lenet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build_model("lenet5")


def _zero_rows(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: (m.weight.detach().flatten(1) == 0).all(dim=1) for n, m in models.prunable_layers(net).items()}


def test_a_step_removes_whole_filters_of_smallest_l1_norm_to_the_schedules_split() -> None:
    net = _lenet()
    norms = {n: m.weight.detach().flatten(1).abs().sum(dim=1) for n, m in models.prunable_layers(net).items()}
    keep = pruning.split_rate(net, 4.0, DENSITY)
    kept = l1_filter.prune_filters_to_rate(net, 4.0, DENSITY, SHAPE)
    plain = magnitude.plain_copy(net)
    for name, layer in models.prunable_layers(plain).items():
        weight = layer.weight.detach().flatten(1)
        zero_rows = (weight == 0).all(dim=1)
        partly_zero = (weight == 0).any(dim=1) & ~zero_rows
        assert not partly_zero.any(), f"{name}: a mask that is not whole filters"
        rows = weight.shape[0]
        assert int((~zero_rows).sum()) == kept[name] == (round(keep[name] * rows) if name in DENSITY else rows)
        if zero_rows.any():  # the removed filters are those of smallest L1 norm
            assert norms[name][zero_rows].max() <= norms[name][~zero_rows].min()
    assert models.pruning_rate(plain) == pytest.approx(4.0, rel=0.02)


def test_steps_compose_and_never_revive_a_filter() -> None:
    net = _lenet(1)
    l1_filter.prune_filters_to_rate(net, 2.0, DENSITY, SHAPE)
    first = _zero_rows(magnitude.plain_copy(net))
    with torch.no_grad():  # retraining moved the weights: the next step ranks the survivors anew
        for layer in models.prunable_layers(net).values():
            layer.weight_orig.mul_(torch.rand_like(layer.weight_orig) + 0.5) if hasattr(layer, "weight_orig") else None
    l1_filter.prune_filters_to_rate(net, 6.0, DENSITY, SHAPE)
    second = _zero_rows(magnitude.plain_copy(net))
    for name in first:
        assert bool((second[name] | ~first[name]).all()), f"{name}: a filter removed at 2x came back at 6x"
    assert models.pruning_rate(magnitude.plain_copy(net)) == pytest.approx(6.0, rel=0.02)
    assert l1_filter.prune_filters_to_rate(net, 3.0, DENSITY, SHAPE)["conv1"] == int((~second["conv1"]).sum())  # no un-pruning


def test_networks_that_join_channels_are_refused_with_the_reason() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 26 * 26, 10))
    with pytest.raises(ValueError, match="plain chains"):
        l1_filter.prune_filters_to_rate(net, 2.0, {"0": 1}, (1, 28, 28))


def test_the_schedule_reaches_each_rate_and_retraining_keeps_the_filters_removed(synthetic_root: Path, tmp_path: Path) -> None:
    splits = data.load_dataset("mnist", synthetic_root, val_size=56, check_sha256=False)
    net = _lenet(3)
    save_step, saved = step_saver(tmp_path)
    retrain = TrainConfig(epochs=1, batch_size=32, lr=0.05, lr_schedule="constant", seed=0)
    reference = training.correct_predictions(net, splits["val"])
    run = magnitude.run_schedule(net, splits, [2, 4, 8], retrain, reference, 100.0, stop_after_misses=2, save_step=save_step,
                                 progress=False, prune_to=lambda m, r: l1_filter.prune_filters_to_rate(m, r, DENSITY, SHAPE))
    assert [s["target_rate"] for s in run.steps] == [2, 4, 8]
    previous = None
    for step, path in zip(run.steps, saved):
        loaded, _ = training.load_model(path, "lenet5")
        assert step["pruning_rate"] == pytest.approx(step["target_rate"], rel=0.02)  # retraining revived no weight
        rows = _zero_rows(loaded)
        assert rows["fc1"].any() and not rows["fc2"].any()  # fc2's rows are the classes: never pruned
        if previous is not None:
            assert all(bool((rows[n] | ~previous[n]).all()) for n in rows)
        previous = rows
