"""ADMM updates, masked retraining, pruning steps and quantization on LeNet-5 with tiny synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from study import contract
from study.compression import compaction, constraints, pruning, quantize
from study.core import data, models, training
from study.compression import schedule as schedule_run
from study.compression.admm import ADMM, ADMMConfig, MaskedRetraining
from study.core.params import ADMMParams, PruneSchedule
from study.core.training import TrainConfig

FAST = TrainConfig(epochs=2, batch_size=32, lr=0.05, lr_schedule="constant")


@pytest.fixture(scope="module")
def splits(synthetic_root: Path) -> dict[str, data.Split]:
    return data.load_dataset("mnist", synthetic_root, val_size=56, check_sha256=False)


@pytest.fixture(scope="module")
def trained(splits: dict[str, data.Split]) -> torch.nn.Module:
    training.seed_everything(0)
    net = models.build_model("lenet5")
    training.fit(net, splits["train"], splits["val"], TrainConfig(epochs=3, batch_size=32, lr=0.05), progress=False)
    return net


def _clone(net: torch.nn.Module) -> torch.nn.Module:
    copy = models.build_model("lenet5")
    copy.load_state_dict(net.state_dict())
    return copy


def test_z_u_update_and_rho_rescaling_by_hand() -> None:
    torch.manual_seed(0)
    net = models.build_model("lenet5")
    project = lambda w: constraints.project_pruned(w, "irregular", 10)  # noqa: E731
    admm = ADMM(net, {"fc2": project}, ADMMConfig(rho=0.1, rho_growth=2.0, rho_max=0.4), steps_per_epoch=4)
    w = net.fc2.weight.detach().clone()
    u_before = torch.randn_like(w)
    admm.U["fc2"] = u_before.clone()
    admm.update(net)
    z = project(w + u_before)[0]
    assert torch.equal(admm.Z["fc2"], z)
    # scaled dual follows rho; float32 rounding: u + (w - z) and (u + w) - z differ by ~1 ulp where z = w + u
    assert torch.allclose(admm.U["fc2"], (u_before + w - z) * 0.1 / 0.2, rtol=1e-5, atol=1e-6)
    assert admm.rho == 0.2
    admm.update(net)
    admm.update(net)
    assert admm.rho == 0.4  # capped
    assert [round(h["rho"], 6) for h in admm.history] == [0.1, 0.2, 0.4]


def test_penalty_gradient_is_rho_times_w_minus_z_plus_u() -> None:
    net = models.build_model("lenet5")
    admm = ADMM(net, {"fc2": lambda w: constraints.project_pruned(w, "filter", 3)}, ADMMConfig(rho=0.3), 4)
    admm.U["fc2"] = torch.randn_like(net.fc2.weight)
    admm.penalty(net).backward()
    expected = 0.3 * (net.fc2.weight - admm.Z["fc2"] + admm.U["fc2"])
    assert torch.allclose(net.fc2.weight.grad, expected.detach())


def test_admm_drives_w_towards_the_constraint_set(splits, trained) -> None:
    net = _clone(trained)
    keep = {"conv1": 0.5, "conv2": 0.2, "fc1": 0.05, "fc2": 0.5}
    config = ADMMConfig(rho=0.05, rho_growth=1.5, rho_max=2.0, updates_per_epoch=1)
    admm = ADMM(net, pruning.projections_for(net, "irregular", keep), config, steps_per_epoch=25)
    training.fit(net, splits["train"], splits["val"], TrainConfig(epochs=7, batch_size=8, lr=0.01, lr_schedule="constant"),
                 step_hooks=[admm.step_hook], loss_terms=[admm.penalty], progress=False)
    distances = [h["w_minus_z_relative"] for h in admm.history]
    assert len(distances) == 7  # one Z/U update an epoch
    assert distances[-1] < 0.3 * distances[0]


def test_masked_retraining_keeps_pruned_weights_exactly_zero(splits, trained) -> None:
    net = _clone(trained)
    masks = {}
    for name, layer in models.prunable_layers(net).items():
        projected, mask = constraints.project_pruned(layer.weight, "irregular", layer.weight.numel() // 10)
        with torch.no_grad():
            layer.weight.copy_(projected)
        masks[name] = mask
    masked = MaskedRetraining(net, masks)
    training.fit(net, splits["train"], splits["val"], TrainConfig(epochs=3, batch_size=16, lr=0.05, weight_decay=1e-3),
                 step_hooks=[masked.step_hook], progress=False)
    for name, layer in models.prunable_layers(net).items():
        assert not layer.weight[~masks[name]].any(), name
        assert layer.weight[masks[name]].ne(0).any(), name  # survivors did train


TINY_ADMM = ADMMParams(rho=0.05, rho_growth=1.5, rho_max=1.0, updates_per_epoch=1, lr=0.05, retrain_lr=0.05, batch_size=32)


def _schedule(**overrides) -> PruneSchedule:
    return PruneSchedule(**{"rates": [2.0, 4.0], "density_weights": {"conv2": 1, "fc1": 1}, "admm_epochs": 2,
                            "retrain_epochs": 1, "stop_after_misses": 2, **overrides})


def _run(trained, splits, scheme: str, schedule: PruneSchedule, tmp_path: Path, **kwargs) -> tuple[torch.nn.Module, schedule_run.ScheduleRun]:
    net = _clone(trained)
    saved = {}

    def save_step(step: int, rate: float, model: torch.nn.Module) -> str:
        saved[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return str(tmp_path / f"step{step}.pt")

    reference = training.correct_predictions(trained, splits["val"])
    # a tolerance of 100 points: no step is ever clearly outside it, every rate runs
    run = schedule_run.run_schedule(net, splits, scheme, schedule, TINY_ADMM, 0, reference, 100.0, save_step, progress=False,
                                    **kwargs)
    for step, state in saved.items():
        assert all(torch.equal(state[k], run.states[step - 1][k]) for k in state)  # saved what the step left
    return net, run


@pytest.mark.parametrize("scheme", ["irregular", "filter", "column"])
def test_progressive_pruning_reaches_its_targets_and_only_removes_more(splits, trained, scheme: str, tmp_path: Path) -> None:
    schedule = _schedule()
    final, run = _run(trained, splits, scheme, schedule, tmp_path)
    assert [s["step"] for s in run.steps] == [1, 2]
    units = pruning.layer_units(final, scheme)
    first = {n: (w != 0) for n, w in run.states[0].items() if n.endswith("weight")}
    for name, fraction in pruning.split_rate(final, schedule.rates[-1], schedule.density_weights).items():
        layer = models.prunable_layers(final)[name]
        support = layer.weight != 0
        assert torch.equal(support | first[f"{name}.weight"], first[f"{name}.weight"])  # subset of step 1
        if name in schedule.density_weights:
            kept_units = constraints.keep_count(units[name], fraction)
            assert int(support.sum()) <= kept_units * (support.numel() // units[name])
            assert int(run.masks[name].sum()) == kept_units * (support.numel() // units[name])
            assert not layer.weight[~run.masks[name].bool()].any()
    assert models.prunable_layers(final)["conv1"].weight.ne(0).all()  # not targeted, left dense
    assert models.pruning_rate(trained) == 1.0  # the input model is untouched
    assert run.steps[-1]["val_accuracy"] > 0.5


def test_without_earlier_masks_a_pruned_weight_can_come_back(splits, trained) -> None:
    """regrow: the step's constraint is a count over all weights, so its support may leave the earlier one.

    fc1 starts with a random half zeroed and the other half shrunk to ~0, so the loss gradient makes
    the zeros as large as the survivors: without the earlier mask some of them must be chosen.
    """
    generator = torch.Generator().manual_seed(0)
    earlier = (torch.rand(trained.fc1.weight.shape, generator=generator) < 0.5).float()
    supports = {}
    for regrow in (False, True):
        net = _clone(trained)
        with torch.no_grad():
            net.fc1.weight.mul_(earlier * 1e-4)
        pruning.prune_step(net, splits["train"], splits["val"], "irregular", {"fc1": 0.25}, ADMMConfig(rho=0.05),
                           FAST, FAST, None if regrow else {"fc1": earlier}, progress=False)
        supports[regrow] = net.fc1.weight != 0
        assert int(supports[regrow].sum()) <= constraints.keep_count(earlier.numel(), 0.25)
    assert not (supports[False] & ~earlier.bool()).any()  # earlier zeros stay zero
    assert (supports[True] & ~earlier.bool()).any()  # some came back


def test_regrow_schedule_drops_the_earlier_masks(splits, trained, tmp_path: Path, monkeypatch) -> None:
    seen = []
    real_step = pruning.prune_step

    def recording_step(*args, **kwargs):
        seen.append(args[8])  # the earlier masks argument
        return real_step(*args, **kwargs)

    monkeypatch.setattr(pruning, "prune_step", recording_step)
    _run(trained, splits, "irregular", _schedule(regrow=True), tmp_path)
    _run(trained, splits, "irregular", _schedule(regrow=False), tmp_path)
    assert seen[0] is None and seen[1] is None  # regrow: no step is confined to an earlier support
    assert seen[2] is None and seen[3] is not None  # default: step 2 projects within step 1's support


def test_schedule_stops_after_its_misses(splits, trained, tmp_path: Path) -> None:
    net = _clone(trained)
    perfect = np.ones(len(splits["val"]), dtype=bool)  # a dense model right on every image, and a step must *gain* a
    run = schedule_run.run_schedule(net, splits, "irregular", _schedule(rates=[2.0, 4.0, 8.0], stop_after_misses=1),
                                    TINY_ADMM, 0, perfect, -1.0, lambda step, rate, model: "", progress=False)
    assert len(run.steps) == 1 and run.misses == 1  # point: every step is clearly outside, one miss ends the schedule
    assert run.steps[0]["val_only_dense_right"] == round((1 - run.steps[0]["val_accuracy"]) * len(perfect))


def test_split_rate_reaches_the_overall_rate() -> None:
    net = models.build_model("lenet5")
    keep = pruning.split_rate(net, 100.0, {"conv1": 8, "conv2": 3, "fc1": 1, "fc2": 6})
    sizes = {n: m.weight.numel() for n, m in models.prunable_layers(net).items()}
    assert sum(keep[n] * sizes[n] for n in sizes) == pytest.approx(430_500 / 100, rel=1e-6)
    assert keep["conv1"] / keep["fc1"] == pytest.approx(8)
    partial = pruning.split_rate(net, 10.0, {"conv2": 1, "fc1": 1})  # conv1 and fc2 stay dense
    assert partial["conv1"] == partial["fc2"] == 1.0
    assert sum(partial[n] * sizes[n] for n in sizes) == pytest.approx(43_050, rel=1e-6)
    with pytest.raises(ValueError, match="out of reach"):
        pruning.split_rate(net, 1000.0, {"fc2": 1})


def test_magnitude_split_is_a_global_top_k() -> None:
    torch.manual_seed(0)
    net = models.build_model("lenet5")
    layers = models.prunable_layers(net)
    keep = pruning.magnitude_split(net, 50.0, ["conv1", "conv2", "fc1", "fc2"])
    everything = torch.cat([m.weight.detach().abs().flatten() for m in layers.values()])
    threshold = everything.sort(descending=True).values[430_500 // 50 - 1]
    for name, layer in layers.items():  # brute force: the weights at or above the global threshold
        assert keep[name] == pytest.approx(float((layer.weight.detach().abs() >= threshold).float().mean()), abs=2 / layer.weight.numel())
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    assert sum(round(keep[n] * sizes[n]) for n in sizes) == pytest.approx(430_500 // 50, abs=2)
    floored = pruning.magnitude_split(net, 50.0, ["conv2", "fc1"], min_keep=0.05)
    assert floored["conv1"] == floored["fc2"] == 1.0 and floored["fc1"] >= 0.05 and floored["conv2"] >= 0.05
    assert pruning.step_keep(net, 50.0, "magnitude", {"conv1": 1, "conv2": 1, "fc1": 1, "fc2": 1}) == keep
    with pytest.raises(ValueError, match="allocation='global'"):
        pruning.step_keep(net, 50.0, "global", {"fc1": 1})
    with pytest.raises(ValueError, match=r"\['fc9'\] that the model lacks"):
        pruning.magnitude_split(net, 50.0, ["fc9"])
    with pytest.raises(ValueError, match="min_keep=2"):
        pruning.magnitude_split(net, 50.0, ["fc1"], min_keep=2)


@pytest.mark.parametrize(
    ("scheme", "keep", "message"),
    [
        ("irregular", {"fc9": 0.5}, r"layer\(s\) \['fc9'\] that the model lacks"),
        ("irregular", {"fc1": 0.0}, r"kept fraction of layer 'fc1' is 0.0; it must be in \(0, 1\]"),
        ("filter", {"fc1": 1.2}, r"is 1.2"),
        ("channel", {"conv1": 0.5}, r"channel pruning of layer 'conv1': it has a single channel unit"),
    ],
)
def test_bad_targets_fail_before_training(scheme: str, keep: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pruning.projections_for(models.build_model("lenet5"), scheme, keep)


@pytest.mark.parametrize("bits", [1, 3])
def test_quantizing_a_pruned_model_keeps_zeros_and_ends_on_levels(splits, trained, bits: int) -> None:
    net = _clone(trained)
    for name, layer in models.prunable_layers(net).items():
        with torch.no_grad():
            layer.weight.copy_(constraints.project_pruned(layer.weight, "irregular", layer.weight.numel() // 5)[0])
    before = quantize.support_masks(net)
    alphas, history = quantize.admm_quantize(net, splits["train"], splits["val"], bits, ADMMConfig(rho=0.05), FAST, progress=False)
    assert history and all(a > 0 for a in alphas.values())
    rounds = quantize.masked_mapping(net, splits["train"], splits["val"], bits, alphas, [0.5, 0.9, 1.0], FAST, progress=False)
    assert [r["fraction"] for r in rounds] == [0.5, 0.9, 1.0]
    quantize.check_on_levels(net, bits, alphas)
    after = quantize.support_masks(net)
    for name in before:
        assert torch.equal(before[name], after[name]), name  # same zeros: none added, none revived
        if bits == 1:
            magnitudes = net.get_submodule(name).weight[after[name].bool()].abs()
            assert torch.allclose(magnitudes, torch.full_like(magnitudes, alphas[name])), name


def test_dense_two_bit_quantization_may_use_zero(splits, trained) -> None:
    """keep_support=False (dense models): 2 bits give the ternary levels {-a, 0, a}, zero included."""
    net = _clone(trained)
    alphas, _ = quantize.admm_quantize(net, splits["train"], splits["val"], 2, ADMMConfig(rho=0.05), FAST,
                                       progress=False, keep_support=False)
    quantize.masked_mapping(net, splits["train"], splits["val"], 2, alphas, [0.5, 1.0], FAST, progress=False,
                            keep_support=False)
    quantize.check_on_levels(net, 2, alphas)
    for name, layer in models.prunable_layers(net).items():
        codes = set((layer.weight.detach() / alphas[name]).round().unique().tolist())
        assert codes == {-1.0, 0.0, 1.0}, name
    # the same model with its support kept never reaches zero: its four 2-bit levels are +-1, +-2
    kept = _clone(trained)
    alphas, _ = quantize.admm_quantize(kept, splits["train"], splits["val"], 2, ADMMConfig(rho=0.05), FAST, progress=False)
    quantize.masked_mapping(kept, splits["train"], splits["val"], 2, alphas, [1.0], FAST, progress=False)
    assert models.pruning_rate(kept) == 1.0
    quantize.check_on_levels(kept, 2, alphas, keep_support=True)
    for name, layer in models.prunable_layers(kept).items():
        codes = set((layer.weight.detach() / alphas[name]).round().unique().tolist())
        assert codes <= {-2.0, -1.0, 1.0, 2.0} and len(codes) == 4, name
    with pytest.raises(AssertionError, match="not all on the 2-bit levels"):
        quantize.check_on_levels(kept, 2, alphas, keep_support=False)  # +-2 is off the dense grid {-1, 0, 1}


@pytest.mark.parametrize("bits", [2, 8])
def test_snapping_puts_survivors_on_their_nearest_levels_without_training(trained, bits: int) -> None:
    net = _clone(trained)
    for layer in models.prunable_layers(net).values():
        with torch.no_grad():
            layer.weight.copy_(constraints.project_pruned(layer.weight, "irregular", layer.weight.numel() // 4)[0])
    before = {n: m.weight.detach().clone() for n, m in models.prunable_layers(net).items()}
    alphas = quantize.snap_to_levels(net, bits, keep_support=True)
    quantize.check_on_levels(net, bits, alphas, keep_support=True)
    for name, layer in models.prunable_layers(net).items():
        survivors = before[name] != 0
        assert torch.equal(layer.weight != 0, survivors), name  # zeros kept, no survivor lost
        expected, _ = constraints.project_quantized(before[name], alphas[name], bits, survivors)
        assert torch.equal(layer.weight.detach(), expected), name


def test_a_snapped_model_is_kept_only_within_its_allowance() -> None:
    from study.stages.quantize import snapped_is_enough

    assert snapped_is_enough(0.9890, 0.9900, 0.1)  # 0.1 points lost: within
    assert not snapped_is_enough(0.9888, 0.9900, 0.1)  # 0.12 points: train
    assert snapped_is_enough(0.9950, 0.9900, 0.0)  # better than its source
    assert not snapped_is_enough(0.9950, 0.9900, None)  # null: always train


def test_binarized_network_has_two_values_per_layer(splits, trained) -> None:
    net = _clone(trained)
    quantize.binarize_with_ste(net, splits["train"], splits["val"], FAST, progress=False)
    for name, layer in models.prunable_layers(net).items():
        values = layer.weight.detach().unique()
        assert len(values) == 2 and values[0] == -values[1], name
    assert training.evaluate(net, splits["val"])["accuracy"] > 0.5


def test_masked_mapping_rejects_bad_fractions(splits, trained) -> None:
    with pytest.raises(ValueError, match=r"must increase within \(0, 1\] and end at 1.0"):
        quantize.masked_mapping(_clone(trained), splits["train"], splits["val"], 4, {}, [0.5, 0.9], FAST)


def test_selection_uses_validation_only() -> None:
    paired = {"val_only_dense_right": 0, "val_only_step_right": 0, "val_images": 1000}
    steps = [
        {"step": 1, "pruning_rate": 10.0, "val_accuracy": 0.990, "test_accuracy": 0.980, **paired},
        {"step": 2, "pruning_rate": 20.0, "val_accuracy": 0.989, "test_accuracy": 0.999, **paired, "val_only_dense_right": 1},
        {"step": 3, "pruning_rate": 40.0, "val_accuracy": 0.970, "test_accuracy": 0.999, **paired, "val_only_dense_right": 20},
    ]
    assert contract.select_step(steps, tolerance_pp=1.0)["step"] == 2  # highest rate within tolerance
    none = [s | {"val_only_dense_right": 50} for s in steps]
    assert contract.select_step(none, tolerance_pp=1.0)["step"] == 1  # none qualifies: the most accurate on val


def test_drop_dead_prunes_dead_survivors_and_keeps_them_zero(splits, trained) -> None:
    net = _clone(trained)
    result = pruning.prune_step(net, splits["train"], splits["val"], "irregular",
                                {"conv1": 0.1, "conv2": 0.01, "fc1": 0.001, "fc2": 0.02}, ADMMConfig(rho=0.05),
                                FAST, FAST, progress=False, drop_dead=True)
    for name, layer in models.prunable_layers(net).items():
        assert torch.equal(layer.weight != 0, result.masks[name].bool()), name  # retraining kept the dead at zero
    assert not any(z.any() for z in compaction.zero_dead_weights(net, models.INPUT_SHAPES["lenet5"]).values())
    assert models.pruning_rate(net) > 430_500 / sum(
        constraints.keep_count(layer.weight.numel(), f)
        for f, layer in zip([0.1, 0.01, 0.001, 0.02], models.prunable_layers(net).values()))


def test_an_nm_schedule_walks_its_patterns_each_step_within_the_last(splits, trained, tmp_path: Path) -> None:
    """ADMM-NN-S for N:M: each step's exact projection onto its pattern, masked retraining; the next, sparser pattern
    among the earlier survivors; a layer whose inputs do not split into groups of M (conv1: 1 x 5 x 5) stays dense."""
    from study.compression import nm

    schedule = PruneSchedule(patterns=["2:4", "1:8"], density_weights={"*": 1}, admm_epochs=1, retrain_epochs=1)
    assert schedule.rates == [2.0, 8.0]
    final, run = _run(trained, splits, "nm", schedule, tmp_path)
    assert [s["pattern"] for s in run.steps] == ["2:4", "1:8"]
    first = {n: (w != 0) for n, w in run.states[0].items() if n.endswith("weight")}
    for step, (n, m) in zip(run.states, ((2, 4), (1, 8))):
        for name in ("conv2", "fc1", "fc2"):
            weight = step[f"{name}.weight"]
            if not nm.applies(weight, m):  # conv2 and fc2 read 500 inputs: groups of 4, not of 8
                assert name in ("conv2", "fc2") and m == 8
                continue
            kept = nm.reduction_view(weight).reshape(-1, m).ne(0).sum(dim=1)
            assert int(kept.max()) <= n and float(kept.float().mean()) > 0.9 * n, (name, n, m)
        assert bool(step["conv1.weight"].ne(0).all())  # left dense
    for name in ("conv2", "fc1"):
        assert not (final.state_dict()[f"{name}.weight"].ne(0) & ~first[f"{name}.weight"]).any()  # only removes more
    with pytest.raises(ValueError, match="each must keep a smaller share"):
        PruneSchedule(patterns=["1:4", "2:8"], density_weights={"*": 1}, admm_epochs=1, retrain_epochs=1)
