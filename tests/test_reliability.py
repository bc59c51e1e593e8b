"""Faults injected into real runs: a SIGKILLed training stage resumes to the same result; the network guard works."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from study.core import models, training
from study.core.artifacts import load_checkpoint
from study.core.data import write_synthetic
from study import paths
from tests.conftest import REPO, write_tiny_params

GUARD = REPO / "tests" / "netguard"
IRREGULAR = paths.item("lenet5-mnist", "irregular")  # the name of the irregular pruning run's records


def test_network_guard_records_remote_lookups_and_connections(tmp_path: Path) -> None:
    """The guard the pipeline test relies on must see an attempt, or that test proves nothing."""
    log = tmp_path / "net.log"
    code = ("import socket\n"
            "for target in (lambda: socket.getaddrinfo('example.com', 80), lambda: socket.create_connection(('192.0.2.1', 9), 0.2)):\n"
            "    try: target()\n"
            "    except OSError: pass\n"
            "socket.getaddrinfo('localhost', 80)\n")
    env = {**os.environ, "STUDY_NETGUARD_LOG": str(log), "PYTHONPATH": str(GUARD)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    text = log.read_text()
    assert "name lookup of 'example.com'" in text and "192.0.2.1" in text and "localhost" not in text


def _kill_once_written(command: list[str], checkpoint: Path) -> None:
    """Start a stage and SIGKILL it, papermill client and kernel at once, as soon as ``checkpoint`` appears.

    jupyter_client starts the kernel in a session of its own, so killing the client's process group
    would leave the kernel training (and writing further steps) for a moment: kill every descendant.
    """
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    parent = psutil.Process(process.pid)
    victims = [parent, *parent.children(recursive=True)]
    for victim in victims:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=60)
    psutil.wait_procs(victims, timeout=60)


def _notebook_command(name: str, params: Path, out: Path, **identity: str) -> list[str]:
    """A stage notebook run by papermill, writing under ``out`` (its own output root)."""
    command = [sys.executable, "-m", "papermill", "--log-level", "WARNING", str(REPO / "notebooks" / f"{name}.ipynb"),
               str(out / "run.ipynb"), "-p", "params_file", str(params), "-p", "out_root", str(out)]
    for key, value in identity.items():
        command += ["-p", key, value]
    return command


def _train_command(params: Path, out: Path) -> list[str]:
    return _notebook_command("train", params, out, baseline="lenet5-mnist")


def _record(out: Path, stage: str, name: str) -> dict:
    return json.loads((out / paths.results(stage, name)).read_text())


def test_sigkill_after_first_checkpoint_then_rerun_finishes_identically(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_synthetic("mnist", root, n_train=2048, n_test=64, seed=3)
    epochs = 8
    params = write_tiny_params(tmp_path / "params.yaml", root)
    settings = yaml.safe_load(params.read_text())
    settings["baselines"]["lenet5-mnist"].update(epochs=epochs)
    params.write_text(yaml.safe_dump(settings))
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    subprocess.run(_train_command(params, reference), check=True, cwd=REPO, timeout=600, capture_output=True)

    resume = killed / paths.resume("train", "lenet5-mnist")
    _kill_once_written(_train_command(params, killed), resume)
    done = len(load_checkpoint(resume)["history"])
    assert not (killed / paths.results("train", "lenet5-mnist")).exists() and 1 <= done < epochs, "the kill must land mid-training"

    rerun = subprocess.run(_train_command(params, killed), cwd=REPO, timeout=600, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    notebook = (killed / "run.ipynb").read_text()
    assert f"resuming from {resume}: {done}/{epochs} epochs already done" in notebook
    assert _record(killed, "train", "lenet5-mnist") == _record(reference, "train", "lenet5-mnist")
    a, _ = training.load_model(reference / paths.dense_checkpoint("lenet5-mnist"))
    b, _ = training.load_model(killed / paths.dense_checkpoint("lenet5-mnist"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not resume.exists(), "a finished run removes its resume state"


def _prune_command(params: Path, out: Path) -> list[str]:
    return _notebook_command("prune", params, out, baseline="lenet5-mnist", scheme="irregular")


def test_sigkilled_pruning_resumes_after_its_last_finished_step(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_synthetic("mnist", root, n_train=1024, n_test=64, seed=4)
    params = write_tiny_params(tmp_path / "params.yaml", root)
    settings = yaml.safe_load(params.read_text())
    settings["prune"]["lenet5-mnist"]["irregular"].update(rates=[2, 4, 8], admm_epochs=2, retrain_epochs=1, stop_after_misses=3)
    params.write_text(yaml.safe_dump(settings))
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    training.seed_everything(0)
    dense = models.build_model("lenet5")  # one model: both runs start from the same weights
    for out in (reference, killed):
        training.save_model(out / paths.dense_checkpoint("lenet5-mnist"), dense, "lenet5", "mnist")
    subprocess.run(_prune_command(params, reference), check=True, cwd=REPO, timeout=600, capture_output=True)

    resume = killed / paths.resume("prune", IRREGULAR)
    _kill_once_written(_prune_command(params, killed), resume)
    done = len(load_checkpoint(resume)["steps"])
    assert not (killed / paths.results("prune", IRREGULAR)).exists() and 1 <= done < 3, \
        "the kill must land between steps"
    shutil.rmtree(killed / paths.prune_dir("lenet5-mnist", "irregular"))  # as DVC does with a stage's outputs before rerunning it

    rerun = subprocess.run(_prune_command(params, killed), cwd=REPO, timeout=600, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming from {resume}: {done}/3 steps already done" in (killed / "run.ipynb").read_text()
    assert _record(killed, "prune", IRREGULAR) == _record(reference, "prune", IRREGULAR)
    folder = paths.prune_dir("lenet5-mnist", "irregular")
    assert sorted(p.name for p in (killed / folder).iterdir()) == sorted(p.name for p in (reference / folder).iterdir())
    assert not resume.exists()


@pytest.mark.parametrize("change", [("data", "val_size", 80), ("runtime", "threads", 2)], ids=lambda c: f"{c[0]}.{c[1]}")
def test_a_resume_file_from_other_settings_is_set_aside_and_training_starts_over(tmp_path: Path, change) -> None:
    """Killed under one setting, rerun under another: the result is the uninterrupted run's under the new one."""
    section, key, value = change
    root = tmp_path / "data"
    write_synthetic("mnist", root, n_train=2048, n_test=64, seed=3)
    before = write_tiny_params(tmp_path / "before.yaml", root)
    settings = yaml.safe_load(before.read_text())
    settings["baselines"]["lenet5-mnist"].update(epochs=6)
    before.write_text(yaml.safe_dump(settings))
    settings[section][key] = value
    after = tmp_path / "after.yaml"
    after.write_text(yaml.safe_dump(settings))
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    subprocess.run(_train_command(after, reference), check=True, cwd=REPO, timeout=600, capture_output=True)

    resume = killed / paths.resume("train", "lenet5-mnist")
    _kill_once_written(_train_command(before, killed), resume)
    assert 1 <= len(load_checkpoint(resume)["history"]) < 6, "the kill must land mid-training"
    rerun = subprocess.run(_train_command(after, killed), cwd=REPO, timeout=600, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    notebook = (killed / "run.ipynb").read_text()
    said = re.search(rf"{re.escape(str(resume))} was written under other settings \(([^)]*) differ\): starting over", notebook)
    assert said and section in said.group(1).split(", "), "the rerun must say why it starts over"
    assert "resuming from" not in notebook
    assert _record(killed, "train", "lenet5-mnist") == _record(reference, "train", "lenet5-mnist")
    a, _ = training.load_model(reference / paths.dense_checkpoint("lenet5-mnist"))
    b, _ = training.load_model(killed / paths.dense_checkpoint("lenet5-mnist"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
