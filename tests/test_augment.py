"""Batch augmentations: every output image is one of the allowed transforms of its input, drawn from the seed."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from study.core import augment


def _windows(image: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every crop of the padded image at the original size, plain and mirrored (brute force)."""
    _, height, width = image.shape
    padded = F.pad(image, (padding,) * 4)
    crops = [padded[:, dy:dy + height, dx:dx + width] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    return crops + [c.flip(-1) for c in crops]


def test_crop_flip_outputs_a_padded_window_of_each_image() -> None:
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = augment.crop_flip(x, torch.Generator().manual_seed(1), padding=2)
    assert out.shape == x.shape
    for image, result in zip(x, out):
        assert any(torch.equal(result, window) for window in _windows(image, 2))
    shifted = sum(not torch.equal(result, image) and not torch.equal(result, image.flip(-1)) for image, result in zip(x, out))
    assert shifted >= 8  # 24 of 25 offsets move the image


def test_augmentations_repeat_with_their_seed_and_none_is_the_identity() -> None:
    x = torch.randn(6, 1, 5, 5)
    for name in ("hflip", "crop_flip"):
        first = augment.apply(name, x, torch.Generator().manual_seed(3))
        assert torch.equal(first, augment.apply(name, x, torch.Generator().manual_seed(3)))
        assert not torch.equal(first, augment.apply(name, x, torch.Generator().manual_seed(4)))
    assert augment.apply("none", x, torch.Generator()) is x
