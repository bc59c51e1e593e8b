"""Paper-scale loaders on tiny files written in the real formats: CIFAR-10 python batches and an ImageFolder tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from study.core.data import DataError
from study.core import vision_data


def _tiny_cifar(root: Path, n_train: int = 20, n_test: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8) for s, n in (("train", n_train), ("test", n_test))}
    labels = {s: rng.integers(0, 10, size=len(images[s])) for s in images}
    vision_data.write_cifar10(root, images, labels)
    return {**{f"{s}_images": images[s] for s in images}, **{f"{s}_labels": labels[s] for s in labels}}


def test_cifar10_batches_read_back_exactly(tmp_path: Path) -> None:
    written = _tiny_cifar(tmp_path)
    assert sorted(p.name for p in (tmp_path / "cifar-10-batches-py").iterdir()) == sorted([*vision_data.CIFAR10_TRAIN, "test_batch"])
    read = vision_data.read_cifar10(tmp_path)
    for split in ("train", "test"):
        assert np.array_equal(read[split][0], written[f"{split}_images"])  # HWC, in order across the five batches
        assert np.array_equal(read[split][1], written[f"{split}_labels"])


def test_cifar10_dataset_normalizes_and_augments_only_training_images(tmp_path: Path) -> None:
    written = _tiny_cifar(tmp_path)
    test = vision_data.CIFAR10(tmp_path, "test")
    x, y = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == written["test_labels"][0]
    expected = (torch.from_numpy(written["test_images"][0]).permute(2, 0, 1) / 255 - torch.tensor(vision_data.CIFAR10_MEAN)[:, None, None]) \
        / torch.tensor(vision_data.CIFAR10_STD)[:, None, None]
    assert torch.allclose(x, expected, atol=1e-6)  # no augmentation on the test split
    train = vision_data.CIFAR10(tmp_path, "train")
    torch.manual_seed(0)
    crops = {tuple(train[0][0].flatten()[:50].tolist()) for _ in range(8)}
    assert len(crops) > 1  # random crops and flips


def test_seeded_loader_repeats_its_order_and_augmentation(tmp_path: Path) -> None:
    _tiny_cifar(tmp_path)
    dataset = vision_data.CIFAR10(tmp_path, "train")

    def first_batch() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(123)  # the augmentation of workers=0 draws from the global generator
        return next(iter(vision_data.loader(dataset, 4, train=True, workers=0, seed=7)))

    (x1, y1), (x2, y2) = first_batch(), first_batch()
    assert x1.shape == (4, 3, 32, 32) and torch.equal(x1, x2) and torch.equal(y1, y2)


def test_missing_or_foreign_files_say_what_to_place_where(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data_batch_1 is missing: download cifar-10-python.tar.gz"):
        vision_data.read_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_1 is not a CIFAR-10 python batch"):
        vision_data.read_cifar10(tmp_path)
    with pytest.raises(DataError, match=r"train holds no class folders: place the ILSVRC-2012 images as .*/train/<class>/<image>"):
        vision_data.imagenet(tmp_path / "imagenet", "train")


def test_image_folder_gives_crops_of_the_requested_size(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            (tmp_path / split / wnid).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)).save(tmp_path / split / wnid / f"{i}.JPEG", "JPEG")
    train, val = vision_data.imagenet(tmp_path, "train", crop=24), vision_data.imagenet(tmp_path, "val", crop=24)
    assert train.classes == ["n01440764", "n01443537"] and len(train) == len(val) == 6
    x, y = next(iter(vision_data.loader(val, 6, train=False, workers=0)))
    assert x.shape == (6, 3, 24, 24) and y.tolist() == [0, 0, 0, 1, 1, 1]
    x, _ = next(iter(vision_data.loader(train, 2, train=True, workers=2, seed=3)))
    assert x.shape == (2, 3, 24, 24)


def test_cifar10_splits_hold_out_validation_and_normalize_like_the_dataset(tmp_path: Path) -> None:
    written = _tiny_cifar(tmp_path, n_train=30)
    splits = vision_data.cifar10_splits(tmp_path, val_size=8, split_seed=0, check=False)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [22, 8, 6]
    assert splits["train"].images.shape == (22, 3, 32, 32) and splits["train"].images.dtype == torch.float32
    torch.testing.assert_close(splits["test"].images[0], vision_data.CIFAR10(tmp_path, "test")[0][0])
    # validation and training are a partition of the training batches (labels as a multiset check)
    labels = sorted(splits["train"].labels.tolist() + splits["val"].labels.tolist())
    assert labels == sorted(written["train_labels"].tolist())
    with pytest.raises(DataError, match="does not match torchvision's MD5"):
        vision_data.cifar10_splits(tmp_path, val_size=8, check=True)


def _tiny_imagenet(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    for split, count in (("train", 5), ("val", 2)):
        for wnid in ("n01440764", "n01443537"):
            (root / "imagenet" / split / wnid).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, size=(36, 40, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / "imagenet" / split / wnid / f"{i}.JPEG", "JPEG")


def test_streamed_imagenet_splits_serve_the_stages(tmp_path: Path) -> None:
    _tiny_imagenet(tmp_path)
    splits = vision_data.load_splits("imagenet", tmp_path, val_size=3, split_seed=0, workers=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [7, 3, 4]
    x, y = next(iter(splits["test"].batches(4)))
    assert x.shape == (4, 3, 224, 224) and y.tolist() == [0, 0, 1, 1]
    # every rank loads only its part of each global batch: together they are the one-process batch
    whole = [(y.tolist(), size) for _, y, size in splits["train"].training_batches(4, torch.Generator().manual_seed(1))]
    parts = [[(y.tolist(), size) for _, y, size in splits["train"].training_batches(4, torch.Generator().manual_seed(1), rank=r, world_size=2)]
             for r in (0, 1)]
    assert [size for _, size in whole] == [4, 3]
    assert [a + b for (a, _), (b, _) in zip(*parts)] == [labels for labels, _ in whole]
    with pytest.raises(ValueError, match="augmented by its transforms"):
        next(splits["train"].training_batches(4, torch.Generator(), augmentation="hflip"))
    assert len(splits["val"].shard(1, 2)) == 1 and len(splits["train"].subset(2)) == 2


def test_streamed_training_batches_repeat_with_their_seed(tmp_path: Path) -> None:
    _tiny_imagenet(tmp_path)
    train = vision_data.load_splits("imagenet", tmp_path, val_size=3, workers=2)["train"]
    first, second = (torch.cat([x for x, _, _ in train.training_batches(4, torch.Generator().manual_seed(9))]) for _ in range(2))
    assert torch.equal(first, second)  # order and every worker's random crops follow the generator
