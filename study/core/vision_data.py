"""Paper-scale data: CIFAR-10 from its python batches and ImageNet in the ImageFolder layout, as DataLoaders.

The default profile keeps MNIST-sized splits in memory (``study.core.data``); these data sets do not fit
that way and need augmentation, so they go through torch's ``DataLoader`` with workers. Nothing here is
downloaded at run time unless asked (``fetch_cifar10``), and a missing file is an error that says what to
place where.

The stages see both through the interface of ``data.Split`` (:func:`load_splits`): CIFAR-10 (600 MB as
float32) is held in memory like MNIST and augmented by batch (``augment: crop_flip``); ImageNet streams from
disk (:class:`StreamedSplit`), augmented by its dataset's transforms in the loader's workers.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from study.core.data import DataError, Split, held_out


@dataclass(frozen=True)
class VisionSpec:
    """What params validation needs to know of a paper-scale data set before any file is read."""

    name: str
    train_images: int
    num_classes: int
    input_shape: tuple[int, int, int]


VISION_DATASETS = {
    "cifar10": VisionSpec("cifar10", 50_000, 10, (3, 32, 32)),
    "imagenet": VisionSpec("imagenet", 1_281_167, 1000, (3, 224, 224)),  # ILSVRC-2012
}
IMAGENET_FOLDER = "imagenet"  # <data.root>/imagenet/{train,val}/<class>/<image>

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
# Per-channel statistics of the CIFAR-10 training images and of ImageNet (as torchvision's references use).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10_HINT = ("download cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) and extract it so that "
                "{root}/cifar-10-batches-py/data_batch_1 exists, or call study.core.vision_data.fetch_cifar10 where "
                "the network allows")
IMAGENET_HINT = ("place the ILSVRC-2012 images as {root}/train/<class>/<image> and {root}/val/<class>/<image> "
                 "(one folder per class, e.g. n01440764; torchvision.datasets.ImageFolder's layout)")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images [N, 32, 32, 3] uint8 (HWC) and labels [N] int64."""
    if not path.is_file():
        raise DataError(f"{path} is missing: {CIFAR10_HINT.format(root=path.parents[1])}")
    with path.open("rb") as f:
        try:  # the official format is a pickle; read only files of the data set you placed yourself
            batch = pickle.load(f, encoding="bytes")
        except (pickle.UnpicklingError, EOFError) as exc:
            raise DataError(f"{path} is not a CIFAR-10 python batch ({exc}); {CIFAR10_HINT.format(root=path.parents[1])}") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path} lacks the b'data' / b'labels' entries of a CIFAR-10 python batch")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path}: expected data [N, 3072] and N labels, got data {data.shape} and {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar10(root: Path | str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``train`` (the five training batches) and ``test`` as (images HWC uint8, labels)."""
    folder = Path(root) / CIFAR10_FOLDER
    train = [_read_batch(folder / name) for name in CIFAR10_TRAIN]
    return {"train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
            "test": _read_batch(folder / CIFAR10_TEST)}


def write_cifar10(root: Path | str, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    """Write ``train`` (split over the five batches) and ``test`` in the official python-batch format (tests)."""
    folder = Path(root) / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    parts = zip(CIFAR10_TRAIN, np.array_split(np.arange(len(labels["train"])), len(CIFAR10_TRAIN)))
    for name, index in [*parts, (CIFAR10_TEST, None)]:
        split = "test" if index is None else "train"
        x = images[split] if index is None else images[split][index]
        y = labels[split] if index is None else labels[split][index]
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in y],
                 b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1).astype(np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(len(x))]}
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)


def fetch_cifar10(root: Path | str) -> Path:
    """torchvision's download (where the network allows it); else an error that says what to place where."""
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as exc:  # offline machines: urllib errors of several kinds
        raise DataError(f"CIFAR-10 could not be downloaded ({exc}); {CIFAR10_HINT.format(root=root)}") from exc
    return Path(root) / CIFAR10_FOLDER


class CIFAR10(Dataset):
    """CIFAR-10 images as normalized [3, 32, 32] tensors; training images padded by 4, randomly cropped back to 32
    and flipped (the usual augmentation of the CIFAR ResNet and VGG recipes)."""

    def __init__(self, root: Path | str, split: str = "train", augment: bool | None = None) -> None:
        from torchvision.transforms import v2

        if split not in ("train", "test"):
            raise ValueError(f"split={split!r}; CIFAR-10 has 'train' and 'test'")
        self.images, self.labels = read_cifar10(root)[split]
        steps: list[Any] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        if split == "train" if augment is None else augment:
            steps += [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
        self.transform = v2.Compose([*steps, v2.Normalize(CIFAR10_MEAN, CIFAR10_STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def imagenet(root: Path | str, split: str = "train", crop: int = 224, augment: bool | None = None) -> Dataset:
    """ImageNet (or any ImageFolder tree) with the standard augmentation: random resized crops and flips for
    training, resize to crop * 8/7 and a center crop for validation (``augment`` overrides: images held out
    of the training folder for validation are read without augmentation)."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    folder = Path(root) / split
    if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
        raise DataError(f"{folder} holds no class folders: {IMAGENET_HINT.format(root=root)}")
    if split == "train" if augment is None else augment:
        steps = [v2.RandomResizedCrop(crop), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.Resize(crop * 8 // 7), v2.CenterCrop(crop)]
    transform = v2.Compose([v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return ImageFolder(str(folder), transform=transform)


def loader(dataset: Dataset, batch_size: int, train: bool, workers: int = 2, seed: int = 0,
           sampler: Sampler | None = None) -> DataLoader:
    """A seeded DataLoader: the shuffle order and every worker's augmentation follow ``seed`` (with a
    ``DistributedSampler``, pass it as ``sampler``: it shuffles, the loader does not)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=workers, generator=generator, drop_last=train, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available(), worker_init_fn=_seed_worker)


def _seed_worker(worker_id: int) -> None:
    """Each worker's numpy and random seeds from torch's per-worker seed (itself from the loader's generator)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ---------------------------------------------------------------------------------------------
# Splits for the stages
# ---------------------------------------------------------------------------------------------


def verify_cifar10(root: Path | str) -> None:
    """Each python batch against the MD5 that torchvision publishes for it (``CIFAR10.train_list``)."""
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10
    from torchvision.datasets.utils import check_integrity

    folder = Path(root) / CIFAR10_FOLDER
    for name, md5 in [*TorchvisionCIFAR10.train_list, *TorchvisionCIFAR10.test_list]:
        if not (folder / name).is_file():
            raise DataError(f"{folder / name} is missing: {CIFAR10_HINT.format(root=root)}")
        if not check_integrity(str(folder / name), md5):
            raise DataError(f"{folder / name} does not match torchvision's MD5 {md5}: a damaged or different file; "
                            f"{CIFAR10_HINT.format(root=root)}")


def cifar10_splits(root: Path | str, val_size: int, split_seed: int = 0, check: bool = True) -> dict[str, Split]:
    """``train``, ``val`` (held out of the training batches) and ``test`` in memory, per-channel normalized."""
    if check:
        verify_cifar10(root)
    parts = read_cifar10(root)
    mean, std = torch.tensor(CIFAR10_MEAN)[:, None, None], torch.tensor(CIFAR10_STD)[:, None, None]

    def split(images: np.ndarray, labels: np.ndarray) -> Split:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        return Split(((x - mean) / std).contiguous(), torch.from_numpy(labels))

    val_idx, train_idx = held_out(len(parts["train"][1]), val_size, split_seed, "cifar10")
    images, labels = parts["train"]
    return {"train": split(images[train_idx], labels[train_idx]), "val": split(images[val_idx], labels[val_idx]),
            "test": split(*parts["test"])}


class StreamedSplit:
    """A split read from disk batch by batch, with the interface of ``data.Split`` (what training, evaluation
    and the stages call). Augmentation is the dataset's own transform, in the loader's workers; their seeds
    follow the batch-order generator, so a run repeats itself."""

    def __init__(self, dataset: Dataset, workers: int = 2, indices: torch.Tensor | None = None) -> None:
        self.dataset, self.workers = dataset, workers
        self.indices = torch.arange(len(dataset)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, batches: list[list[int]], seed: int) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers, generator=generator,
                          worker_init_fn=_seed_worker, pin_memory=torch.cuda.is_available())

    def _chunks(self, order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        return [self.indices[order[i:i + batch_size]] for i in range(0, len(order), batch_size)]

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        seed = int(torch.randint(2**31, (1,), generator=generator)) if generator is not None else 0
        yield from self._load([c.tolist() for c in self._chunks(order, batch_size)], seed)

    def training_batches(self, batch_size: int, generator: torch.Generator, augmentation: str = "none", rank: int = 0,
                         world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """Like ``Split.training_batches``, but each rank loads only its part of every global batch."""
        if augmentation != "none":
            raise ValueError(f"augment={augmentation!r}: a streamed data set is augmented by its transforms; "
                             "set the baseline's augment to 'none'")
        chunks = self._chunks(torch.randperm(len(self), generator=generator), batch_size)
        seed = int(torch.randint(2**31, (1,), generator=generator))
        parts = [torch.tensor_split(c, world_size)[rank].tolist() for c in chunks]
        for (x, y), chunk in zip(self._load(parts, seed), chunks):
            yield x, y, len(chunk)

    def shard(self, rank: int, world_size: int) -> "StreamedSplit":
        return StreamedSplit(self.dataset, self.workers, torch.tensor_split(self.indices, world_size)[rank])

    def subset(self, limit: int | None) -> "StreamedSplit":
        return self if limit is None or limit >= len(self) else StreamedSplit(self.dataset, self.workers, self.indices[:limit])


def imagenet_splits(root: Path | str, val_size: int, split_seed: int = 0, workers: int = 2) -> dict[str, StreamedSplit]:
    """``train`` and ``val`` (held out, without augmentation) from ``<root>/imagenet/train``; ``test`` is the
    official validation folder (``<root>/imagenet/val``), which the pruning papers report."""
    folder = Path(root) / IMAGENET_FOLDER
    train = imagenet(folder, "train")
    val_idx, train_idx = held_out(len(train), val_size, split_seed, "imagenet")
    return {"train": StreamedSplit(train, workers, torch.from_numpy(train_idx)),
            "val": StreamedSplit(imagenet(folder, "train", augment=False), workers, torch.from_numpy(val_idx)),
            "test": StreamedSplit(imagenet(folder, "val"), workers)}


def load_splits(name: str, root: Path | str, val_size: int, split_seed: int = 0, check: bool = True,
                workers: int = 2) -> dict[str, Split | StreamedSplit]:
    """The splits of a paper-scale data set by name (``VISION_DATASETS``)."""
    if name == "cifar10":
        return cifar10_splits(root, val_size, split_seed, check)
    if name == "imagenet":
        return imagenet_splits(root, val_size, split_seed, workers)
    raise ValueError(f"unknown paper-scale dataset {name!r}; valid: {sorted(VISION_DATASETS)}")


def main(argv: list[str] | None = None) -> int:
    """``fetch``: CIFAR-10 by torchvision's download where the network allows; then say what is where."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m study.core.vision_data", description=main.__doc__)
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("--root", default="data", help="the data root (params.yaml data.root)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    try:
        if not (root / CIFAR10_FOLDER / CIFAR10_TEST).is_file():
            fetch_cifar10(root)
        verify_cifar10(root)
        print(f"CIFAR-10: {root / CIFAR10_FOLDER} verified against torchvision's MD5s")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    imagenet_root = root / IMAGENET_FOLDER
    ready = (imagenet_root / "train").is_dir() and (imagenet_root / "val").is_dir()
    print(f"ImageNet: {'found at ' + str(imagenet_root) if ready else IMAGENET_HINT.format(root=imagenet_root)}"
          " (never downloaded: ILSVRC-2012 needs an account at image-net.org)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
