"""The paper's networks: VGG-16 and ResNet-18 for CIFAR-10, AlexNet and ResNet-50 for ImageNet.

The ImageNet models are torchvision's own definitions (untrained: nothing is downloaded). torchvision has
no CIFAR variants, so the two CIFAR models are written here after the common CIFAR recipes the pruning
papers train (e.g. ADMM-NN, Zhang et al.'s ADMM code): VGG-16 with batch norm and one 512->10 classifier,
and ResNet-18 with a 3x3 stem and no max-pool (He et al.'s BasicBlock, 11.17M parameters).
Batch norm and residual sums join channels across layers: structured pruning has to remove them
together (``study.compression.coupling``).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

# VGG-16's 13 convolutions ("M" = 2x2 max-pool), as in Simonyan & Zisserman's configuration D.
VGG16_WIDTHS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_cifar(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """VGG-16 with batch norm for 32x32 inputs: 13 padded 3x3 convolutions, one FC layer (14.7M weights)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, conv, pool = in_channels, 0, 0
    for width in VGG16_WIDTHS:
        if width == "M":
            pool += 1
            layers[f"pool{pool}"] = nn.MaxPool2d(2)
            continue
        conv += 1
        layers[f"conv{conv}"] = nn.Conv2d(channels, width, kernel_size=3, padding=1)
        layers[f"bn{conv}"] = nn.BatchNorm2d(width)
        layers[f"relu{conv}"] = nn.ReLU(inplace=True)
        channels = width
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(512, num_classes)
    return nn.Sequential(layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (a 1x1 convolution where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), bn=nn.BatchNorm2d(out_channels)))

    def forward(self, x):  # noqa: ANN001, ANN201 (torch.fx traces this)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, four stages of BasicBlocks (64-512 channels), global average pool."""

    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), in_channels: int = 3, num_classes: int = 10,
                 widths: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        channels, stages = widths[0], []
        for i, (count, width) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(count):
                stage.append(BasicBlock(channels, width, stride if j == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):  # noqa: ANN001, ANN201
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.pool(x)))


def resnet18_cifar(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    return ResNetCIFAR((2, 2, 2, 2), in_channels, num_classes)


def alexnet(in_channels: int = 3, num_classes: int = 1000) -> nn.Module:
    """torchvision's AlexNet (61.1M parameters; the paper prunes it 36x irregularly)."""
    from torchvision.models import alexnet as torchvision_alexnet

    _rgb_only("alexnet", in_channels)
    return torchvision_alexnet(weights=None, num_classes=num_classes)


def resnet50(in_channels: int = 3, num_classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-50 (25.6M parameters; the paper prunes it 8x irregularly)."""
    from torchvision.models import resnet50 as torchvision_resnet50

    _rgb_only("resnet50", in_channels)
    return torchvision_resnet50(weights=None, num_classes=num_classes)


def _rgb_only(name: str, in_channels: int) -> None:
    if in_channels != 3:
        raise ValueError(f"{name} is torchvision's definition for RGB images; got in_channels={in_channels}")


PAPER_MODELS = {"vgg16_cifar": vgg16_cifar, "resnet18_cifar": resnet18_cifar, "alexnet": alexnet, "resnet50": resnet50}
PAPER_INPUT_SHAPES = {"vgg16_cifar": (3, 32, 32), "resnet18_cifar": (3, 32, 32),
                      "alexnet": (3, 224, 224), "resnet50": (3, 224, 224)}
PAPER_CLASSES = {"vgg16_cifar": 10, "resnet18_cifar": 10, "alexnet": 1000, "resnet50": 1000}
