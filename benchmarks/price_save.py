"""Benchmark: ``study.price`` and ``study.save`` of torchvision's ResNet-50 (25.6M weights, random), 90% irregular.

    python benchmarks/price_save.py [--bits 8] [--rate 10] [--repeats 1]

The model is pruned to ``--rate`` by ``study.compress`` at 32 bits, then put on ``--bits`` levels with one scale per
layer (max |w| / (2^(b-1) - 1), survivors kept non-zero), so that pricing measures pricing, not snapping. Prints the
seconds, the weights priced per second against the 5M weights/s target (2 cores), and the peak memory numpy and
Python allocated meanwhile (tracemalloc; torch's own allocations are not counted).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch
from torchvision.models import resnet50

import study
from study.core import models

TARGET = 5e6  # weights per second on 2 cores
IMAGE = (3, 224, 224)


@torch.no_grad()
def on_levels(net: torch.nn.Module, bits: int) -> None:
    """Every layer's survivors on a b-bit grid with one scale, none of them 0."""
    top = (1 << (bits - 1)) - 1
    for layer in models.prunable_layers(net).values():
        w = layer.weight
        alpha = float(w.abs().max()) / top
        q = torch.round(w / alpha).clamp(-top, top)
        q = torch.where((w != 0) & (q == 0), torch.sign(w), q)
        w.copy_(q * alpha)


def measured(call) -> tuple[float, float, object]:
    tracemalloc.start()
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 2**20, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = study.compress(resnet50(weights=None).eval(), scheme="irregular", rate=args.rate, input_shape=IMAGE)
    on_levels(net, args.bits)
    weights = models.count_weights(net)
    print(f"ResNet-50: {weights:,} weights, {models.count_nonzero_weights(net):,} kept ({args.rate:g}x), {args.bits}-bit")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet50.stm"
        for _ in range(args.repeats):
            seconds, peak, table = measured(lambda: study.price(net, weight_bits=args.bits, input_shape=IMAGE))
            assert not table["quantized here"].any()
            print(f"price: {seconds:6.1f} s  {weights / seconds / 1e6:5.2f}M weights/s  ({weights / seconds / TARGET:.2f}x "
                  f"the {TARGET / 1e6:g}M target)  peak {peak:,.0f} MB  total {table['KB'].iloc[-1]:,.0f} KB")
            seconds, peak, header = measured(lambda: study.save(net, path, weight_bits=args.bits, input_shape=IMAGE))
            print(f"save:  {seconds:6.1f} s  {weights / seconds / 1e6:5.2f}M weights/s  peak {peak:,.0f} MB  "
                  f"file {path.stat().st_size:,} bytes ({header['stream_bytes']:,} of streams)")
            seconds, peak, _ = measured(lambda: study.load(path, into=resnet50(weights=None)))
            print(f"load:  {seconds:6.1f} s  {weights / seconds / 1e6:5.2f}M weights/s  peak {peak:,.0f} MB")


if __name__ == "__main__":
    main()
