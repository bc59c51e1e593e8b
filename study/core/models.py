"""Model registry and the size/compute counts reported in table T1.

Models are plain ``nn.Sequential`` chains with named layers, so pruning masks, per-layer targets and
compaction can address a layer by a stable name (``conv1``, ``fc1``, ...).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from study.core.paper_models import PAPER_CLASSES, PAPER_INPUT_SHAPES, PAPER_MODELS

ModelFactory = Callable[[int, int], nn.Module]  # (in_channels, num_classes) -> model


def lenet5(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """LeNet-5 as in Caffe's MNIST example, the variant the pruning papers (Han et al., DNS, ADMM) use.

    conv 20@5x5 -> max-pool 2 -> conv 50@5x5 -> max-pool 2 -> FC 500 -> ReLU -> FC 10: 430,500 weights
    (431,080 parameters with biases). Caffe's example has no ReLU after the convolutions; we follow it.
    """
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, 20, kernel_size=5),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(20, 50, kernel_size=5),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(50 * 4 * 4, 500),
            relu1=nn.ReLU(),
            fc2=nn.Linear(500, num_classes),
        )
    )


def vgg6(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """A VGG-style CNN for 28x28 inputs whose weights and MACs sit in its convolutions, as in the CNNs
    the paper studies (LeNet-5 keeps 93% of its weights in one FC layer).

    Three VGG blocks of 3x3 convolutions with ReLU (16, 16 | 32, 32 | 64 channels, max-pool after the
    first two) and one FC layer: 37,264 weights, 93% in the convolutions; 2.55M MACs, 99.9% in them.
    The convolutions are unpadded, like LeNet-5's: a removed filter then emits a constant (its bias)
    that compaction folds exactly into the next layer's bias, which zero padding would make
    position-dependent. Widths: the widest whose training epoch costs about LeNet-5's on 2 CPU cores.
    No BatchNorm: the stages prune, quantize and price a plain chain of convolutions.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    widths = ((16, False), (16, True), (32, False), (32, True), (64, False))  # (channels, max-pool after)
    channels = in_channels
    for i, (width, pool) in enumerate(widths, start=1):
        layers[f"conv{i}"] = nn.Conv2d(channels, width, kernel_size=3)  # 28 -> 26 -> 24 | 12 -> 10 -> 8 | 4 -> 2
        layers[f"relu{i}"] = nn.ReLU()
        if pool:
            layers[f"pool{i // 2}"] = nn.MaxPool2d(2)
        channels = width
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(64 * 2 * 2, num_classes)
    return nn.Sequential(layers)


MODELS: dict[str, ModelFactory] = {"lenet5": lenet5, "vgg6": vgg6, **PAPER_MODELS}

# Input shape each model expects (channels, height, width): used to count MACs and to check datasets.
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {"lenet5": (1, 28, 28), "vgg6": (1, 28, 28), **PAPER_INPUT_SHAPES}
NUM_CLASSES: dict[str, int] = {"lenet5": 10, "vgg6": 10, **PAPER_CLASSES}


def build_model(name: str, num_classes: int | None = None) -> nn.Module:
    """Instantiate a registered model (with its data set's classes unless told); an unknown name lists the valid ones."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODELS)}") from None
    return factory(INPUT_SHAPES[name][0], NUM_CLASSES[name] if num_classes is None else num_classes)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The conv and FC layers whose weights pruning and quantization act on, by name, in order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def count_weights(model: nn.Module) -> int:
    """Weights of conv and FC layers (no biases): the denominator the pruning papers use."""
    return sum(m.weight.numel() for m in prunable_layers(model).values())


def count_nonzero_weights(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(m.weight)) for m in prunable_layers(model).values())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
    """Multiply-accumulates per layer for one input, dense (a zero weight still costs a MAC here).

    Measured with forward hooks on a real forward pass, so it follows whatever shapes the model has.
    """
    macs: dict[str, int] = {}
    hooks = []
    for name, layer in prunable_layers(model).items():

        def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor, name: str = name) -> None:
            if isinstance(module, nn.Conv2d):
                per_output = module.weight[0].numel()  # (in/groups) * kh * kw
                macs[name] = int(output[0].numel() * per_output)
            else:
                macs[name] = int(module.weight.numel())

        hooks.append(layer.register_forward_hook(hook))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return macs


def pruning_rate(model: nn.Module) -> float:
    """Total conv/FC weights divided by the non-zero ones (1.0 for a dense model)."""
    nonzero = count_nonzero_weights(model)
    return float("inf") if nonzero == 0 else count_weights(model) / nonzero
