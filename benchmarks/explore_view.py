"""Benchmark: how long the explorer takes to redraw, on the study's published LeNet-5 models.

    python benchmarks/explore_view.py [--repeats 3] [--layer fc1]

The explorer promises a view within about a second on 2 cores for LeNet-5's largest layer (fc1, 400,000
weights): project a layer onto a scheme, quantize it, encode it bit-exactly, price its energy and measure the
one-shot validation accuracy (2,000 images). This times, on each published model that `make paper` commits
(dense fp32 and the picked irregular 8-bit model), one fresh view per scheme and width (the explorer caches a
view, so each timing is of a choice not yet seen) and the whole-model view of a stored model, and prints the
median seconds and their ratio to the one-second target. Needs the data (`make data`) and `models/published/`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from study.explore.layer import Choice
from study.explore.model_view import whole_model
from study.explore.session import Explorer, published_models

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 1.0


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rates per scheme and width (each a fresh view)")
    parser.add_argument("--layer", default="fc1")
    args = parser.parse_args()
    candidates = [c for c in published_models(REPO / "params.yaml", REPO) if "lenet5-mnist" in c.label]
    chosen = [c for c in candidates if c.label.endswith(", fp32") and "dense" in c.label]
    chosen += [c for c in candidates if "ADMM irregular" in c.label and c.label.endswith("8-bit (picked)")]
    if len(chosen) < 2:
        raise SystemExit("no published LeNet-5 models under models/published/lenet5-mnist: run `make paper` first")
    for candidate in chosen:
        opened = time.perf_counter()
        session = Explorer(candidate, val_images=2000)
        print(f"{candidate.label}: opened in {time.perf_counter() - opened:.2f} s")
        for scheme in ("irregular", "filter", "channel", "column"):
            for bits in (32, 8, 4):
                rates = [2.0 + 0.5 * k for k in range(args.repeats)] if scheme != "irregular" else [
                    10.0 + 5 * k for k in range(args.repeats)]
                seconds = [timed(lambda: session.view(Choice(args.layer, scheme, rate, bits))) for rate in rates]
                median = statistics.median(seconds)
                print(f"  {args.layer} {scheme:9s} {bits:2d}-bit  median {median:.3f} s  "
                      f"(x{median / TARGET_S:.2f} of the {TARGET_S:g} s target; {len(seconds)} views)")
        if session.stored is not None:
            scheme, bits = session.stored["scheme"], int(session.stored["weight_bits"])
            seconds = timed(lambda: whole_model(session.model, session.model_name, scheme, bits, session.params))
            print(f"  whole model ({scheme}, {bits}-bit): {seconds:.3f} s (x{seconds / TARGET_S:.2f})")


if __name__ == "__main__":
    main()
