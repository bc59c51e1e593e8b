"""Augmentations of in-memory training batches, drawn from the batch-order generator (seeded, resumable).

Applied to whole normalized batches as tensor operations: the in-memory splits exist because a per-image
transform pipeline costs more than a small model's epoch on 2 CPU cores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "hflip", "crop_flip")
CROP_PADDING = 4  # the CIFAR recipes' pad-and-crop (He et al. 2016)


def check(name: str) -> str:
    if name not in AUGMENTATIONS:
        raise ValueError(f"augment={name!r}; valid: {list(AUGMENTATIONS)}")
    return name


def hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> torch.Tensor:
    """Pad by ``padding`` (with 0, the mean pixel after normalization), crop a random window of the original
    size from each image, then mirror with probability 1/2."""
    n, _, height, width = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    padded = F.pad(x, (padding, padding, padding, padding)).permute(0, 2, 3, 1)  # [N, H+2p, W+2p, C]
    rows = offsets[:, :1] + torch.arange(height)  # [N, H]
    cols = offsets[:, 1:] + torch.arange(width)  # [N, W]
    cropped = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return hflip(cropped.contiguous(), generator)


def apply(name: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if name == "hflip":
        return hflip(x, generator)
    if name == "crop_flip":
        return crop_flip(x, generator)
    check(name)
    return x
