"""Shared fixtures: tiny synthetic datasets written in the real raw IDX layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from study.data import write_synthetic

REPO = Path(__file__).resolve().parents[1]

# CI replays the same examples every run (a red CI must be reproducible); locally each run explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with tiny MNIST and Fashion-MNIST look-alikes (256 train / 64 test images each)."""
    root = tmp_path_factory.mktemp("data")
    write_synthetic("mnist", root, seed=1)
    write_synthetic("fashion_mnist", root, seed=2)
    return root


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """Say how many bad inputs the bad-input suite tried (tests/test_bad_inputs.py)."""
    from tests.test_bad_inputs import BAD_INPUTS_KEY, CASES

    passed = config.stash.get(BAD_INPUTS_KEY, [])
    if passed:
        terminalreporter.write_line(f"bad-input suite: {len(passed)} of {len(CASES)} bad inputs refused with their "
                                    "specific error, earlier outputs intact")
