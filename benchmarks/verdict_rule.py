"""Benchmark: how often the verdict rule decides when it should not, and how often when it should.

    python benchmarks/verdict_rule.py [--studies 200] [--resamples 1000] [--seed 0]

Simulated comparisons at the study's sizes (``study.report.gap.simulate_decisions``): 10,000 test images, the
reference's accuracy, the share of images on which a pruned model and the reference differ near the line, the pools
(2 irregular schedules: ADMM and magnitude; 4 structured: ADMM filter, channel, column and L1 filter), 6 steps a
schedule 1.45x apart whose loss rises as a knee (about two tolerances per e-fold rate near the line, as the study's
schedules do), the measured training-seed sd of a schedule's loss with 2 degrees of freedom, and one claim's 4 widths
as a Holm family. Each network's row is measured on its own test split (results/frontier, results/seeds). Printed:
per network and true ratio structured / irregular at the line, the share of simulated studies in which the claim is
decided (any width) for each side, with a 95% Wilson interval. With equal sides (ratio 1) a decision either way is
an error: the rule promises at most 5%. With structured 1.5x dearer, "does not hold" is the right call (power).
The stage uses 20,000 replicates; 1,000 here keep the run near twenty-five minutes on 2 cores (the replicate count
moves a probability near its cut by its Monte Carlo error, not the rate of decisions by more than that).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.report import gap  # noqa: E402
from study.report.frontier import DOES_NOT_HOLD, HOLDS  # noqa: E402

# Measured on the test split (see the docstring): reference accuracy, disagreement near the line, tolerance, seed sd.
NETWORKS = {
    "lenet5-mnist": gap.SyntheticStudy(accuracy=0.991, disagreement=0.0055, tolerance=0.002, seed_sd=0.00005),
    "vgg6-fashion_mnist": gap.SyntheticStudy(accuracy=0.920, disagreement=0.037, tolerance=0.005, seed_sd=0.0018),
}


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (Wilson 1927): sound at 0 or few hits, unlike the normal one."""
    p = hits / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'network':20s} {'ratio':>5s} {'holds':>22s} {'does not hold':>22s}  seconds", flush=True)
    for network, study in NETWORKS.items():
        for ratio in (1.0, 1.5):
            start = time.perf_counter()
            verdicts = gap.simulate_decisions(study, ratio, args.studies, args.resamples, 0.95, args.seed)
            cells = []
            for side in (HOLDS, DOES_NOT_HOLD):
                hits = int((verdicts == side).any(axis=1).sum())
                low, high = wilson(hits, args.studies)
                cells.append(f"{hits / args.studies:6.1%} [{low:5.1%}, {high:5.1%}]")
            print(f"{network:20s} {ratio:5.2f} {cells[0]:>22s} {cells[1]:>22s}  {time.perf_counter() - start:.0f}", flush=True)


if __name__ == "__main__":
    main()
