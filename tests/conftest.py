"""Shared fixtures: tiny synthetic datasets written in the real raw IDX layout."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import settings

import yaml

from study.core.data import write_synthetic

REPO = Path(__file__).resolve().parents[1]

# `make test` runs two test files at once on 2 cores. Two torch thread pools of 2 threads each stall each
# other (benchmarks/background_load.py: 3x), so tests, and the stages they start, compute on one thread.
ONE_THREAD = 1
torch.set_num_threads(ONE_THREAD)

# CI replays the same examples every run (a red CI must be reproducible); locally each run explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with tiny MNIST and Fashion-MNIST look-alikes (256 train / 64 test images each)."""
    root = tmp_path_factory.mktemp("data")
    write_synthetic("mnist", root, seed=1)
    write_synthetic("fashion_mnist", root, seed=2)
    return root


# The pipeline test takes most of the suite's time: collected first, so that `make test` (pytest-xdist,
# --dist loadfile) starts it at once on one core while every other file runs on the other.
LONG_FIRST = ("test_notebooks.py",)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONG_FIRST)  # a stable sort: every file keeps its order


# Under pytest-xdist the bad-input cases pass in a worker: each worker hands its list to the controller.
WORKER_BAD_INPUTS = pytest.StashKey[list]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workeroutput"):  # set by xdist in a worker process only
        from tests.test_bad_inputs import BAD_INPUTS_KEY

        session.config.workeroutput["bad_inputs"] = session.config.stash.get(BAD_INPUTS_KEY, [])


def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist's hook on the controller when a worker ends (absent without xdist: never called)."""
    passed = getattr(node, "workeroutput", {}).get("bad_inputs", [])
    node.config.stash.setdefault(WORKER_BAD_INPUTS, []).extend(passed)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """Say how many bad inputs the bad-input suite tried (tests/test_bad_inputs.py)."""
    from tests.test_bad_inputs import BAD_INPUTS_KEY, CASES

    passed = config.stash.get(BAD_INPUTS_KEY, []) + config.stash.get(WORKER_BAD_INPUTS, [])
    if passed:
        terminalreporter.write_line(f"bad-input suite: {len(passed)} of {len(CASES)} bad inputs refused with their "
                                    "specific error, earlier outputs intact")


def write_tiny_params(path: Path, data_root: Path | str, weight_bits: list[int] | None = None) -> Path:
    """params.yaml shrunk to a tiny config: same keys, synthetic data, one epoch a phase, small sweeps."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"] = {"root": str(data_root), "val_size": 56, "check_sha256": False}
    params["runtime"]["threads"] = ONE_THREAD
    for baseline in params["baselines"].values():
        baseline.update(epochs=1, batch_size=32)
    params["admm"].update(batch_size=32, lr=0.05, retrain_lr=0.05, tolerance_pp=50.0)
    for schedules in params["prune"].values():
        for schedule in schedules.values():
            key = "patterns" if "patterns" in schedule else "rates"  # an N:M schedule steps through patterns
            schedule.update({key: schedule[key][:2], "admm_epochs": 1, "retrain_epochs": 1})
    if weight_bits is not None:
        params["compare"]["weight_bits"] = weight_bits
    for settings in params["quantize"].values():
        settings.update(admm_epochs=1, mapping_fractions=[0.5, 1.0], mapping_epochs=1, binary_epochs=1)
    # both paths of a quantize stage, whatever the tiny models' accuracies: the first compared baseline keeps
    # every snapped model without training, the second always trains
    first, *others = params["compare"]["baselines"]
    params["quantize"][first]["snap_within_pp"] = 100.0
    for name in others:
        params["quantize"][name]["snap_within_pp"] = None
    params["spread"] = {"seeds": [1]}  # one other seed: the seeds stage's loop runs, once
    params["gap"]["resamples"] = 400  # the verdicts' bootstrap: every path runs, in a second
    params["latency"].update(batches=[1, 4], min_run_time_s=0.01, sweep_layers={"tiny": [8, 16, 2]}, sweep_sparsities=[0.5, 0.9])
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def step_saver(folder: Path) -> tuple[Callable[[int, float, torch.nn.Module], str], list[Path]]:
    """A ``save_step`` for pruning schedules run in tests (LeNet-5 checkpoints under ``folder``) and the list it fills."""
    from study.core import training

    saved: list[Path] = []

    def save_step(step: int, rate: float, model: torch.nn.Module) -> str:
        path = folder / f"step{step}.pt"
        training.save_model(path, model, "lenet5", "mnist", {"target_rate": rate})
        saved.append(path)
        return str(path)

    return save_step, saved


# Every stage kind in the order dvc.yaml chains them (``run_every_stage``).
STAGE_KINDS = ("train", "prune", "magnitude", "l1filter", "asp", "quantize", "quantize_dense", "evaluate", "weights",
               "storage", "energy", "latency", "seeds", "frontier", "verdicts", "export", "report")


def run_every_stage(params, layout, kinds: tuple[str, ...] = STAGE_KINDS) -> None:
    """Every stage of ``kinds`` that the params define, in process and in pipeline order: what ``dvc repro`` runs,
    without DVC and papermill (the tests of whole profiles)."""
    import importlib

    from study.stages import launch

    items = launch.stage_items(params)
    for kind in kinds:
        for _, (item_kind, _, identity) in items.items():
            if item_kind == kind:
                module = importlib.import_module(f"study.stages.{'quantize' if kind == 'quantize_dense' else kind}")
                module.run(params, layout, **identity)
