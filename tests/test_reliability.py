"""Faults injected into real runs: a SIGKILLed training stage resumes to the same result; the network guard works."""

from __future__ import annotations

import json
import os
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

from study import models, training
from study.artifacts import load_checkpoint
from study.data import write_synthetic
from tests.conftest import REPO

GUARD = REPO / "tests" / "netguard"


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


def _train_command(root: Path, out: Path, resume: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "papermill", "--log-level", "WARNING", str(REPO / "notebooks" / "train.ipynb"),
            str(out / "run.ipynb"), "-p", "epochs", str(epochs), "-p", "batch_size", "32", "-p", "data_root", str(root),
            "-p", "val_size", "64", "-p", "check_sha256", "False", "-p", "checkpoint_path", str(out / "dense.pt"),
            "-p", "metrics_path", str(out / "metrics.json"), "-p", "history_path", str(out / "history.csv"),
            "-p", "resume_path", str(resume)]


def _comparable(path: Path) -> dict:
    metrics = json.loads(path.read_text())
    return {k: v for k, v in metrics.items() if k not in ("wall_s", "provenance")}


def test_sigkill_after_first_checkpoint_then_rerun_finishes_identically(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_synthetic("mnist", root, n_train=2048, n_test=64, seed=3)
    epochs = 8
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    subprocess.run(_train_command(root, reference, reference / "resume.pt", epochs), check=True, cwd=REPO, timeout=600,
                   capture_output=True)

    resume = killed / "resume.pt"
    _kill_once_written(_train_command(root, killed, resume, epochs), resume)
    done = len(load_checkpoint(resume)["history"])
    assert not (killed / "metrics.json").exists() and 1 <= done < epochs, "the kill must land mid-training"

    rerun = subprocess.run(_train_command(root, killed, resume, epochs), cwd=REPO, timeout=600, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    notebook = (killed / "run.ipynb").read_text()
    assert f"resuming from {resume}: {done}/{epochs} epochs already done" in notebook
    assert _comparable(killed / "metrics.json") == _comparable(reference / "metrics.json")
    a, _ = training.load_model(reference / "dense.pt")
    b, _ = training.load_model(killed / "dense.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not resume.exists(), "a finished run removes its resume state"


def _prune_command(params: Path, dense: Path, out: Path, resume: Path) -> list[str]:
    return [sys.executable, "-m", "papermill", "--log-level", "WARNING", str(REPO / "notebooks" / "prune.ipynb"),
            str(out / "run.ipynb"), "-p", "params_file", str(params), "-p", "dense_checkpoint", str(dense),
            "-p", "out_dir", str(out / "models"), "-p", "metrics_path", str(out / "metrics.json"),
            "-p", "history_path", str(out / "admm.csv"), "-p", "resume_path", str(resume), "-p", "check_sha256", "False"]


def test_sigkilled_pruning_resumes_after_its_last_finished_step(tmp_path: Path) -> None:
    from tests.test_notebooks import _comparable as comparable_prune, _tiny_params

    root = tmp_path / "data"
    write_synthetic("mnist", root, n_train=1024, n_test=64, seed=4)
    params = _tiny_params(tmp_path, root)
    settings = yaml.safe_load(params.read_text())
    settings["prune"]["lenet5-mnist"]["irregular"].update(rates=[2, 4, 8], admm_epochs=2, retrain_epochs=1, stop_after_misses=3)
    params.write_text(yaml.safe_dump(settings))
    dense = tmp_path / "dense.pt"
    training.seed_everything(0)
    training.save_model(dense, models.build_model("lenet5"), "lenet5", "mnist")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    subprocess.run(_prune_command(params, dense, reference, reference / "resume.pt"), check=True, cwd=REPO, timeout=600,
                   capture_output=True)

    resume = killed / "resume.pt"
    _kill_once_written(_prune_command(params, dense, killed, resume), resume)
    done = len(load_checkpoint(resume)["steps"])
    assert not (killed / "metrics.json").exists() and 1 <= done < 3, "the kill must land between steps"
    shutil.rmtree(killed / "models")  # as DVC does with a stage's outputs before rerunning it

    rerun = subprocess.run(_prune_command(params, dense, killed, resume), cwd=REPO, timeout=600, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming from {resume}: {done}/3 steps already done" in (killed / "run.ipynb").read_text()
    assert comparable_prune(json.loads((killed / "metrics.json").read_text())) == \
        comparable_prune(json.loads((reference / "metrics.json").read_text()))
    assert sorted(p.name for p in (killed / "models").iterdir()) == sorted(p.name for p in (reference / "models").iterdir())
    assert not resume.exists()
