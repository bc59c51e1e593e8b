"""Training lowers the loss, is deterministic, checkpoints load safely and runs resume after a kill."""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import pytest
import torch

from study.core import data, models, training
from study.core.artifacts import CheckpointError, load_checkpoint
from study.core.training import TrainConfig


@pytest.fixture(scope="module")
def splits(synthetic_root: Path) -> dict[str, data.Split]:
    return data.load_dataset("mnist", synthetic_root, val_size=56, check_sha256=False)


def _train(splits: dict[str, data.Split], epochs: int, **kwargs) -> tuple[torch.nn.Module, list[dict]]:
    training.seed_everything(0)
    net = models.build_model("lenet5")
    history = training.fit(net, splits["train"], splits["val"], TrainConfig(epochs=epochs, batch_size=32, lr=0.05), progress=False, **kwargs)
    return net, history


def test_a_few_steps_lower_the_loss(splits: dict[str, data.Split]) -> None:
    training.seed_everything(0)
    before = training.evaluate(models.build_model("lenet5"), splits["train"])["loss"]
    net, history = _train(splits, epochs=3)
    after = training.evaluate(net, splits["train"])["loss"]
    assert after < 0.5 * before
    assert training.evaluate(net, splits["val"])["accuracy"] > 0.9  # it learned the classes, not the batches
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_same_seed_same_weights(splits: dict[str, data.Split]) -> None:
    a, _ = _train(splits, epochs=1)
    b, _ = _train(splits, epochs=1)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_mirroring_is_seeded_and_sees_mirrored_images(splits: dict[str, data.Split]) -> None:
    def trained(augment: str) -> torch.nn.Module:
        training.seed_everything(0)
        net = models.build_model("vgg6")
        training.fit(net, splits["train"], splits["val"], TrainConfig(epochs=1, batch_size=32, lr=0.05, augment=augment),
                     progress=False)
        return net

    seen: list[torch.Tensor] = []
    probe = models.build_model("vgg6")
    probe.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()) if probe.training else None)
    training.seed_everything(0)
    training.fit(probe, splits["train"], splits["val"], TrainConfig(epochs=1, batch_size=32, lr=0.05, augment="hflip"),
                 progress=False)
    order = torch.randperm(len(splits["train"]), generator=torch.Generator().manual_seed(0))
    first = splits["train"].images[order[:32]]
    mirrored = [torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(seen[0], first)]
    assert 4 <= sum(mirrored) <= 28  # about half of the batch, each image either as it is or mirrored
    assert all(m or torch.equal(a, b) for m, a, b in zip(mirrored, seen[0], first))
    a, b, plain = trained("hflip"), trained("hflip"), trained("none")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.conv1.weight, plain.conv1.weight)
    with pytest.raises(ValueError, match=r"augment='rotate'; valid: \['none', 'hflip', 'crop_flip'\]"):
        TrainConfig(epochs=1, augment="rotate")


def test_resume_after_kill_gives_the_same_result(splits: dict[str, data.Split], tmp_path: Path) -> None:
    reference, reference_history = _train(splits, epochs=3)

    resume = tmp_path / "resume.pt"
    steps = {"n": 0}

    def kill_in_second_epoch(_model: torch.nn.Module) -> None:
        steps["n"] += 1
        if steps["n"] == 8:  # 200 images / 32 = 7 steps an epoch: dies early in epoch 2
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        _train(splits, epochs=3, resume_path=resume, step_hooks=[kill_in_second_epoch])
    assert len(load_checkpoint(resume)["history"]) == 1

    resumed, history = _train(splits, epochs=3, resume_path=resume)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["val_accuracy"] for h in history] == [h["val_accuracy"] for h in reference_history]
    for (name, pa), (_, pb) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_resume_state_of_other_settings_is_set_aside_and_training_starts_over(splits: dict[str, data.Split], tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    resume = tmp_path / "resume.pt"
    steps = {"n": 0}

    def kill_in_second_epoch(_model: torch.nn.Module) -> None:
        steps["n"] += 1
        if steps["n"] == 8:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):  # killed under one setting of what shapes the result ...
        _train(splits, epochs=3, resume_path=resume, step_hooks=[kill_in_second_epoch], resume_key={"data": "A"})
    reference, _ = _train(splits, epochs=3)
    capsys.readouterr()
    resumed, history = _train(splits, epochs=3, resume_path=resume, resume_key={"data": "B"})  # ... rerun under another
    assert f"{resume} was written under other settings (data differ): starting over" in capsys.readouterr().out
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for (name, pa), (_, pb) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(pa, pb), name
    training.seed_everything(0)
    training.fit(models.build_model("lenet5"), splits["train"], splits["val"], TrainConfig(epochs=1, lr=0.5),
                 resume_path=resume, progress=False)  # another config: the same, no error


def test_model_checkpoint_round_trip(tmp_path: Path) -> None:
    net = models.build_model("lenet5")
    training.save_model(tmp_path / "m.pt", net, "lenet5", "mnist")
    loaded, payload = training.load_model(tmp_path / "m.pt", "lenet5")
    assert payload["dataset"] == "mnist"
    for (name, pa), (_, pb) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    training.save_model(tmp_path / "m.pt", models.build_model("lenet5"), "lenet5", "mnist")
    with pytest.raises(CheckpointError, match=r"holds model 'lenet5', expected 'resnet20'"):
        training.load_model(tmp_path / "m.pt", "resnet20")


def test_checkpoint_with_wrong_shapes_is_refused(tmp_path: Path) -> None:
    net = models.build_model("lenet5")
    state = net.state_dict()
    state["fc1.weight"] = torch.zeros(10, 10)
    torch.save({"model": "lenet5", "dataset": "mnist", "state_dict": state}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"(?s)does not fit the model.*size mismatch for fc1.weight"):
        training.load_model(tmp_path / "m.pt")


class _Payload:
    def __reduce__(self):  # what a malicious pickle would do on load
        return (print, ("code ran",))


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": _Payload()}, protocol=2))
    with pytest.raises(CheckpointError, match="not a safe weights-only file"):
        load_checkpoint(tmp_path / "evil.pt")


def test_corrupted_checkpoint_is_refused(tmp_path: Path) -> None:
    training.save_model(tmp_path / "m.pt", models.build_model("lenet5"), "lenet5", "mnist")
    raw = bytearray((tmp_path / "m.pt").read_bytes())
    (tmp_path / "m.pt").write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError, match="is truncated"):
        training.load_model(tmp_path / "m.pt")


def _channels_last(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def test_training_runs_channels_last_and_hands_back_the_default_layout(splits: dict[str, data.Split]) -> None:
    training.seed_everything(0)
    net = models.build_model("lenet5")
    before = dict(net.named_parameters())
    seen = []
    training.fit(net, splits["train"], splits["val"], TrainConfig(epochs=1, batch_size=32), progress=False,
                 step_hooks=[lambda model: seen.append(_channels_last(model.conv2.weight))])
    assert seen and all(seen)  # conv2 (20 input channels) trained in channels-last layout
    for name, parameter in net.named_parameters():
        assert parameter is before[name], name  # the optimizer's parameters are the model's
        assert parameter.is_contiguous(), name


def test_channels_last_changes_the_layout_not_the_values(splits: dict[str, data.Split], monkeypatch) -> None:
    fast, _ = _train(splits, epochs=1)
    monkeypatch.setattr(training, "channels_last", lambda model: contextlib.nullcontext())
    plain, _ = _train(splits, epochs=1)
    for (name, a), (_, b) in zip(fast.state_dict().items(), plain.state_dict().items()):
        assert not _channels_last(b), name
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)  # float sums round differently, no more


def test_nested_channels_last_blocks_leave_the_layout_to_the_outermost() -> None:
    net = models.build_model("lenet5")
    with training.channels_last(net):
        with training.channels_last(net):
            pass
        assert _channels_last(net.conv2.weight)
    assert net.conv2.weight.is_contiguous()


def test_a_torch_pruned_layer_has_its_masked_weight_in_the_default_layout_after_training(splits: dict[str, data.Split]) -> None:
    training.seed_everything(0)
    net = models.build_model("lenet5")
    torch.nn.utils.prune.l1_unstructured(net.conv2, "weight", amount=0.5)
    training.fit(net, splits["train"], splits["val"], TrainConfig(epochs=1, batch_size=32), progress=False)
    assert net.conv2.weight.is_contiguous()
    assert torch.equal(net.conv2.weight, net.conv2.weight_orig * net.conv2.weight_mask)
    net.conv2.weight.view(-1)  # what torch.nn.utils.prune.global_unstructured does with it


def test_networks_with_strided_convolutions_keep_the_default_layout() -> None:
    # torch 2.14.1's CPU backward of a strided 1x1 convolution crashes in channels-last layout (ResNet shortcuts)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 1, stride=2))
    with training.channels_last(net):
        assert net[0].weight.is_contiguous() and not _channels_last(net[0].weight)
    assert not training._gains_from_channels_last(torch.nn.Linear(3, 2))
    assert training._gains_from_channels_last(models.build_model("vgg6"))
