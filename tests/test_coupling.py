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
    scores = coupling.channel_scores(model, space)
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
    smaller = coupling.compact(model, (3, 32, 32)).eval()
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
    smaller = coupling.compact(model, (3, 32, 32)).eval()
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
