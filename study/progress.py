"""Progress a person can follow: one labelled line per epoch or step, in the terminal and in executed notebooks.

Long loops (training epochs, ADMM steps, masked mapping rounds) call :func:`line`; the caller sets what
is running with :func:`phase` (e.g. ``ADMM step 2 at 40x``), so the loops need not know their context.
Plain lines rather than a progress bar: `dvc repro` shows the stage's notebook output as a log (papermill
``log_output``), where a bar's carriage returns become hundreds of fragments.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator

from study.core import execution

_phases: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("phases", default=())
_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar("enabled", default=True)


@contextlib.contextmanager
def phase(label: str) -> Iterator[None]:
    """Label every line printed inside the block (nested labels are joined with ' / ')."""
    token = _phases.set((*_phases.get(), label))
    try:
        yield
    finally:
        _phases.reset(token)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No progress lines inside the block (e.g. the explorer's one-second previews)."""
    token = _enabled.set(False)
    try:
        yield
    finally:
        _enabled.reset(token)


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def line(message: str = "", **values: object) -> str:
    """Print ``[phase] message  key value  ...`` with short numbers; accuracies given as fractions print as %."""
    parts = [message] if message else []
    for key, value in values.items():
        if key.endswith("accuracy") and isinstance(value, float):
            parts.append(f"{key.replace('_accuracy', '')} {100 * value:.2f}%")
        else:
            parts.append(f"{key.replace('_', ' ')} {_number(value)}")
    label = " / ".join(_phases.get())
    text = (f"[{label}] " if label else "") + "  ".join(parts)
    if _enabled.get() and execution.current().is_main:  # rank 0 speaks for all ranks
        print(text, file=sys.stdout, flush=True)
    return text
