"""The paper profile end to end on tiny files in the real formats: every stage, in process, on a narrow ResNet-18
(the registered topology and layer names, 8-32 channels) over CIFAR-10 python batches, and a ResNet trained and
evaluated on an ImageNet folder tree streamed from disk. Networks of paper size are too slow for a test on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from study import paths
from study.core import models, paper_models, vision_data
from study.core.params import load_params
from tests.conftest import ONE_THREAD, REPO, run_every_stage

ORDER = ("train", "prune", "magnitude", "l1filter", "quantize", "quantize_dense", "evaluate", "weights", "storage", "energy",
         "latency", "seeds", "frontier", "verdicts", "report")


def _write_data(root: Path) -> None:
    rng = np.random.default_rng(0)
    labels = {s: rng.integers(0, 10, n) for s, n in (("train", 120), ("test", 40))}
    prototypes = rng.integers(0, 256, (10, 32, 32, 3))
    images = {s: np.clip(prototypes[labels[s]] * 0.7 + rng.integers(0, 80, (len(labels[s]), 32, 32, 3)), 0, 255)
              .astype(np.uint8) for s in labels}
    vision_data.write_cifar10(root, images, labels)
    from PIL import Image

    for split, count in (("train", 12), ("val", 2)):
        for c in range(3):
            folder = root / "imagenet" / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")


def _tiny_profile(path: Path, data_root: Path) -> Path:
    profile = yaml.safe_load((REPO / "profiles" / "paper.yaml").read_text())
    kept = ("resnet18_cifar-cifar10", "resnet50-imagenet")
    profile["baselines"] = {b: v for b, v in profile["baselines"].items() if b in kept}
    for baseline in profile["baselines"].values():
        baseline.update(epochs=1, batch_size=32)
    compared = "resnet18_cifar-cifar10"
    profile["compare"].update(baselines=[compared], weight_bits=[4])
    profile["prune"] = {compared: profile["prune"][compared]}
    for schedule in profile["prune"][compared].values():
        schedule.update(rates=schedule["rates"][:2], admm_epochs=1, retrain_epochs=1)
    profile["quantize"] = {compared: {"admm_epochs": 1, "mapping_fractions": [0.5, 1.0], "mapping_epochs": 1, "binary_epochs": 1}}
    profile["admm"].update(tolerance_pp=50.0, batch_size=32)
    profile["gap"] = {"resamples": 400}
    profile["data"] = {"root": str(data_root), "val_size": 20, "check_sha256": False, "workers": 0}
    profile["runtime"].update(threads=ONE_THREAD)
    profile["latency"].update(batches=[1, 4], min_run_time_s=0.01, sweep_layers={"tiny": [8, 16, 2]}, sweep_sparsities=[0.5, 0.9])
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def study_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("paper")
    _write_data(out / "data")
    params = load_params(_tiny_profile(out / "params.yaml", out / "data"))
    layout = paths.Layout.at(out)
    narrow = {"resnet18_cifar": lambda c, k: paper_models.ResNetCIFAR((2, 2, 2, 2), c, k, widths=(8, 16, 16, 32)),
              "resnet50": lambda c, k: paper_models.ResNetCIFAR((1, 1, 1, 1), c, k, widths=(4, 8, 8, 8))}
    with pytest.MonkeyPatch.context() as patch:
        for name, factory in narrow.items():
            patch.setitem(models.MODELS, name, factory)
        run_every_stage(params, layout, ORDER)
    return out


def test_every_stage_of_the_paper_profile_runs_on_a_residual_network(study_run: Path) -> None:
    report = study_run / "report" / "tables"
    for table in ("T1_baselines", "T3_schemes", "T5_storage_resnet18_cifar-cifar10", "T6_energy_resnet18_cifar-cifar10", "claims"):
        assert (report / f"{table}.csv").is_file(), table
    for scheme in ("filter", "channel"):
        record = json.loads((study_run / "results" / "prune" / "resnet18_cifar-cifar10" / f"{scheme}.json").read_text())
        # whole channel spaces leave: the compacted network is smaller than the masked one counts
        assert record["compact_pruning_rate"] > record["pruning_rate"] > 1.5
        assert record["compact_sizes"]["layer2.0.shortcut.conv"]["out_after"] == record["compact_sizes"]["layer2.0.conv2"]["out_after"]
    l1 = json.loads((study_run / "results" / "l1filter" / "resnet18_cifar-cifar10.json").read_text())
    assert l1["steps"] == [] and "plain chains only" in l1["not_applicable"]  # residual sums: the baseline says why not


def test_imagenet_streams_through_training_and_evaluation(study_run: Path) -> None:
    record = json.loads((study_run / "results" / "train" / "resnet50-imagenet.json").read_text())
    assert record["dataset"] == "imagenet" and 0.0 <= record["test_accuracy"] <= 1.0
    history = pd.read_csv(study_run / "metrics" / "train" / "resnet50-imagenet.history.csv")
    assert len(history) == 1
    checkpoint = torch.load(study_run / "models" / "resnet50-imagenet" / "dense.pt", weights_only=True)
    assert checkpoint["dataset"] == "imagenet"
