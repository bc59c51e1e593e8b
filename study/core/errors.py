"""The study's own error types, in a module without heavy imports: the stage launcher catches them
before torch is loaded."""

from __future__ import annotations


class ParamsError(ValueError):
    """params.yaml (or a stage's injected parameters) is invalid; the message lists every problem."""
