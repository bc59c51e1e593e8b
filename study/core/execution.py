"""Where a stage computes: the device, mixed precision, and the processes of a distributed run.

A property of the process, like torch's thread count: set once when a stage begins (:func:`configure`,
from ``runtime`` in params.yaml and the environment ``torchrun`` sets) and read by training, ADMM and the
writers. With one process on the CPU nothing changes: no tensor moves, no collective runs, so CPU
results are those of the code before devices existed.

Distributed runs follow PyTorch's DistributedDataParallel recipe: ``torchrun`` starts one process per
device and sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``; every process holds the whole
model, takes its share of each global batch, and gradients are averaged across processes (NCCL on GPUs,
gloo on CPUs). ADMM's Z and U are computed on rank 0 and broadcast (``broadcast_``), so every rank holds
the same state even where a projection could break ties differently; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

DEVICES = ("auto", "cpu", "cuda")


class ExecutionError(RuntimeError):
    """A requested device or distributed setting this machine cannot honour."""


@dataclass(frozen=True)
class Execution:
    """The device, precision and process group of this process."""

    device: torch.device = torch.device("cpu")
    amp: bool = False  # bfloat16 autocast of forward passes (CUDA only)
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes results, checkpoints and progress."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for a forward pass: bfloat16 needs no loss scaling (unlike float16)."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as training calls it: DistributedDataParallel across the processes, else itself."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def broadcast_(self, tensors: Sequence[torch.Tensor], src: int = 0) -> None:
        """Overwrite ``tensors`` in place with rank ``src``'s values on every rank."""
        if self.distributed:
            for tensor in tensors:
                dist.broadcast(tensor, src)

    def sum_over_ranks(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums of per-rank numbers (counts, loss sums), in float64."""
        if not self.distributed:
            return list(values)
        total = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()


_current = Execution()


def current() -> Execution:
    """The execution of this process (one CPU process until :func:`configure` says otherwise)."""
    return _current


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA when torch sees a GPU, else the CPU; each local process takes its own GPU."""
    if name not in DEVICES:
        raise ExecutionError(f"runtime.device={name!r}; valid: {list(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ExecutionError("runtime.device is 'cuda' but torch sees no GPU (torch.cuda.is_available() is False); "
                             "set runtime.device to 'auto' or 'cpu', or install a CUDA build of torch")
    if local_rank >= torch.cuda.device_count():
        raise ExecutionError(f"process {local_rank} on this node has no GPU of its own ({torch.cuda.device_count()} "
                             "visible): start at most as many processes per node as there are GPUs")
    return torch.device("cuda", local_rank)


def _environment_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; one process when it did not start us."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    except ValueError as exc:
        raise ExecutionError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers (torchrun sets them): {exc}") from exc


def configure(device: str = "auto", amp: bool = False) -> Execution:
    """Set this process's execution from ``runtime`` and torchrun's environment; join the process group.

    Mixed precision applies on CUDA only: on the CPU the flag is ignored (said once), so a profile that
    asks for it still runs, and CPU results stay float32's.
    """
    global _current
    rank, world_size, local_rank = _environment_ranks()
    where = resolve_device(device, local_rank)
    if amp and where.type != "cuda":
        print("runtime.amp: mixed precision applies on CUDA only; computing in float32 on the CPU", flush=True)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if where.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(minutes=30))
    _current = Execution(where, amp and where.type == "cuda", rank, world_size)
    return _current


@contextlib.contextmanager
def using(execution: Execution) -> Iterator[Execution]:
    """Run a block under another execution (tests, and ranks that join a group by hand)."""
    global _current
    previous, _current = _current, execution
    try:
        yield execution
    finally:
        _current = previous


def barrier() -> None:
    """Wait for every rank (nothing to wait for with one process)."""
    if _current.distributed:
        dist.barrier()


def place(model: nn.Module) -> nn.Module:
    """Move a model to this process's device (in place; nothing moves on the CPU)."""
    return model.to(_current.device)


def model_device(model: nn.Module) -> torch.device:
    """Where a model's parameters live: batches go there."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")
