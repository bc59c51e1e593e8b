"""Benchmark: encode + decode throughput of the sparse formats on a ResNet-50-sized set of layers.

    python benchmarks/encoding_throughput.py [--sparsity 0.9 0.99] [--format rel_csc] [--weight-bits 8]

The layer shapes are ResNet-50's (25.5M conv + FC weights, built by torchvision without weights);
the weights are random, quantized to ``--weight-bits`` levels, with a random mask of each sparsity.
Prints weights per second (goal >= 50M/s) and the ratio against converting the same GEMM matrices
to ``scipy.sparse.csr_matrix`` and back (a conversion that writes no bit stream at all).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse
from torchvision.models import resnet50

from study.costs import encoding


def layer_shapes() -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in resnet50(weights=None).parameters() if p.dim() in (2, 4)]


def make_layers(shapes: list[tuple[int, ...]], sparsity: float, weight_bits: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    levels = max(1, (1 << (weight_bits - 1)) - 1) if weight_bits < 32 else None
    layers = []
    for shape in shapes:
        if levels is None:
            values = rng.standard_normal(shape, dtype=np.float32)
        else:
            values = rng.integers(-levels, levels + 1, shape).astype(np.float32) * np.float32(0.01)
        layers.append(values * (rng.random(shape, dtype=np.float32) >= sparsity))
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.99])
    parser.add_argument("--format", default="rel_csc", choices=encoding.SPARSE_FORMATS)
    parser.add_argument("--weight-bits", type=int, default=8)
    parser.add_argument("--index-bits", type=int, default=4)
    args = parser.parse_args()
    shapes = layer_shapes()
    total = sum(int(np.prod(s)) for s in shapes)
    print(f"{len(shapes)} layers, {total / 1e6:.1f}M weights, format {args.format}, "
          f"b_w={args.weight_bits}, b_idx={args.index_bits}")
    for sparsity in args.sparsity:
        layers = make_layers(shapes, sparsity, args.weight_bits)
        started = time.perf_counter()
        streams = [encoding.encode(w, args.format, args.weight_bits, args.index_bits) for w in layers]
        encoded_s = time.perf_counter() - started
        started = time.perf_counter()
        decoded = [encoding.decode(s.data, s.n_bits) for s in streams]
        decoded_s = time.perf_counter() - started
        assert all(np.array_equal(a, b) for a, b in zip(decoded, layers)), "round trip failed"
        started = time.perf_counter()
        for w in layers:
            scipy.sparse.csr_matrix(w.reshape(w.shape[0], -1)).toarray()
        scipy_s = time.perf_counter() - started
        ours = encoded_s + decoded_s
        bits = sum(s.n_bits for s in streams)
        print(f"sparsity {sparsity:.2%}: encode {encoded_s:.2f} s + decode {decoded_s:.2f} s = "
              f"{total / ours / 1e6:.1f}M weights/s (goal >= 50M/s); scipy csr round trip {scipy_s:.2f} s "
              f"({total / scipy_s / 1e6:.1f}M/s); ours / scipy time = {ours / scipy_s:.2f}; "
              f"stream {bits / 8 / 2**20:.2f} MiB vs fp32 dense {total * 4 / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
