"""One rank of a tiny ADMM run, started by tests/test_distributed.py under torchrun (1 or 2 processes).

ADMM (2 epochs, 4 Z/U updates) on a seeded two-layer model, hard projection, one epoch of masked
retraining; then each rank saves its weights, Z, U and masks to ``<out>/state<rank>.pt`` (directly with
torch.save, past the rank-0-only writers) and asks the study's writer for ``<out>/written-by-rank<rank>.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from study.compression.admm import ADMMConfig, MaskedRetraining, admm_phase
from study.compression.pruning import projections_for
from study.core import artifacts, execution
from study.core.data import Split
from study.core.training import TrainConfig, fit


def tiny_data(n: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=generator)
    prototypes = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(99))
    images = prototypes[labels] + 0.5 * torch.randn(n, 1, 8, 8, generator=generator)
    return Split(images, labels)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    run = execution.configure("cpu")
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 4, 3))
    model.add_module("relu", nn.ReLU())
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc1", nn.Linear(4 * 6 * 6, 3))
    train, val = tiny_data(70, 1), tiny_data(21, 2)  # 70 = 4 batches of 16 and one of 6: an uneven last batch
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, weight_decay=1e-4, lr_schedule="constant", seed=3, augment="hflip")
    projections = projections_for(model, "irregular", {"conv1": 0.5, "fc1": 0.25})
    admm = admm_phase(model, train, val, projections, ADMMConfig(rho=0.05, rho_growth=1.5, rho_max=1.0, updates_per_epoch=2),
                      config, progress=False)
    masks = admm.hard_project(model)
    retrain = MaskedRetraining(model, masks)
    history = fit(model, train, val, TrainConfig(epochs=1, batch_size=16, lr=0.05, lr_schedule="constant", seed=4),
                  step_hooks=[retrain.step_hook], progress=False)
    state = {"weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
             "Z": admm.Z, "U": admm.U, "masks": masks, "rho": admm.rho, "updates": len(admm.history),
             "history": history, "world_size": run.world_size}
    torch.save(state, out / f"state{run.rank}.pt")
    artifacts.write_json(out / f"written-by-rank{run.rank}.json", {"rank": run.rank})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
