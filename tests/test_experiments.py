"""DVC experiments on a tiny copy of the pipeline: each runs where DVC puts it and trains with its own values.

`dvc exp run --temp` and queued experiments run in a temporary copy of the repository; a stage's notebook must
read that copy's params.yaml and write into it, leaving the workspace as it was. A plain `dvc exp run` runs in
the workspace. Each case trains LeNet-5 on tiny synthetic data for the overridden number of epochs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.core.data import write_synthetic
from tests.conftest import write_tiny_params
from tests.test_notebooks import _copy_project, _snapshot

TRAIN = "train@lenet5-mnist"
RECORD = "results/train/lenet5-mnist.json"


def _run(project: Path, env: dict[str, str], *args: str, timeout: int = 600) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _git(project: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, text=True).stdout


def _experiment_epochs(project: Path) -> list[int]:
    """The epochs each experiment's train record says it ran (read from the experiments' commits)."""
    refs = _git(project, "for-each-ref", "--format=%(objectname)", "refs/exps").split()
    return sorted(json.loads(_git(project, "show", f"{ref}:{RECORD}"))["epochs"] for ref in refs)


@pytest.fixture()
def tiny_project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "project"
    _copy_project(project)
    (project / "data.dvc").unlink()
    write_synthetic("mnist", project / "data", seed=1)
    write_tiny_params(project / "params.yaml", "data")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "add", "-f", "data")  # the temporary copies hold what git holds: the tiny data included
    _git(project, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny project")
    env = {**os.environ, "PYTHONPATH": str(project), "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    return project, env


def test_temporary_and_queued_experiments_train_with_their_values_in_their_own_copy(tiny_project) -> None:
    project, env = tiny_project
    before = _snapshot(project)
    _run(project, env, "exp", "run", "--temp", "-S", "baselines.lenet5-mnist.epochs=2", TRAIN)
    assert _snapshot(project) == before, "a --temp experiment wrote into the workspace"
    assert _experiment_epochs(project) == [2]

    for epochs in (3, 4):
        _run(project, env, "exp", "run", "--queue", "-S", f"baselines.lenet5-mnist.epochs={epochs}", TRAIN)
    started = time.perf_counter()
    _run(project, env, "queue", "start", "--jobs", "2")
    while time.perf_counter() - started < 600:
        status = _run(project, env, "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    print(f"queued 2-job sweep of two tiny experiments: {time.perf_counter() - started:.0f} s")
    assert "Failed" not in status, status
    _run(project, env, "queue", "stop", "--kill") if "Running" in status else None
    assert _snapshot(project) == before, "a queued experiment wrote into the workspace"
    assert _experiment_epochs(project) == [2, 3, 4]


def test_a_plain_experiment_runs_in_the_workspace_with_its_value(tiny_project) -> None:
    project, env = tiny_project
    _run(project, env, "exp", "run", "-S", "baselines.lenet5-mnist.epochs=2", TRAIN)
    record = json.loads((project / RECORD).read_text())
    assert record["epochs"] == 2
    history = (project / "metrics" / "train" / "lenet5-mnist.history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header and two epochs
