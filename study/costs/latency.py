"""Measured CPU inference latency: dense, compacted structured, and irregular models run as CSR matmuls.

Timing uses ``torch.utils.benchmark.Timer`` (warm-up, blocked repeats, median and interquartile range).
The irregular model replaces every conv and FC layer by its CSR form: FC layers as ``torch.sparse``
CSR x dense matmuls, conv layers as im2col (``F.unfold``) followed by the CSR GEMM, so its outputs equal
the dense masked model's up to float rounding (checked by :func:`check_same_outputs`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import benchmark



def to_csr(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix.to_sparse_csr()`` without torch's beta notice (raised on every creation; all used here works)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return matrix.to_sparse_csr()


class CSRLinear(nn.Module):
    """``nn.Linear`` with its weight held as a CSR matrix: y = (W_csr @ x^T)^T + b."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.weight = to_csr(layer.weight.detach())
        self.bias = None if layer.bias is None else layer.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (self.weight @ x.t()).t()
        return out if self.bias is None else out + self.bias


class CSRConv2d(nn.Module):
    """``nn.Conv2d`` as im2col + CSR GEMM: the weight is the [out, in*kh*kw] matrix the pruning schemes see."""

    def __init__(self, layer: nn.Conv2d) -> None:
        super().__init__()
        if layer.groups != 1:
            raise ValueError("grouped convolutions are not supported by the CSR conversion")
        self.out_channels = layer.out_channels
        self.kernel_size, self.stride = layer.kernel_size, layer.stride
        self.padding, self.dilation = layer.padding, layer.dilation
        self.weight = to_csr(layer.weight.detach().reshape(layer.out_channels, -1))
        self.bias = None if layer.bias is None else layer.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # [B, in*k*k, L]
        out_h = (height + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        out_w = (width + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        gemm = self.weight @ cols.transpose(0, 1).reshape(cols.shape[1], -1)  # [out, B*L]
        out = gemm.reshape(self.out_channels, batch, out_h, out_w).transpose(0, 1)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


def to_csr_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every Conv2d and Linear layer replaced by its CSR form."""
    converted = copy.deepcopy(model).eval()
    for name, module in list(converted.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d):
                setattr(module, child_name, CSRConv2d(child))
            elif isinstance(child, nn.Linear):
                setattr(module, child_name, CSRLinear(child))
    return converted


@torch.no_grad()
def check_same_outputs(reference: nn.Module, candidate: nn.Module, input_shape: tuple[int, ...], batch: int = 8,
                       seed: int = 0, atol: float = 1e-4) -> float:
    """Largest absolute output difference on random inputs; raises if above ``atol``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_shape, generator=generator)
    difference = (reference.eval()(x) - candidate.eval()(x)).abs().max().item()
    if difference > atol:
        raise AssertionError(f"outputs differ by {difference:.3g} (> {atol}): the CSR model is not the masked model")
    return difference


def time_call(function: Callable[[], object], min_run_time: float = 0.5, threads: int = 1) -> dict[str, float]:
    """Median and spread (IQR, min) of ``function`` in seconds, after torch.utils.benchmark's warm-up."""
    timer = benchmark.Timer(stmt="function()", globals={"function": function}, num_threads=threads)
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return {"median_s": measurement.median, "iqr_s": measurement.iqr, "min_s": min(measurement.times),
            "repeats": len(measurement.times)}


@torch.no_grad()
def model_latency(model: nn.Module, input_shape: tuple[int, ...], batch: int, min_run_time: float = 0.5,
                  threads: int = 1) -> dict[str, float]:
    """Inference latency of ``model`` on a batch of zeros-free random inputs (eval mode, no autograd)."""
    model = model.eval()
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    return time_call(lambda: model(x), min_run_time, threads)


def sparsity_sweep(shapes: Sequence[tuple[str, int, int, int]], sparsities: Sequence[float], min_run_time: float = 0.2,
                   threads: int = 1, seed: int = 0) -> pd.DataFrame:
    """GEMM latency per synthetic layer (name, rows, cols, input columns) and sparsity: CSR, dense, structured.

    *Dense*: the full matrix (zeros included). *CSR*: the same matrix with a random irregular mask.
    *Structured*: a dense matrix with only the kept fraction of rows, the compacted equivalent.
    """
    generator = torch.Generator().manual_seed(seed)
    rows_out = []
    for name, rows, cols, inputs in shapes:
        x = torch.randn(cols, inputs, generator=generator)
        weight = torch.randn(rows, cols, generator=generator)
        dense = time_call(lambda: weight @ x, min_run_time, threads)
        for sparsity in sparsities:
            mask = torch.rand(rows, cols, generator=generator) >= sparsity
            csr = to_csr(weight * mask)
            kept_rows = max(1, round(rows * (1 - sparsity)))
            compact = weight[:kept_rows].contiguous()
            timings = {"dense": dense, "csr": time_call(lambda: csr @ x, min_run_time, threads),
                       "structured": time_call(lambda: compact @ x, min_run_time, threads)}
            for kind, t in timings.items():
                rows_out.append({"layer": name, "rows": rows, "cols": cols, "inputs": inputs, "sparsity": sparsity,
                                 "kind": kind, **t})
    return pd.DataFrame(rows_out)


def crossover(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per layer: the lowest swept sparsity from which CSR stays faster than dense (NaN if never)."""
    out = []
    for layer, group in sweep.groupby("layer", sort=False):
        wide = group.pivot_table(index="sparsity", columns="kind", values="median_s").sort_index()
        faster = wide["csr"] < wide["dense"]
        # the first sparsity after which every denser-pruned point is also faster
        from_here = [s for s in wide.index if faster.loc[s:].all()]
        out.append({"layer": layer, "crossover_sparsity": from_here[0] if from_here else float("nan"),
                    "csr_speedup_at_max_sparsity": float(wide["dense"].iloc[-1] / wide["csr"].iloc[-1])})
    return pd.DataFrame(out)


# Sparse tensor cores run 2:4 (at twice the dense math rate) through torch's semi-structured sparse tensors, on CUDA
# only (torch.sparse.to_sparse_semi_structured: NVIDIA GPUs of compute capability 8.0 or newer, fp16/bf16/int8).
NM_CPU_NOTE = ("not measured: the CPU has no N:M kernel (torch.sparse.to_sparse_semi_structured runs 2:4 on CUDA only; "
               "the paper-scale profile measures it on a GPU)")


def semi_structured_gemm(rows: int, cols: int, inputs: int, min_run_time: float = 0.5, seed: int = 0) -> dict[str, float]:
    """A 2:4-pruned ``rows`` x ``cols`` half-precision GEMM against the same matrix dense, on the GPU: median seconds
    of each and their ratio. Raises where there is no CUDA device (the CPU has no N:M kernel: ``NM_CPU_NOTE``)."""
    if not torch.cuda.is_available():
        raise RuntimeError(NM_CPU_NOTE)
    from torch.sparse import to_sparse_semi_structured

    from study.compression import nm  # the study's own 2:4 projection: groups along the reduction, as the kernel reads

    generator = torch.Generator().manual_seed(seed)
    weight = nm.project(torch.randn(rows, cols, generator=generator), "2:4")[0].half().cuda()
    x = torch.randn(cols, inputs, generator=generator).half().cuda()
    sparse = to_sparse_semi_structured(weight)
    if not torch.allclose(sparse @ x, weight @ x, rtol=1e-2, atol=1e-2):
        raise AssertionError("the 2:4 kernel's product differs from the dense one")

    def timed(function: Callable[[], object]) -> float:
        def synchronized() -> None:
            function()
            torch.cuda.synchronize()
        return time_call(synchronized, min_run_time)["median_s"]

    dense_s, sparse_s = timed(lambda: weight @ x), timed(lambda: sparse @ x)
    return {"rows": rows, "cols": cols, "inputs": inputs, "dense_s": dense_s, "semi_structured_s": sparse_s,
            "speedup": dense_s / sparse_s}
