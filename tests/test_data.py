"""IDX reading, checksum verification, fetch source order and in-memory splits."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from study.core import data
from study.core.data import DataError, DatasetSpec, read_idx, write_idx


def test_idx_round_trip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x-idx3-ubyte", array)
    raw = (tmp_path / "x-idx3-ubyte").read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert raw[4:16] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx3-ubyte"), array)


def test_idx_rejects_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(20))  # a gzip header: a compressed file left in place
    with pytest.raises(DataError, match=r"bad IDX magic 1f8b0800") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_rejects_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "images"
    write_idx(path, np.zeros((10, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"declares shape \(10, 28, 28\).*truncated"):
        read_idx(path)


def test_idx_missing_file_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing; run `python -m study.core.data fetch`"):
        read_idx(tmp_path / "nope")


def test_verify_names_corrupted_file_and_expected_checksum(synthetic_root: Path) -> None:
    spec = data.DATASETS["mnist"]  # real checksums; the synthetic files cannot match them
    with pytest.raises(DataError) as info:
        data.verify(spec, synthetic_root)
    message = str(info.value)
    assert "is corrupted" in message
    assert str(spec.raw_dir(synthetic_root)) in message
    assert any(expected in message for expected in spec.sha256.values())


def test_verify_missing_data_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing; run `python -m study.core.data fetch`"):
        data.load_dataset("mnist", tmp_path)


def test_load_rejects_label_count_mismatch(tmp_path: Path, synthetic_root: Path) -> None:
    shutil.copytree(synthetic_root, tmp_path, dirs_exist_ok=True)
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    write_idx(labels, np.zeros(10, dtype=np.uint8))
    with pytest.raises(DataError, match=r"10 labels for 256 images"):
        data.load_dataset("mnist", tmp_path, val_size=16, check_sha256=False)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; valid datasets: \['fashion_mnist', 'mnist'\]"):
        data.dataset_spec("cifar")


def test_splits_are_disjoint_fixed_and_normalized(synthetic_root: Path) -> None:
    splits = data.load_dataset("mnist", synthetic_root, val_size=56, split_seed=3, check_sha256=False)
    assert {k: len(v) for k, v in splits.items()} == {"train": 200, "val": 56, "test": 64}
    assert splits["train"].images.shape == (200, 1, 28, 28) and splits["train"].images.dtype == torch.float32
    assert splits["train"].labels.dtype == torch.int64
    # The validation images are training-file images that the train split no longer holds.
    raw = torch.from_numpy(read_idx(synthetic_root / "MNIST" / "raw" / "train-images-idx3-ubyte").copy())
    spec = data.DATASETS["mnist"]
    restored = lambda s: torch.round((s.images.squeeze(1) * spec.std + spec.mean) * 255).to(torch.uint8)  # noqa: E731
    train_rows = {bytes(r.numpy()) for r in restored(splits["train"])}
    val_rows = {bytes(r.numpy()) for r in restored(splits["val"])}
    assert not train_rows & val_rows
    assert train_rows | val_rows == {bytes(r.numpy()) for r in raw}
    again = data.load_dataset("mnist", synthetic_root, val_size=56, split_seed=3, check_sha256=False)
    assert torch.equal(again["val"].labels, splits["val"].labels)


def test_batches_cover_split_once_and_shuffle_deterministically(synthetic_root: Path) -> None:
    split = data.load_dataset("mnist", synthetic_root, val_size=0, check_sha256=False)["test"]
    first = [y for _, y in split.batches(10, torch.Generator().manual_seed(5))]
    second = [y for _, y in split.batches(10, torch.Generator().manual_seed(5))]
    assert [len(y) for y in first] == [10] * 6 + [4]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert sorted(torch.cat(first).tolist()) == sorted(split.labels.tolist())


# --- fetch: source order, verification before install -----------------------------------------


@pytest.fixture()
def fake_spec(monkeypatch: pytest.MonkeyPatch, synthetic_root: Path) -> DatasetSpec:
    """Register a dataset whose checksums are those of the synthetic MNIST files."""
    raw = data.DATASETS["mnist"].raw_dir(synthetic_root)
    spec = replace(
        data.DATASETS["mnist"], name="fake", sha256={p.name: data.sha256_of(p) for p in sorted(raw.iterdir())}
    )
    monkeypatch.setitem(data.DATASETS, "fake", spec)
    return spec


def test_fetch_tries_sources_in_order_and_installs_verified_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, synthetic_root: Path, fake_spec: DatasetSpec
) -> None:
    calls: list[str] = []

    def broken(spec: DatasetSpec, scratch: Path) -> dict[str, Path]:
        calls.append("broken")
        raise OSError("no network")

    def good(spec: DatasetSpec, scratch: Path) -> dict[str, Path]:
        calls.append("good")
        return {p.name: p for p in spec.raw_dir(synthetic_root).iterdir()}

    monkeypatch.setattr(data, "SOURCES", {"broken": broken, "good": good})
    root = tmp_path / "fresh"
    assert data.fetch("fake", root, ("broken", "good")) == "good"
    assert calls == ["broken", "good"]
    data.verify(fake_spec, root)
    assert data.fetch("fake", root, ("broken", "good")) == "present"
    assert calls == ["broken", "good"]  # present and verified: no source is asked again


def test_fetch_never_installs_files_that_fail_their_checksum(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, synthetic_root: Path, fake_spec: DatasetSpec
) -> None:
    def tampered(spec: DatasetSpec, scratch: Path) -> dict[str, Path]:
        found = {}
        for p in spec.raw_dir(synthetic_root).iterdir():
            copy = scratch / p.name
            copy.write_bytes(p.read_bytes()[:-1] + b"\x01")
            found[p.name] = copy
        return found

    monkeypatch.setattr(data, "SOURCES", {"tampered": tampered})
    root = tmp_path / "fresh"
    with pytest.raises(DataError, match=r"every source failed:\n  tampered: DataError"):
        data.fetch("fake", root, ("tampered",))
    assert not fake_spec.raw_dir(root).exists() or not any(fake_spec.raw_dir(root).iterdir())


def test_cli_verify_reports_error_and_exit_code(synthetic_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert data.main(["verify", "--root", str(synthetic_root), "--datasets", "mnist"]) == 1
    assert "is corrupted" in capsys.readouterr().err
