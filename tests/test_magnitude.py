"""The magnitude-pruning baseline: PyTorch's global L1 pruning reaches each rate exactly, composes with the
earlier masks, keeps pruned weights at zero through retraining, and stores plain weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from study.compression import magnitude
from study.core import data, models, training
from study.core.training import TrainConfig
from tests.conftest import step_saver


def _lenet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build_model("lenet5")


def _weights(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.detach().flatten() for m in models.prunable_layers(net).values()])


def test_one_step_keeps_exactly_the_largest_magnitudes_over_all_layers() -> None:
    net = _lenet()
    before = _weights(net).abs()
    kept = magnitude.prune_globally_to_rate(net, 50)
    after = _weights(net)
    assert kept == round(before.numel() / 50) == int(torch.count_nonzero(after))
    survivors = after != 0
    assert before[survivors].min() >= before[~survivors].max()  # one threshold over every layer: global
    assert models.pruning_rate(net) == pytest.approx(50, rel=1e-3)


def test_a_later_step_prunes_only_among_the_survivors() -> None:
    net = _lenet(1)
    magnitude.prune_globally_to_rate(net, 10)
    first = _weights(net) != 0
    with torch.no_grad():  # make some pruned weights large: they must stay pruned
        for layer in models.prunable_layers(net).values():
            layer.weight_orig.mul_(100)
    magnitude.prune_globally_to_rate(net, 40)
    second = _weights(net) != 0
    assert int(second.sum()) == round(first.numel() / 40)
    assert not bool((second & ~first).any())
    assert magnitude.prune_globally_to_rate(net, 20) == int(second.sum())  # a lower rate never un-prunes
    with pytest.raises(ValueError, match="pruning rate 0.5"):
        magnitude.prune_globally_to_rate(net, 0.5)


def test_plain_copy_folds_the_masks_into_the_weights() -> None:
    net = _lenet(2)
    magnitude.prune_globally_to_rate(net, 8)
    plain = magnitude.plain_copy(net)
    assert not any(name.endswith(("_orig", "_mask")) for name, _ in plain.named_parameters())
    assert not any(name.endswith("_mask") for name, _ in plain.named_buffers())
    assert set(plain.state_dict()) == set(models.build_model("lenet5").state_dict())  # loads like any checkpoint
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(plain(x), net(x))


def test_the_schedule_retrains_with_masks_fixed_and_stops_after_its_misses(synthetic_root: Path, tmp_path: Path) -> None:
    splits = data.load_dataset("mnist", synthetic_root, val_size=56, check_sha256=False)
    net = _lenet(3)
    save_step, saved = step_saver(tmp_path)
    retrain = TrainConfig(epochs=1, batch_size=32, lr=0.05, lr_schedule="constant", seed=0)
    perfect = np.ones(len(splits["val"]), dtype=bool)  # a dense model right on every image, and a step must gain a point:
    run = magnitude.run_schedule(net, splits, [5, 20, 60], retrain, perfect, -1.0, stop_after_misses=2,
                                 save_step=save_step, progress=False)
    assert [s["step"] for s in run.steps] == [1, 2]  # every step clearly outside: two misses, then stop
    looser = magnitude.run_schedule(_lenet(3), splits, [5, 20, 60], retrain, perfect, -1.0, stop_after_misses=2,
                                    save_step=step_saver(tmp_path / "looser")[0], progress=False, stop_tolerance_pp=100.0)
    assert len(looser.steps) == 3  # the stop rule reads its own, looser tolerance: no step is clearly outside it
    for step, path in zip(run.steps, saved):
        loaded, _ = training.load_model(path, "lenet5")
        assert models.pruning_rate(loaded) == pytest.approx(step["pruning_rate"])
        assert step["pruning_rate"] == pytest.approx(step["target_rate"], rel=1e-3)  # retraining revived no weight
        assert training.evaluate(loaded, splits["val"])["accuracy"] == step["val_accuracy"]
