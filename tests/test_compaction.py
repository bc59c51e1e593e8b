"""Compacted structured-pruned models are smaller and compute exactly what the masked models do."""

from __future__ import annotations

import pytest
import torch

from study.compression import compaction, constraints
from study.core import models


def _prune(scheme: str, keep: dict[str, int], seed: int = 0, model: str = "lenet5") -> torch.nn.Module:
    torch.manual_seed(seed)
    net = models.build_model(model)
    with torch.no_grad():
        for layer in models.prunable_layers(net).values():
            layer.bias.uniform_(-0.5, 0.5)  # non-zero biases: removed filters still emit them
        for name, k in keep.items():
            layer = net.get_submodule(name)
            layer.weight.copy_(constraints.project_pruned(layer.weight, scheme, k)[0])
    return net


@pytest.mark.parametrize(
    ("scheme", "keep", "expected_out"),
    [
        ("filter", {"conv1": 7, "conv2": 20, "fc1": 60}, {"conv1": 7, "conv2": 20, "fc1": 60, "fc2": 10}),
        ("channel", {"conv2": 5, "fc2": 100}, {"conv1": 5, "conv2": 50, "fc1": 100, "fc2": 10}),
        ("column", {"conv2": 50}, None),  # columns rarely empty whole channels: shapes may stay
    ],
)
def test_compact_model_matches_masked_model(scheme: str, keep: dict, expected_out: dict | None) -> None:
    masked = _prune(scheme, keep)
    compact, sizes = compaction.compact(masked, models.INPUT_SHAPES["lenet5"])
    x = torch.randn(16, *models.INPUT_SHAPES["lenet5"])
    with torch.no_grad():
        assert torch.allclose(compact(x), masked(x), atol=1e-5)
    if expected_out is not None:
        assert {n: s["out_after"] for n, s in sizes.items()} == expected_out
        assert models.count_weights(compact) < models.count_weights(masked)
        # nothing that computes is added; weights of producers nobody reads are dropped too
        assert models.count_nonzero_weights(compact) <= models.count_nonzero_weights(masked)


@pytest.mark.parametrize(
    ("scheme", "keep", "expected_out"),
    [
        ("filter", {"conv1": 5, "conv2": 9, "conv3": 20, "conv4": 11, "conv5": 30},
         {"conv1": 5, "conv2": 9, "conv3": 20, "conv4": 11, "conv5": 30, "fc1": 10}),
        ("channel", {"conv2": 6, "conv3": 7, "conv4": 10, "conv5": 12},
         {"conv1": 6, "conv2": 7, "conv3": 10, "conv4": 12, "conv5": 64, "fc1": 10}),
        ("column", {"conv2": 30, "conv3": 40, "conv4": 60, "conv5": 50}, None),
    ],
)
def test_compact_vgg6_matches_masked_model(scheme: str, keep: dict, expected_out: dict | None) -> None:
    """The conv-dominated chain: ReLUs between layers, two pools, a flatten of 2x2 maps into the FC layer."""
    masked = _prune(scheme, keep, model="vgg6")
    compact, sizes = compaction.compact(masked, models.INPUT_SHAPES["vgg6"])
    x = torch.randn(16, *models.INPUT_SHAPES["vgg6"])
    with torch.no_grad():
        assert torch.allclose(compact(x), masked(x), atol=1e-5)
    assert models.count_nonzero_weights(compact) <= models.count_nonzero_weights(masked)
    if expected_out is not None:
        assert {n: s["out_after"] for n, s in sizes.items()} == expected_out
        assert models.count_weights(compact) < models.count_weights(masked)


def test_filter_pruning_removes_next_layer_inputs_and_features() -> None:
    compact, sizes = compaction.compact(_prune("filter", {"conv2": 10}), models.INPUT_SHAPES["lenet5"])
    assert sizes["conv2"]["out_after"] == 10
    assert sizes["fc1"]["in_before"] == 800 and sizes["fc1"]["in_after"] == 10 * 16  # 4x4 features per channel


def test_residual_networks_compact_by_channel_space_and_dead_weights_need_a_chain() -> None:
    """compact hands a network with a residual sum to the channel-space compaction (exact there, see
    test_coupling); zero_dead_weights folds biases along a chain and refuses anything else."""
    from study.core.paper_models import ResNetCIFAR

    torch.manual_seed(0)
    net = ResNetCIFAR((1, 1, 1, 1), widths=(4, 8, 8, 8)).eval()
    with torch.no_grad():
        net.layer3[0].conv2.weight[:2] = 0  # two filters of the layer3 sum go, with their batch norm entries,
        net.layer3[0].bn2.weight[:2] = 0  # in every producer of that sum
        net.layer3[0].bn2.bias[:2] = 0
        net.layer3[0].shortcut.conv.weight[:2] = 0
        net.layer3[0].shortcut.bn.weight[:2] = 0
        net.layer3[0].shortcut.bn.bias[:2] = 0
    smaller, sizes = compaction.compact(net, (3, 16, 16))
    assert sizes["layer3.0.conv2"]["out_after"] == 6 and sizes["layer4.0.conv1"]["in_after"] == 6
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(smaller.eval()(x), net(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="nn.Sequential chains only"):
        compaction.zero_dead_weights(net, (3, 16, 16))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_dead_weights_keeps_outputs_and_reaches_a_fixpoint(seed: int) -> None:
    """Very sparse irregular LeNet-5: dead units appear at every layer; zeroing them changes no output."""
    net = _prune("irregular", {"conv1": 40, "conv2": 300, "fc1": 400, "fc2": 60}, seed)
    x = torch.randn(16, *models.INPUT_SHAPES["lenet5"])
    with torch.no_grad():
        before = net(x)
    nonzero = models.count_nonzero_weights(net)
    compact, _ = compaction.compact(net, models.INPUT_SHAPES["lenet5"])
    zeroed = compaction.zero_dead_weights(net, models.INPUT_SHAPES["lenet5"])
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-5)
    removed = sum(int(z.sum()) for z in zeroed.values())
    assert removed > 0 and models.count_nonzero_weights(net) == nonzero - removed
    # at least what one pass of compaction drops (the fixpoint may drop more)
    assert models.count_nonzero_weights(net) <= models.count_nonzero_weights(compact)
    for name, layer in models.prunable_layers(net).items():
        assert not layer.weight[zeroed[name]].any()
    again = compaction.zero_dead_weights(net, models.INPUT_SHAPES["lenet5"])
    assert not any(z.any() for z in again.values())  # idempotent
    # every remaining unit is live: its weights are non-zero and someone reads it
    layers = list(models.prunable_layers(net).values())
    for a, b in zip(layers, layers[1:]):
        rows = a.weight.reshape(a.weight.shape[0], -1).ne(0).any(dim=1)
        readers = b.weight.ne(0).transpose(0, 1).reshape(a.weight.shape[0], -1).any(dim=1) \
            if isinstance(b, torch.nn.Conv2d) else \
            b.weight.ne(0).reshape(b.weight.shape[0], a.weight.shape[0], -1).any(dim=(0, 2))
        assert torch.equal(rows, readers)


def test_zero_dead_weights_on_a_dense_model_changes_nothing() -> None:
    net = _prune("irregular", {})
    state = {k: v.clone() for k, v in net.state_dict().items()}
    zeroed = compaction.zero_dead_weights(net, models.INPUT_SHAPES["lenet5"])
    assert not any(z.any() for z in zeroed.values())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
