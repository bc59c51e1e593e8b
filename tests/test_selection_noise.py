"""The selection-noise tool: agreement is 1 when steps are far apart, and grows with the validation size."""

from __future__ import annotations

import numpy as np

from tools.selection_noise import selection_agreement


def _hits(rng: np.random.Generator, accuracy: float, n: int = 10000) -> np.ndarray:
    return rng.random(n) < accuracy


def test_clear_cases_always_agree_and_close_ones_agree_more_with_more_images() -> None:
    rng = np.random.default_rng(0)
    dense = _hits(rng, 0.99)
    steps = [{"step": 1, "pruning_rate": 10.0}, {"step": 2, "pruning_rate": 20.0}, {"step": 3, "pruning_rate": 40.0}]
    far = [_hits(rng, 0.99), _hits(rng, 0.985), _hits(rng, 0.90)]  # step 2 is 0.5 points inside a 2-point tolerance
    assert selection_agreement(dense, steps, far, 2.0, [2000, 5000], draws=200) == {2000: 1.0, 5000: 1.0}
    close = [_hits(rng, 0.99), _hits(rng, 0.9885), _hits(rng, 0.95)]  # step 2 sits near the 0.2-point line
    agreement = selection_agreement(dense, steps, close, 0.2, [500, 10000], draws=400)
    assert 0 < agreement[500] < agreement[10000] < 1
