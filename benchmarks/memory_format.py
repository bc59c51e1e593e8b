"""Benchmark: a training step of each study network in PyTorch's default (NCHW) and channels-last memory format.

    python benchmarks/memory_format.py [--batches 150] [--repeats 2] [--threads 2]

On this project's 2-core CPU a LeNet-5 step spends a fifth of its time in NCHW max pooling
(``aten::max_pool2d_with_indices``, ~2.3 ms of ~23 ms at batch 64, found with torch.profiler); oneDNN's
channels-last kernels avoid it. Prints the median milliseconds per step of each format and their ratio.
The study trains in channels-last (``study.core.training.channels_last``); this shows what that gains.
Random tensors of the data's shape: a step's speed does not depend on
the pixels. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from study.core import models

FORMATS = {"NCHW (default)": torch.contiguous_format, "channels-last": torch.channels_last}


def step_ms(model_name: str, memory_format: torch.memory_format, batches: int, batch_size: int = 64) -> float:
    """Milliseconds per SGD step of a fresh model in ``memory_format`` (after 10 warm-up steps)."""
    torch.manual_seed(0)
    net = models.build_model(model_name).to(memory_format=memory_format)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch_size, *models.INPUT_SHAPES[model_name]).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch_size,))
    net.train()
    for i in range(10 + batches):
        if i == 10:
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return 1000 * (time.perf_counter() - started) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the study's runtime.threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads}, batch 64, {args.batches} steps, median of {args.repeats}")
    for model_name in ("lenet5", "vgg6"):
        times = {name: [] for name in FORMATS}
        for _ in range(args.repeats):  # alternate the formats so that machine noise hits both alike
            for name, memory_format in FORMATS.items():
                times[name].append(step_ms(model_name, memory_format, args.batches))
        medians = {name: statistics.median(values) for name, values in times.items()}
        base, fast = medians["NCHW (default)"], medians["channels-last"]
        print(f"{model_name}: NCHW {base:.1f} ms/step, channels-last {fast:.1f} ms/step, speed-up {base / fast:.2f}x")


if __name__ == "__main__":
    main()
