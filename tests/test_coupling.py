"""Channel spaces joined by batch norm and residual sums, their projection, and compaction of such networks."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from study.compression import coupling
from study.core import models
from study.core.paper_models import VGG16_WIDTHS, ResNetCIFAR


def _randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Batch norms with non-trivial statistics and affine terms, so a mistake in folding them shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def _small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return ResNetCIFAR((2, 2, 2, 2), widths=(8, 16, 32, 64))


def test_resnet18_spaces_join_the_residual_sums() -> None:
    spaces = coupling.prunable_spaces(_small_resnet(), (3, 32, 32))
    # hand count: the stem with layer1's two sums (no shortcut conv there), one inner space per block (8),
    # and the sums of layer2, layer3 and layer4 (each with its shortcut conv): 1 + 8 + 3
    assert len(spaces) == 12
    stem = next(s for s in spaces if "conv1" in s.producers)
    assert sorted(stem.producers) == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    assert sorted(stem.norms) == ["bn1", "layer1.0.bn2", "layer1.1.bn2"]
    assert sorted(name for name, _ in stem.consumers) == ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1",
                                                          "layer2.0.shortcut.conv"]
    last = next(s for s in spaces if "layer4.0.shortcut.conv" in s.producers)
    assert ("fc", 1) in last.consumers  # through global average pooling: one input per channel
    inner = next(s for s in spaces if s.producers == ["layer3.1.conv1"])
    assert inner.norms == ["layer3.1.bn1"] and inner.consumers == [("layer3.1.conv2", 1)]


def test_chains_have_one_space_per_layer_and_keep_their_inputs_and_outputs() -> None:
    vgg = coupling.channel_spaces(models.build_model("vgg16_cifar"), (3, 32, 32))
    assert [s.producers[0] for s in vgg if s.prunable] == [f"conv{i}" for i in range(1, 14)]
    assert [s.producers for s in vgg if not s.prunable] == [["fc1"]]  # the class scores stay
    lenet = coupling.channel_spaces(models.build_model("lenet5"), (1, 28, 28))
    fc1_input = next(s for s in lenet if s.producers == ["conv2"])
    assert fc1_input.consumers == [("fc1", 16)]  # 50 channels x 4 x 4 positions after the flatten
    assert [s.prunable for s in lenet] == [True, True, True, False]


def test_torchvision_networks_are_traced() -> None:
    # ResNet-50 by hand: the stem, two inner spaces in each of 16 bottlenecks, one sum per stage: 1 + 32 + 4
    assert len(coupling.prunable_spaces(models.build_model("resnet50"), (3, 224, 224))) == 37
    alexnet = coupling.channel_spaces(models.build_model("alexnet"), (3, 224, 224))
    assert sum(s.prunable for s in alexnet) == 7  # five convolutions and two hidden FC layers
    classifier_input = next(s for s in alexnet if s.producers == ["features.10"])
    assert classifier_input.consumers == [("classifier.1", 36)]  # 256 channels x 6 x 6 after adaptive pooling


def test_an_unknown_operation_freezes_the_channels_it_touches() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.conv2(torch.sigmoid(self.conv1(x)) * 2)

    spaces = coupling.channel_spaces(Gate(), (1, 8, 8))
    assert [s.prunable for s in spaces] == [False, False]


@pytest.mark.parametrize("channels,keep", [(5, 2), (6, 3), (4, 1), (4, 0)])
def test_the_projection_keeps_the_cheapest_channels_to_lose(channels: int, keep: int) -> None:
    """Brute force: no other set of ``keep`` channels leaves the producers' weights closer (Euclidean)."""
    generator = torch.Generator().manual_seed(channels * 10 + keep)
    model = nn.Sequential()
    model.add_module("a", nn.Conv2d(2, channels, 3))
    model.add_module("b", nn.Conv2d(2, channels, 1))
    space = coupling.ChannelSpace(channels, producers=["a", "b"])
    with torch.no_grad():
        for layer in model:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
    mask = coupling.project_space(model, space, keep)
    assert int(mask.sum()) == keep
    scores = coupling.channel_scores({n: dict(model.named_modules())[n].weight for n in space.producers}, space, "filter")
    lost = float(scores[~mask].sum())
    best = min(float(scores.sum() - scores[list(kept)].sum()) for kept in itertools.combinations(range(channels), keep))
    assert lost == pytest.approx(best)


@pytest.mark.parametrize("name", ["resnet", "vgg16_cifar"])
def test_compaction_of_coupled_channels_computes_what_the_masked_model_computes(name: str) -> None:
    model = _small_resnet() if name == "resnet" else models.build_model(name)
    _randomize_norms(model)
    spaces = coupling.prunable_spaces(model, (3, 32, 32))
    for space in spaces:
        coupling.apply_channel_mask(model, space, coupling.project_space(model, space, max(1, space.channels // 2)))
    model.eval()
    smaller = coupling.compact(model, (3, 32, 32))[0].eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), model(x), rtol=1e-4, atol=1e-5)
    assert models.count_parameters(smaller) < 0.45 * models.count_parameters(model)
    for space in coupling.prunable_spaces(smaller, (3, 32, 32)):  # what is left is whole: nothing more to remove
        assert not bool(coupling.removed_channels(smaller, space).any())


def test_a_channel_one_summand_still_carries_is_kept() -> None:
    """Zeroing one block's filter c does not remove channel c of a sum that the shortcut still fills."""
    model = _small_resnet()
    _randomize_norms(model)
    stem = next(s for s in coupling.prunable_spaces(model, (3, 32, 32)) if "conv1" in s.producers)
    partial = coupling.ChannelSpace(stem.channels, producers=["layer1.0.conv2"], norms=["layer1.0.bn2"])
    coupling.apply_channel_mask(model, partial, torch.arange(stem.channels) != 3)
    assert not bool(coupling.removed_channels(model, stem).any())
    model.eval()
    smaller = coupling.compact(model, (3, 32, 32))[0].eval()
    assert models.count_parameters(smaller) == models.count_parameters(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), model(x))


def test_paper_models_have_the_published_sizes() -> None:
    """Parameter counts by hand (CIFAR models) and as torchvision defines them (ImageNet models)."""
    widths = [w for w in VGG16_WIDTHS if w != "M"]
    vgg = sum((c_in * 9 + 1) * c_out + 2 * c_out for c_in, c_out in zip([3, *widths], widths)) + 512 * 10 + 10
    assert models.count_parameters(models.build_model("vgg16_cifar")) == vgg == 14_728_266
    assert models.count_parameters(models.build_model("resnet18_cifar")) == 11_173_962  # He et al.'s CIFAR ResNet-18
    import torchvision

    for name in ("alexnet", "resnet50"):
        reference = getattr(torchvision.models, name)(weights=None)
        assert models.count_parameters(models.build_model(name)) == models.count_parameters(reference)
    assert models.count_parameters(models.build_model("alexnet")) == 61_100_840
    assert models.count_parameters(models.build_model("resnet50")) == 25_557_032
    with pytest.raises(ValueError, match="RGB"):
        models.MODELS["alexnet"](1, 10)


@pytest.mark.parametrize("scheme", ["filter", "channel"])
def test_joint_projection_is_the_closest_point_with_that_many_channels(scheme: str) -> None:
    """Brute force over every set of kept channels: the joint projection is the nearest feasible point of all
    members together (producers' filters, or consumers' inputs), and it is feasible and idempotent."""
    model = _small_resnet()
    space = next(s for s in coupling.prunable_spaces(model, (3, 32, 32)) if "layer2.0.shortcut.conv" in s.producers)
    small = coupling.ChannelSpace(5, producers=space.producers, consumers=space.consumers)
    names = coupling.members(small, scheme)
    assert len(names) >= 2  # a coupled space: the members decide together
    layers, per_channel = dict(model.named_modules()), dict(space.consumers)
    generator = torch.Generator().manual_seed(3)

    def shape(name: str) -> tuple[int, ...]:  # the member's weight with 5 channels in the space
        w = layers[name].weight
        if scheme == "filter":
            return (5, *w.shape[1:])
        return (w.shape[0], 5, *w.shape[2:]) if w.dim() == 4 else (w.shape[0], 5 * per_channel[name])

    weights = {n: torch.randn(shape(n), generator=generator) for n in names}
    projected = coupling.space_projection(small, scheme, 2)(weights)
    distance = sum(float((projected[n][0] - weights[n]).pow(2).sum()) for n in names)
    views = {n: coupling._channel_view(weights[n], 5, scheme) for n in names}  # [channel, everything it touches]
    best = min(sum(float(views[n][[c for c in range(5) if c not in kept]].pow(2).sum()) for n in names)
               for kept in itertools.combinations(range(5), 2))
    assert distance == pytest.approx(best)
    again = coupling.space_projection(small, scheme, 2)({n: projected[n][0] for n in names})
    for n in names:
        assert torch.equal(again[n][0], projected[n][0])
        assert int(coupling._channel_view(projected[n][1], 5, scheme).ne(0).any(dim=1).sum()) == 2


def test_channels_no_consumer_reads_leave_the_network_too() -> None:
    """Channel pruning: when every consumer of a space drops an input, its producers' filters go as well."""
    model = _small_resnet()
    _randomize_norms(model)
    space = next(s for s in coupling.prunable_spaces(model, (3, 32, 32)) if "layer3.0.shortcut.conv" in s.producers)
    layers = dict(model.named_modules())
    weights = {n: layers[n].weight.detach() for n in coupling.members(space, "channel")}
    projected = coupling.space_projection(space, "channel", space.channels // 4)(weights)
    with torch.no_grad():
        for name, (weight, _) in projected.items():
            layers[name].weight.copy_(weight)
    assert int(coupling.removed_channels(model, space).sum()) == space.channels - space.channels // 4
    model.eval()
    smaller, sizes = coupling.compact(model, (3, 32, 32))
    smaller.eval()
    assert sizes["layer3.0.shortcut.conv"]["out_after"] == space.channels // 4
    assert sizes["layer4.0.conv1"]["in_after"] == space.channels // 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), model(x), rtol=1e-4, atol=1e-5)


def _tiny_images(n: int, seed: int) -> "Split":
    from study.core.data import Split

    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return Split(torch.randn(n, 3, 16, 16, generator=generator) + labels[:, None, None, None] * 0.1, labels)


@pytest.mark.parametrize("scheme", ["filter", "channel"])
def test_a_pruning_step_removes_whole_channel_spaces_of_a_residual_network(scheme: str) -> None:
    """ADMM + masked retraining on a ResNet: every member of a space drops the same channels, a removed filter's
    batch norm stays at zero through retraining, and compaction gives the masked model's outputs."""
    from study.compression import pruning
    from study.compression.admm import ADMMConfig
    from study.core.training import TrainConfig

    model = _small_resnet()
    train, val = _tiny_images(40, 1), _tiny_images(20, 2)
    lead = "layer2.0.conv1" if scheme == "filter" else "layer2.0.conv2"
    spaces = {s.producers[0]: s for s in coupling.prunable_spaces(model, (3, 16, 16))}
    sum_space = next(s for s in spaces.values() if "layer2.0.shortcut.conv" in s.producers)
    sum_lead = coupling.members(sum_space, scheme)[0]
    weights = {lead: 1.0, sum_lead: 1.0}
    keep = pruning.step_keep(model, 1.01, "density", weights, scheme=scheme, input_shape=(3, 16, 16))
    sum_members = coupling.members(sum_space, scheme)
    assert len({keep[n] for n in sum_members}) == 1 and keep[sum_lead] < 1  # one fraction for the whole space
    config = TrainConfig(epochs=1, batch_size=20, lr=0.05, lr_schedule="constant", weight_decay=0.0)
    result = pruning.prune_step(model, train, val, scheme, keep, ADMMConfig(), config, config, input_shape=(3, 16, 16))
    removed = coupling.removed_channels(model, sum_space)
    assert 0 < int(removed.sum()) < sum_space.channels
    if scheme == "filter":
        layers = dict(model.named_modules())
        for name in sum_space.norms:
            assert torch.equal(layers[name].weight.detach()[removed], torch.zeros(int(removed.sum())))
        assert all(f"{n}.weight" in result.masks for n in sum_space.norms)
    model.eval()
    smaller, sizes = coupling.compact(model, (3, 16, 16))
    smaller.eval()
    # the space leaves its producers either way: filters zeroed (filter) or read by no consumer (channel)
    assert sizes["layer2.0.shortcut.conv"]["out_after"] == sum_space.channels - int(removed.sum())
    assert sizes["layer3.0.conv1"]["in_after"] == sum_space.channels - int(removed.sum())
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), model(x), rtol=1e-4, atol=1e-5)


def test_density_weights_name_a_space_by_its_first_member() -> None:
    from study.compression import pruning

    model = _small_resnet()
    with pytest.raises(ValueError, match=r"share their channels .* give the density weight to 'conv1' only"):
        pruning.step_keep(model, 2, "density", {"layer1.0.conv2": 1.0}, scheme="filter", input_shape=(3, 16, 16))
    with pytest.raises(ValueError, match=r"cannot remove the channels of \['fc'\]"):
        pruning.step_keep(model, 2, "density", {"fc": 1.0}, scheme="filter", input_shape=(3, 16, 16))
