"""Benchmark: cost of an ADMM training epoch relative to a plain one (LeNet-5, MNIST-sized data).

    python benchmarks/admm_epoch.py [--data-root data] [--repeats 3]

Prints the median seconds of each and their ratio (target <= 1.15). Plain and ADMM epochs alternate
so that machine noise hits both alike; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from study.compression import pruning
from study.core import data, models, training
from study.compression.admm import ADMM, ADMMConfig
from study.core.training import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    splits = data.load_dataset("mnist", args.data_root)
    config = TrainConfig(epochs=1, lr=0.01, lr_schedule="constant")
    training.seed_everything(0)
    net = models.build_model("lenet5")
    keep = pruning.split_rate(net, 100.0, {"conv1": 60, "conv2": 12, "fc1": 1, "fc2": 12})
    steps_per_epoch = -(-len(splits["train"]) // config.batch_size)
    admm = ADMM(net, pruning.projections_for(net, "irregular", keep), ADMMConfig(), steps_per_epoch)

    def timed(**kwargs) -> float:
        started = time.perf_counter()
        training.fit(net, splits["train"], splits["val"], config, progress=False, **kwargs)
        return time.perf_counter() - started

    plain, with_admm = [], []
    for _ in range(args.repeats):
        plain.append(timed())
        with_admm.append(timed(step_hooks=[admm.step_hook], loss_terms=[admm.penalty]))
    p, a = statistics.median(plain), statistics.median(with_admm)
    print(f"threads: {torch.get_num_threads()}, repeats: {args.repeats}")
    print(f"plain epoch: median {p:.2f} s  (all: {', '.join(f'{x:.2f}' for x in plain)})")
    print(f"ADMM epoch:  median {a:.2f} s  (all: {', '.join(f'{x:.2f}' for x in with_admm)})")
    print(f"ratio ADMM / plain: {a / p:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
