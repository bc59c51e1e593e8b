"""Distributed training and ADMM (gloo on CPU, started by torchrun), the execution settings, and the launcher's
torchrun hand-off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study.core import execution
from study.core.data import Split
from study.core.execution import Execution, ExecutionError
from study.core.training import evaluate
from study.stages import launch

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "distributed" / "admm_worker.py"


def _torchrun(processes: int, out: Path) -> list[dict]:
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                           str(WORKER), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"state{rank}.pt", weights_only=True) for rank in range(processes)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("distributed")
    return {"two": _torchrun(2, root / "two"), "one": _torchrun(1, root / "one"), "root": root}


def test_admm_state_and_weights_are_identical_on_both_ranks(runs: dict) -> None:
    rank0, rank1 = runs["two"]
    assert rank0["world_size"] == rank1["world_size"] == 2
    for part in ("weights", "Z", "U", "masks"):
        for name, tensor in rank0[part].items():
            assert torch.equal(tensor, rank1[part][name]), f"{part}[{name}] differs between ranks"
    assert rank0["rho"] == rank1["rho"] and rank0["updates"] == rank1["updates"] == 5  # every 2nd of 10 steps
    assert [h["val_accuracy"] for h in rank0["history"]] == [h["val_accuracy"] for h in rank1["history"]]


def test_two_processes_match_one_process_with_the_same_global_batch(runs: dict) -> None:
    """Same global batches, the gradient averaged over ranks: equal to float rounding (sums in another order)."""
    (two, _), (one,) = runs["two"], runs["one"]
    assert one["world_size"] == 1
    for part in ("weights", "Z", "U"):
        for name, tensor in one[part].items():
            torch.testing.assert_close(two[part][name], tensor, rtol=1e-4, atol=1e-5, msg=f"{part}[{name}]")
    for name, mask in one["masks"].items():
        assert torch.equal(two["masks"][name], mask), f"the support of {name} differs"
    # every example counted once: the train loss of the epoch is the one-process loss
    assert two["history"][0]["train_loss"] == pytest.approx(one["history"][0]["train_loss"], rel=1e-4)


def test_only_rank_zero_writes(runs: dict) -> None:
    folder = runs["root"] / "two"
    assert (folder / "written-by-rank0.json").is_file()
    assert not (folder / "written-by-rank1.json").exists()


def test_a_shard_per_rank_covers_a_split_once() -> None:
    split = Split(torch.arange(10.0).reshape(10, 1, 1, 1), torch.arange(10))
    parts = [split.shard(rank, 3) for rank in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert torch.equal(torch.cat([p.labels for p in parts]), split.labels)
    with pytest.raises(ValueError, match="rank 3"):
        split.shard(3, 3)
    # training batches: every rank draws the same global batch and keeps its contiguous part
    whole = list(split.training_batches(7, torch.Generator().manual_seed(5)))
    for rank in (0, 1):
        parts = list(split.training_batches(7, torch.Generator().manual_seed(5), rank=rank, world_size=2))
        assert [size for _, _, size in parts] == [7, 3] == [size for _, _, size in whole]
        assert [y.tolist() for _, y, _ in parts] == [torch.tensor_split(y, 2)[rank].tolist() for _, y, _ in whole]


def test_one_cpu_process_changes_nothing() -> None:
    """The default execution: no wrapper, no autocast, numbers summed as they are."""
    run = Execution()
    model = torch.nn.Linear(2, 2)
    assert run.wrap(model) is model and not run.distributed and run.is_main
    assert run.sum_over_ranks([3, 0.5]) == [3, 0.5]
    split = Split(torch.randn(30, 2), torch.randint(0, 2, (30,)))
    with execution.using(run), torch.no_grad():
        result = evaluate(model, split, batch_size=7)
        logits = model(split.images)
    assert result["accuracy"] == int((logits.argmax(1) == split.labels).sum()) / 30
    assert result["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, split.labels)), rel=1e-6)


def test_devices_resolve_or_say_what_to_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert execution.resolve_device("auto") == torch.device("cpu")
    assert execution.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ExecutionError, match="runtime.device is 'cuda'"):
        execution.resolve_device("cuda")
    with pytest.raises(ExecutionError, match="valid"):
        execution.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert execution.resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(ExecutionError, match="as many processes per node as there are GPUs"):
        execution.resolve_device("cuda", local_rank=2)


def test_mixed_precision_is_ignored_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    with execution.using(Execution()):
        run = execution.configure("cpu", amp=True)
        assert not run.amp and run.device == torch.device("cpu")
        assert "CUDA only" in capsys.readouterr().out
    assert Execution(amp=False).autocast().__class__.__name__ == "nullcontext"


def test_the_launcher_hands_training_stages_to_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runtime"]["processes"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr(launch.paths, "from_root", lambda p: tmp_path / p)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert launch._needs_torchrun("prune", "params.yaml") == 4
    assert launch._needs_torchrun("storage", "params.yaml") == 0  # counting stages stay one process
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert launch._needs_torchrun("prune", "params.yaml") == 0  # already started by torchrun
    command = launch.torchrun_command("prune", "prune@lenet5-mnist-irregular", "params.yaml", 4)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert command[-4:] == ["--stage", "prune@lenet5-mnist-irregular", "--params", "params.yaml"]


def test_only_rank_zero_prints_the_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Under torchrun every rank runs the stage's notebook; the terminal shows one copy of its output, rank 0's."""
    import logging

    monkeypatch.setattr(launch, "declared", lambda _: ({"train@b": ("train", "b", {"baseline": "b"})}, 2))
    monkeypatch.setattr(launch.paths, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("PYTHONPATH", "")

    def notebook_that_prints(notebook: Path, executed: Path, parameters: dict, **options: object) -> None:
        logging.getLogger("papermill").info("the stage's summary")
        Path(executed).write_text("{}")

    monkeypatch.setattr(launch, "run_notebook", notebook_that_prints)
    for rank, shown in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        launch.execute("train", "train@b")
        assert ("the stage's summary" in capsys.readouterr().out) is shown, f"rank {rank}"
