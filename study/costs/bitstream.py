"""Fixed-width bit fields packed into bytes, and read back: the wire format of every encoder.

Written by hand because the storage study needs the exact bit length of every field: numpy's
``packbits`` handles single bits only, and general serializers (pickle, npz) add their own
overhead. Each field section is a vector of unsigned integers of one width, packed most significant
bit first; sections are concatenated without padding, so a stream's length is the sum of its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_WIDTH = 64
_CHUNK = 1 << 20  # values per chunk when expanding to bits: bounds the temporary memory at ~64 MB


def _check_width(width: int) -> int:
    if not isinstance(width, (int, np.integer)) or not 0 <= width <= MAX_WIDTH:
        raise ValueError(f"bit width {width!r} must be an integer in 0..{MAX_WIDTH}")
    return int(width)


def to_bits(values: np.ndarray, width: int) -> np.ndarray:
    """The bits (uint8 0/1, MSB first) of each value in ``width`` bits; values must fit."""
    width = _check_width(width)
    values = np.ascontiguousarray(values, dtype=np.uint64).ravel()
    if width == 0 or values.size == 0:
        if width == 0 and values.size and values.max() != 0:
            raise ValueError("a 0-bit field can only hold 0")
        return np.zeros(0, dtype=np.uint8)
    if width < 64 and values.size and int(values.max()) >> width:
        raise ValueError(f"value {int(values.max())} does not fit in {width} bits")
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    out = np.empty(values.size * width, dtype=np.uint8)
    for start in range(0, values.size, _CHUNK):
        chunk = values[start:start + _CHUNK]
        out[start * width:(start + chunk.size) * width] = ((chunk[:, None] >> shifts) & np.uint64(1)).ravel()
    return out


def from_bits(bits: np.ndarray, width: int) -> np.ndarray:
    """Inverse of :func:`to_bits`: ``bits`` (a multiple of ``width`` long) back to uint64 values."""
    width = _check_width(width)
    if width == 0:
        raise ValueError("cannot infer a count from 0-bit fields; read them with count=... instead")
    if bits.size % width:
        raise ValueError(f"{bits.size} bits do not split into {width}-bit fields")
    if width == 1:
        return bits.astype(np.uint64)
    count = bits.size // width
    n_bytes = -(-width // 8)
    out = np.zeros(count, dtype=np.uint64)
    for start in range(0, count, _CHUNK):
        stop = min(count, start + _CHUNK)
        block = bits[start * width:stop * width].reshape(-1, width)
        if width % 8:  # left-pad each field to whole bytes so that packbits can assemble it
            padded = np.zeros((stop - start, 8 * n_bytes), dtype=np.uint8)
            padded[:, 8 * n_bytes - width:] = block
            block = padded
        packed = np.packbits(block, axis=1)
        for byte in range(n_bytes):
            out[start:stop] |= packed[:, byte].astype(np.uint64) << np.uint64(8 * (n_bytes - 1 - byte))
    return out


@dataclass
class BitWriter:
    """Collects named sections of fixed-width fields; ``breakdown`` counts the bits per category."""

    parts: list[np.ndarray] = field(default_factory=list)
    breakdown: dict[str, int] = field(default_factory=dict)

    def write(self, category: str, values: np.ndarray | list[int] | int, width: int) -> None:
        bits = to_bits(np.atleast_1d(np.asarray(values, dtype=np.uint64)), width)
        self.parts.append(bits)
        self.breakdown[category] = self.breakdown.get(category, 0) + int(bits.size)

    @property
    def n_bits(self) -> int:
        return sum(int(p.size) for p in self.parts)

    def getvalue(self) -> bytes:
        if not self.parts:
            return b""
        return np.packbits(np.concatenate(self.parts)).tobytes()


class BitReader:
    """Reads fixed-width fields back from ``data``, which holds ``n_bits`` meaningful bits."""

    def __init__(self, data: bytes, n_bits: int) -> None:
        if not 0 <= n_bits <= 8 * len(data) or 8 * len(data) - n_bits >= 8:
            raise ValueError(f"{len(data)} bytes cannot hold a stream of {n_bits} bits")
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:n_bits]
        self.position = 0

    def read(self, count: int, width: int) -> np.ndarray:
        width = _check_width(width)
        if width == 0:
            return np.zeros(count, dtype=np.uint64)
        stop = self.position + count * width
        if stop > self.bits.size:
            raise ValueError(f"stream ends after {self.bits.size} bits; a read needs {stop}: truncated or corrupt")
        values = from_bits(self.bits[self.position:stop], width)
        self.position = stop
        return values

    def read_int(self, width: int) -> int:
        return int(self.read(1, width)[0])

    def finish(self) -> None:
        """Every bit must have been read: a decoder that skips bits would hide uncounted overhead."""
        if self.position != self.bits.size:
            raise ValueError(f"{self.bits.size - self.position} bits left unread: the stream does not match its format")
