"""The model registry and the counts table T1 reports."""

from __future__ import annotations

import pytest
import torch

from study.core import models


def test_registry_builds_caffe_lenet5_with_published_size() -> None:
    net = models.build_model("lenet5")
    assert list(models.prunable_layers(net)) == ["conv1", "conv2", "fc1", "fc2"]
    assert models.count_weights(net) == 500 + 25_000 + 400_000 + 5_000  # 430,500 weights
    assert models.count_parameters(net) == 430_500 + 20 + 50 + 500 + 10
    assert net(torch.zeros(3, *models.INPUT_SHAPES["lenet5"])).shape == (3, 10)


def test_macs_match_hand_count() -> None:
    net = models.build_model("lenet5")
    macs = models.count_macs(net, models.INPUT_SHAPES["lenet5"])
    assert macs == {
        "conv1": 20 * 24 * 24 * 1 * 5 * 5,
        "conv2": 50 * 8 * 8 * 20 * 5 * 5,
        "fc1": 800 * 500,
        "fc2": 500 * 10,
    }


def test_vgg6_shapes_weights_and_macs_match_hand_count() -> None:
    net = models.build_model("vgg6")
    assert list(models.prunable_layers(net)) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1"]
    conv_weights = 16 * 1 * 9 + 16 * 16 * 9 + 32 * 16 * 9 + 32 * 32 * 9 + 64 * 32 * 9  # 34,704
    assert models.count_weights(net) == conv_weights + 256 * 10 == 37_264
    assert models.count_parameters(net) == 37_264 + 16 + 16 + 32 + 32 + 64 + 10
    assert net(torch.zeros(3, *models.INPUT_SHAPES["vgg6"])).shape == (3, 10)
    macs = models.count_macs(net, models.INPUT_SHAPES["vgg6"])
    # output positions: 26x26, 24x24, (pool) 10x10, 8x8, (pool) 2x2
    assert macs == {"conv1": 26 * 26 * 16 * 9, "conv2": 24 * 24 * 16 * 16 * 9, "conv3": 10 * 10 * 32 * 16 * 9,
                    "conv4": 8 * 8 * 32 * 32 * 9, "conv5": 2 * 2 * 64 * 32 * 9, "fc1": 256 * 10}
    # conv-dominated: at least 90% of the weights and of the MACs in the convolutions
    assert conv_weights / models.count_weights(net) >= 0.9
    assert sum(v for k, v in macs.items() if k.startswith("conv")) / sum(macs.values()) >= 0.9


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'vgg99'; valid models: \['alexnet', 'lenet5', 'resnet18_cifar', 'resnet50', 'vgg16_cifar', 'vgg6'\]"):
        models.build_model("vgg99")


def test_pruning_rate_counts_conv_and_fc_weights_only() -> None:
    net = models.build_model("lenet5")
    assert models.pruning_rate(net) == 1.0
    with torch.no_grad():
        net.fc1.weight.zero_()  # 400,000 of 430,500 weights
        net.fc1.bias.zero_()  # biases do not count
    assert models.pruning_rate(net) == pytest.approx(430_500 / 30_500)

