"""Would a larger validation split pick the pruning step a large held-out set would pick more often?

Selection (``study.contract.select_step``) compares each step with the dense model on the same validation images
(the paired upper bound of its loss against the tolerance); a smaller split widens that bound. This measures that selection noise on the models the study already has:
every step checkpoint of every pruning schedule and the dense model are run on the 10,000 test images
(per image, as the evaluate stage does); the "right" step is the one the selection rule picks on all
10,000; then validation sets of n images are drawn from them (with replacement, 2,000 draws per size),
and the table says how often each size picks the right step.

It holds the models fixed: a larger validation split also leaves fewer training images, which this does
not measure (that needs a full rerun: ``dvc exp run -S data.val_size=10000``).

    python tools/selection_noise.py                # every compared baseline and scheme of params.yaml
    python tools/selection_noise.py --sizes 2000 5000 10000 --draws 2000
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from study import paths
from study.contract import paired_counts, select_step
from study.core import catalog, training
from study.core.params import load_params
from study.stages.common import load_splits, use_threads


def selection_agreement(dense: np.ndarray, steps: list[dict], correct: list[np.ndarray], tolerance_pp: float,
                        sizes: list[int], draws: int, seed: int = 0) -> dict[int, float]:
    """Per validation size: the fraction of draws whose selection equals the selection on every image."""
    def chosen(rows: np.ndarray) -> int:
        judged = [{"step": s["step"], "pruning_rate": s["pruning_rate"], "val_accuracy": float(c[rows].mean()),
                   **paired_counts(dense[rows], c[rows])} for s, c in zip(steps, correct)]
        return select_step(judged, tolerance_pp)["step"]

    everything = np.arange(len(dense))
    right = chosen(everything)
    rng = np.random.default_rng(seed)
    return {n: float(np.mean([chosen(rng.integers(0, len(dense), n)) == right for _ in range(draws)])) for n in sizes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args(argv)
    params = load_params(paths.from_root(args.params))
    use_threads(params)
    layout = paths.Layout.at(".")
    rows = []
    for baseline in params.compare.baselines:
        base = params.baselines[baseline]
        test = load_splits(params, base.dataset)["test"]
        dense_net, _ = training.load_model(layout.read(paths.dense_checkpoint(baseline)), base.model)
        dense = training.correct_predictions(dense_net, test)
        for scheme in params.compare.schemes:
            record = catalog.read_record(layout.read(paths.results("prune", paths.item(baseline, scheme))))
            steps = record["steps"]
            correct = [training.correct_predictions(training.load_model(layout.read(s["checkpoint"]), base.model)[0], test)
                       for s in steps]
            agreement = selection_agreement(dense, steps, correct, params.admm.tolerance_for(baseline), args.sizes, args.draws)
            rows.append({"baseline": baseline, "scheme": scheme, "steps": len(steps),
                         **{f"n={n}": round(a, 3) for n, a in agreement.items()}})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
