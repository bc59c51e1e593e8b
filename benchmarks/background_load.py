"""Benchmark: how much one busy neighbour slows training, per thread setting.

    python benchmarks/background_load.py [--model lenet5] [--batches 150] [--repeats 3] [--only PASSIVE ...]

A user's `make paper` rarely runs on an idle machine: a browser or an IDE keeps a core busy. PyTorch's
intra-op pool uses every core by default, and when one of them is taken each parallel region waits for
the slowest thread. For each setting below this times the same training batches alone and beside one
busy process at normal priority (a pure-Python loop), best of ``--repeats``, and prints the slowdown
(target <= 1.5x) and the time against the default setting alone.

Each setting runs in its own interpreter, because OMP_WAIT_POLICY must be set before torch starts.
The batches use random tensors of MNIST's shape: the speed of an epoch does not depend on the pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CORES = os.cpu_count() or 1
SETTINGS = {  # name: (threads, extra environment); on 2 cores "one core left free" is the 1-thread row
    f"all {CORES} cores (torch default)": (CORES, {}),
    f"all {CORES} cores, OMP_WAIT_POLICY=PASSIVE": (CORES, {"OMP_WAIT_POLICY": "PASSIVE"}),
    **({f"{CORES - 1} threads (one core left free)": (CORES - 1, {})} if CORES > 2 else {}),
    f"all {CORES} cores, GOMP_SPINCOUNT=10000": (CORES, {"GOMP_SPINCOUNT": "10000"}),
    f"all {CORES} cores, GOMP_SPINCOUNT=1000": (CORES, {"GOMP_SPINCOUNT": "1000"}),
    "1 thread": (1, {}),
    "1 thread, OMP_WAIT_POLICY=PASSIVE": (1, {"OMP_WAIT_POLICY": "PASSIVE"}),
}

WORKER = r"""
import sys, time, torch
from torch.nn import functional as F
from study.core import models
threads, batches, repeats = (int(a) for a in sys.argv[1:4])
model = sys.argv[4]
torch.set_num_threads(threads)
torch.manual_seed(0)
net = models.build_model(model)
optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(batches, 64, 1, 28, 28), torch.randint(0, 10, (batches, 64))
best = float("inf")
for _ in range(repeats + 1):  # the first pass warms up the allocator and the thread pool
    started = time.perf_counter()
    for i in range(batches):
        optimizer.zero_grad()
        F.cross_entropy(net(x[i]), y[i]).backward()
        optimizer.step()
    best = min(best, time.perf_counter() - started)
print(best)
"""


def timed(threads: int, env: dict[str, str], batches: int, repeats: int, model: str) -> float:
    result = subprocess.run([sys.executable, "-c", WORKER, str(threads), str(batches), str(repeats), model],
                            env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=150, help="training batches of 64 per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings per condition; the best counts")
    parser.add_argument("--model", default="lenet5", help="a registered model (study.core.models)")
    parser.add_argument("--only", nargs="*", help="run only the settings whose name contains one of these words")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    rows = []
    for name, (threads, env) in SETTINGS.items():
        if args.only and name != next(iter(SETTINGS)) and not any(word in name for word in args.only):
            continue  # the first (default) setting always runs: it is the reference
        alone = timed(threads, env, args.batches, args.repeats, args.model)
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one busy core, normal priority
        try:
            time.sleep(0.5)
            busy = timed(threads, env, args.batches, args.repeats, args.model)
        finally:
            neighbour.kill()
            neighbour.wait()
        rows.append({"setting": name, "alone_s": alone, "busy_s": busy, "slowdown": busy / alone})
    reference = rows[0]["alone_s"]
    print(f"{args.batches} {args.model} training batches of 64, best of {args.repeats}, {CORES} cores")
    print(f"{'setting':46} {'alone (s)':>10} {'busy (s)':>10} {'slowdown':>9} {'busy / default alone':>21}")
    for row in rows:
        print(f"{row['setting']:46} {row['alone_s']:10.2f} {row['busy_s']:10.2f} {row['slowdown']:8.2f}x "
              f"{row['busy_s'] / reference:20.2f}x")
    print("target: slowdown <= 1.5x beside one busy process")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)


if __name__ == "__main__":
    main()
