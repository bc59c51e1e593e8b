"""Bit-exact storage formats for one layer's weights: dense, structured, relative-index CSC/CSR, CSR, bitmap.

Every encoder writes a real, self-describing bit stream (``decode`` needs nothing else) and counts its
bits by category: ``header``, ``pointers``, ``indices``, ``fillers``, ``codebook``, ``values``. The
structure of each format (which fields, how wide, how many) comes from one function per format, used
both to pack the stream and to count it without packing, so counts and streams cannot drift apart.

Weights are viewed as the GEMM matrix ``[out, in * kh * kw]`` (the view the pruning schemes use).
Values take ``weight_bits`` bits: 32 stores raw float32. Fewer bits store codes in one of two forms,
chosen per layer: a *uniformly* quantized layer (every value exactly float32(alpha) * q for integer levels
q of the b-bit grid, as ``study.compression.constraints`` makes them) stores one float32 scale and the
level of each value, as hardware does (a layer with no stored 0 uses all 2^b codes for non-zero levels,
+-1..+-2^(b-1), as a pruned model's survivors are quantized); any other layer stores a codebook of float32
entries (the distinct stored values, at most ``2**weight_bits``) and a code per value. Header bits say which.

Relative-index formats (EIE / Deep Compression): each non-zero stores the zero-run before it in
``index_bits`` bits. The all-ones run code ``M = 2**index_bits - 1`` is a filler: "M zeros, no value".
A run of ``r >= M`` zeros therefore needs ``r // M`` fillers. EIE instead spends a zero *value* on
each filler (b_idx + b_w bits); our filler costs only b_idx bits and needs no code for zero, which
favours irregular storage: the comparison gives irregular pruning its strongest case.

N:M formats (``study.compression.nm``, ``study.contract.nm_pattern``: groups of M consecutive weights of each row in hardware order, at most N
non-zeros each; ``scheme`` names the pattern, e.g. ``"2:4"``) store exactly N values per group, as sparse tensor
cores do (a group with fewer non-zeros stores zeros in its free slots), and where they sit: ``nm_hw`` as the
hardware does, ceil(log2 M) bits per kept value (2:4: 4 bits a group); ``nm_min`` as the rank of the group's kept
set among the C(M, N) possible ones (colexicographic order), ceil(log2 C(M, N)) bits a group (2:4: 3 bits; the bound
is log2 6 = 2.585).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from study.contract import NM_CONV_ORDER, SPARSE_FORMATS, STORABLE_BITS, STRUCTURED_SCHEMES, max_level, nm_pattern
from study.costs.bitstream import BitReader, BitWriter

FORMATS = ("dense", "structured", "rel_csc", "rel_csr", "csr", "bitmap")  # each stores any layer
RELATIVE_FORMATS = ("rel_csc", "rel_csr")
NM_FORMATS = ("nm_hw", "nm_min")  # N:M sparsity: the hardware's layout, and the fewest bits per group
CODED_FORMATS = (*FORMATS, *NM_FORMATS)  # a stream header's format code is the position here
WEIGHT_BITS = STORABLE_BITS
INDEX_BITS = range(1, 17)
CATEGORIES = ("header", "pointers", "indices", "fillers", "codebook", "scale", "values")
_DIM_BITS = 32
_SMALL_BITS = 8
_UNIFORM_FLAG = 0x80  # set in the header's weight-bits field when the values are scale + levels
_ZERO_FREE_FLAG = 0x40  # ... and their levels are the grid without 0 (``study.contract.max_level``)

Section = tuple[str, np.ndarray, int]  # (category, unsigned field values, bits per field)


class EncodingError(ValueError):
    """Input a format cannot store; the message says which value and how to fix it."""


@dataclass(frozen=True)
class Encoded:
    """A packed stream with its exact length in bits and where the bits went."""

    format: str
    data: bytes
    n_bits: int
    breakdown: dict[str, int]
    shape: tuple[int, ...]
    nnz: int


# ----------------------------------------------------------------------------- validation and views
def as_matrix(weight: object) -> tuple[np.ndarray, tuple[int, ...]]:
    """float32 GEMM view ``[out, rest]`` of a 2-D (FC) or 4-D (conv) weight; -0.0 becomes +0.0."""
    array = np.asarray(weight.detach().cpu() if hasattr(weight, "detach") else weight)
    if array.ndim not in (2, 4):
        raise EncodingError(f"weight of shape {tuple(array.shape)} is {array.ndim}-D; encoders take 2-D (FC) or 4-D (conv) weights")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise EncodingError(f"weight of shape {tuple(array.shape)} holds NaN or inf values; fix the model before encoding")
    return array.reshape(array.shape[0], -1) + np.float32(0.0), tuple(int(d) for d in array.shape)


def check_weight_bits(weight_bits: int) -> int:
    if weight_bits not in WEIGHT_BITS:
        raise EncodingError(f"weight_bits={weight_bits!r}; allowed: {list(WEIGHT_BITS)}")
    return int(weight_bits)


def check_index_bits(index_bits: int) -> int:
    if not isinstance(index_bits, (int, np.integer)) or index_bits not in INDEX_BITS:
        raise EncodingError(f"index_bits={index_bits!r}; allowed: {INDEX_BITS.start}..{INDEX_BITS.stop - 1}")
    return int(index_bits)


def width_for(count: int) -> int:
    """Bits for a counter that must hold 0..count."""
    return max(1, int(count).bit_length())


def group_view(matrix: np.ndarray, shape: tuple[int, ...], scheme: str) -> np.ndarray:
    """``[groups, members]`` of the structured scheme: rows, columns, or input channels of the GEMM view."""
    if scheme == "filter":
        return matrix
    if scheme == "column" or len(shape) == 2:
        return matrix.T
    out, channels = shape[0], shape[1]
    return matrix.reshape(out, channels, -1).transpose(1, 0, 2).reshape(channels, -1)


def _ungroup(groups: np.ndarray, shape: tuple[int, ...], scheme: str) -> np.ndarray:
    if scheme == "filter":
        return groups
    if scheme == "column" or len(shape) == 2:
        return groups.T
    out, channels = shape[0], shape[1]
    return groups.reshape(channels, out, -1).transpose(1, 0, 2).reshape(out, -1)


# ----------------------------------------------------------------------------- per-format structure
def zero_runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row of each non-zero, the zeros before it in its row) of a row-major sparse matrix ``rows``."""
    n_cols = rows.shape[1]
    flat = np.flatnonzero(rows.ravel())
    row, col = flat // n_cols, flat % n_cols
    previous = np.empty_like(col)
    previous[1:] = col[:-1]
    first = np.ones(flat.size, dtype=bool)
    first[1:] = row[1:] != row[:-1]
    previous[first] = -1
    return row, col - previous - 1


def relative_runs(rows: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run codes (fillers included) and entries per row of a row-major sparse matrix ``rows``."""
    escape = (1 << index_bits) - 1
    n_rows = rows.shape[0]
    row, run = zero_runs(rows)
    fillers, residual = run // escape, run % escape
    per_entry = fillers + 1
    codes = np.full(int(per_entry.sum()), escape, dtype=np.uint64)
    codes[np.cumsum(per_entry) - 1] = residual
    entries_per_row = np.bincount(row, weights=per_entry, minlength=n_rows).astype(np.int64)
    return codes, entries_per_row, fillers


def structure_sections(matrix: np.ndarray, shape: tuple[int, ...], fmt: str, index_bits: int = 4,
                       scheme: str = "filter") -> tuple[list[Section], np.ndarray]:
    """The pointer/index/filler fields of ``fmt`` and the stored values in stream order.

    Pure structure: only the zero pattern of ``matrix`` decides these fields (the values go to the
    value section), so the same function serves the break-even analysis on bare masks.
    """
    if fmt == "dense":
        return [], matrix.ravel()
    if fmt == "structured":
        if scheme not in STRUCTURED_SCHEMES:
            raise EncodingError(f"scheme={scheme!r} for the structured format; allowed: {list(STRUCTURED_SCHEMES)}")
        groups = group_view(matrix, shape, scheme)
        kept = groups.any(axis=1)
        return [("indices", kept.astype(np.uint64), 1)], groups[kept].ravel()
    if fmt == "bitmap":
        flat = matrix.ravel()
        mask = flat != 0
        return [("indices", mask.astype(np.uint64), 1)], flat[mask]
    if fmt == "csr":
        n_rows, n_cols = matrix.shape
        flat = np.flatnonzero(matrix.ravel())
        ends = np.cumsum(np.bincount(flat // n_cols, minlength=n_rows))
        return ([("pointers", ends.astype(np.uint64), width_for(flat.size)),
                 ("indices", (flat % n_cols).astype(np.uint64), (n_cols - 1).bit_length())],
                matrix.ravel()[flat])
    if fmt in RELATIVE_FORMATS:
        index_bits = check_index_bits(index_bits)
        rows = matrix if fmt == "rel_csr" else np.ascontiguousarray(matrix.T)
        codes, entries_per_row, _ = relative_runs(rows, index_bits)
        # The run codes are one interleaved field vector: _split_fillers attributes their bits.
        fields: list[Section] = [("pointers", np.cumsum(entries_per_row).astype(np.uint64), width_for(codes.size)),
                                 ("indices+fillers", codes, index_bits)]
        flat = rows.ravel()
        return fields, flat[flat != 0]
    if fmt in NM_FORMATS:
        return _nm_sections(matrix, shape, fmt, scheme)
    raise EncodingError(f"format={fmt!r}; allowed: {list(CODED_FORMATS)}")


def _nm_rows(matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The GEMM rows in hardware order (``NM_CONV_ORDER``), where the groups of M lie."""
    return matrix.reshape(shape).transpose(NM_CONV_ORDER).reshape(shape[0], -1) if len(shape) == 4 else matrix


def _combinations(m: int, n: int) -> np.ndarray:
    """C(c, i) for c < m, i <= n (object-free int64: C(64, 32) < 2^63)."""
    return np.array([[math.comb(c, i) for i in range(n + 1)] for c in range(m)], dtype=np.int64)


def _nm_sections(matrix: np.ndarray, shape: tuple[int, ...], fmt: str, pattern: str) -> tuple[list[Section], np.ndarray]:
    try:
        n, m = nm_pattern(pattern)
    except ValueError as error:
        raise EncodingError(str(error)) from None
    rows = _nm_rows(matrix, shape)
    if rows.shape[1] % m:
        raise EncodingError(f"{pattern} format of shape {shape}: its reduction length {rows.shape[1]} is not a multiple "
                            f"of {m}; store the layer dense")
    groups = rows.reshape(-1, m)
    nonzero = groups != 0
    if (nonzero.sum(axis=1) > n).any():
        raise EncodingError(f"a group of {m} holds more than {n} non-zeros: project the layer onto {pattern} first "
                            "(study.compression.nm.project)")
    # the slots: the non-zeros, then the lowest free positions up to exactly N, in position order
    kept = np.sort(np.argsort(~nonzero, axis=1, kind="stable")[:, :n], axis=1)
    fields: list[Section] = [("header", np.array([n, m], dtype=np.uint64), _SMALL_BITS)]
    if fmt == "nm_hw":
        fields.append(("indices", kept.astype(np.uint64).ravel(), math.ceil(math.log2(m))))
    else:
        table = _combinations(m, n)
        ranks = table[kept, np.arange(1, n + 1)].sum(axis=1)
        fields.append(("indices", ranks.astype(np.uint64), math.ceil(math.log2(math.comb(m, n)))))
    return fields, np.take_along_axis(groups, kept, axis=1).ravel()


def _decode_nm(reader: BitReader, fmt: str, shape: tuple[int, ...], weight_bits: int) -> np.ndarray:
    """The GEMM matrix of an N:M stream, every field checked before it sizes anything."""
    n, m = (int(v) for v in reader.read(2, _SMALL_BITS))
    reduction = int(np.prod(shape[1:], dtype=object))
    if not 1 <= n <= m <= 64 or reduction % m:
        raise EncodingError(f"N:M stream declares {n}:{m} for shape {shape}: corrupt stream")
    count = shape[0] * reduction // m
    if fmt == "nm_hw":
        kept = reader.read(count * n, math.ceil(math.log2(m))).astype(np.int64).reshape(count, n)
        if kept.size and (kept.max() >= m or (np.diff(kept, axis=1) <= 0).any()):
            raise EncodingError("N:M positions out of their group or out of order: corrupt stream")
    else:
        ranks = reader.read(count, math.ceil(math.log2(math.comb(m, n)))).astype(np.int64)
        if ranks.size and ranks.max() >= math.comb(m, n):
            raise EncodingError(f"an N:M rank past the C({m}, {n}) kept sets: corrupt stream")
        table = _combinations(m, n)
        kept = np.empty((count, n), dtype=np.int64)
        for i in range(n, 0, -1):  # colexicographic unranking: the largest c with C(c, i) <= what is left
            kept[:, i - 1] = np.searchsorted(table[:, i], ranks, side="right") - 1
            ranks = ranks - table[kept[:, i - 1], i]
    groups = np.zeros((count, m), dtype=np.float32)
    np.put_along_axis(groups, kept, _read_values(reader, count * n, weight_bits).reshape(count, n), axis=1)
    rows = groups.reshape(shape[0], reduction)
    if len(shape) == 4:
        out, channels, kh, kw = shape
        return rows.reshape(out, kh, kw, channels).transpose(0, 3, 1, 2).reshape(out, -1)
    return rows


def _levels(values: np.ndarray, alpha: np.float32, weight_bits: int, zero_free: bool) -> np.ndarray | None:
    """The integer levels q with float32(alpha) * q == values exactly on the b-bit grid, or None."""
    q = np.rint(values.astype(np.float64) / np.float64(alpha))
    if np.abs(q).max(initial=0) > max_level(weight_bits, allow_zero=not zero_free) or (zero_free and (q == 0).any()):
        return None
    return q if np.array_equal(alpha * q.astype(np.float32), values) else None


def _zero_free(values: np.ndarray, weight_bits: int) -> bool:
    """Which grid a layer's values take: the one without 0 when no stored value is 0 (always for binary)."""
    return weight_bits == 1 or not (values == 0).any()


def uniform_scale(values: np.ndarray, weight_bits: int) -> np.float32 | None:
    """The float32 scale alpha of a uniformly quantized set of values (each exactly alpha * q with q on the
    b-bit grid, ``study.contract.max_level``), or None when there is none (32-bit values, all zeros, or
    non-uniform levels).

    Searched on the distinct values only (at most 2^b): the smallest magnitude sits on some level k, so
    alpha is that magnitude / k, up to float32 rounding (the neighbouring floats are tried too).
    """
    if weight_bits == 32 or values.size == 0:
        return None
    distinct = np.unique(values.astype(np.float32))
    magnitudes = np.abs(distinct[distinct != 0])
    if magnitudes.size == 0 or distinct.size > (1 << weight_bits):
        return None
    zero_free = _zero_free(distinct, weight_bits)
    smallest = magnitudes.min()
    for level in range(1, max_level(weight_bits, allow_zero=not zero_free) + 1):
        guess = np.float32(smallest / np.float32(level))
        for alpha in (guess, np.nextafter(guess, np.float32(0)), np.nextafter(guess, np.float32(np.inf))):
            if alpha > 0 and _levels(distinct, alpha, weight_bits, zero_free) is not None:
                return np.float32(alpha)
    return None


def level_codes(q: np.ndarray, weight_bits: int, zero_free: bool) -> np.ndarray:
    """b-bit unsigned codes of integer levels: q + m on the grid with 0 (one code unused); without 0, the
    negative levels take the codes below 2^(b-1) and the positive ones the codes from it (binary: -1 -> 0, +1 -> 1)."""
    half = 2 ** (weight_bits - 1)
    if zero_free:
        return np.where(q < 0, q + half, q + half - 1).astype(np.uint64)
    return (q + max_level(weight_bits)).astype(np.uint64)


def code_levels(codes: np.ndarray, weight_bits: int, zero_free: bool) -> np.ndarray:
    """The integer levels of b-bit codes (the inverse of ``level_codes``)."""
    codes = codes.astype(np.int64)
    half = 2 ** (weight_bits - 1)
    if zero_free:
        return np.where(codes < half, codes - half, codes - half + 1)
    return codes - max_level(weight_bits)


def _value_sections(values: np.ndarray, weight_bits: int) -> tuple[list[Section], int]:
    """The value fields and the header flags of their form (see the module docstring)."""
    if weight_bits == 32:
        return [("values", values.astype(np.float32).view(np.uint32).astype(np.uint64), 32)], 0
    alpha = uniform_scale(values, weight_bits)
    if alpha is not None:
        zero_free = _zero_free(values, weight_bits)
        q = _levels(values, alpha, weight_bits, zero_free)
        return [("scale", np.array([alpha], dtype=np.float32).view(np.uint32).astype(np.uint64), 32),
                ("values", level_codes(q, weight_bits, zero_free), weight_bits)], _UNIFORM_FLAG | (_ZERO_FREE_FLAG if zero_free else 0)
    codebook, codes = np.unique(values, return_inverse=True)
    if codebook.size > (1 << weight_bits):
        raise EncodingError(
            f"{codebook.size} distinct stored values do not fit {weight_bits}-bit codes (at most {1 << weight_bits}); "
            f"quantize the layer to {weight_bits} bits first (study.compression.quantize) or store it with weight_bits=32")
    return [("codebook", np.array([codebook.size], dtype=np.uint64), _DIM_BITS),
            ("codebook", codebook.astype(np.float32).view(np.uint32).astype(np.uint64), 32),
            ("values", codes.astype(np.uint64), weight_bits)], 0


def _aux_code(fmt: str, scheme: str) -> int:
    return STRUCTURED_SCHEMES.index(scheme) if fmt == "structured" else 0


def sections(weight: object, fmt: str, weight_bits: int = 32, index_bits: int = 4, scheme: str = "filter") -> list[Section]:
    """Every field of the stream, in order: header, structure, codebook, values."""
    return _sections(*as_matrix(weight), fmt, weight_bits, index_bits, scheme)


def _sections(matrix: np.ndarray, shape: tuple[int, ...], fmt: str, weight_bits: int, index_bits: int,
              scheme: str) -> list[Section]:
    weight_bits = check_weight_bits(weight_bits)
    if fmt in RELATIVE_FORMATS:
        check_index_bits(index_bits)
    structure, values = structure_sections(matrix, shape, fmt, index_bits, scheme)
    value_fields, value_flags = _value_sections(values, weight_bits)
    header: list[Section] = [
        ("header", np.array([CODED_FORMATS.index(fmt) if fmt in CODED_FORMATS else 255, len(shape)], dtype=np.uint64), _SMALL_BITS),
        ("header", np.array(shape, dtype=np.uint64), _DIM_BITS),
        ("header", np.array([weight_bits | value_flags, index_bits if fmt in RELATIVE_FORMATS else 0,
                             _aux_code(fmt, scheme)], dtype=np.uint64), _SMALL_BITS),
    ]
    pointer_bits = [width for category, _, width in structure if category == "pointers"]
    header.append(("header", np.array(pointer_bits[:1] or [0], dtype=np.uint64), _SMALL_BITS))
    return header + structure + value_fields


def _split_fillers(breakdown: dict[str, int], structure: list[Section]) -> dict[str, int]:
    """Attribute the interleaved run codes: fillers are the escape codes, the rest are indices."""
    out = {c: 0 for c in CATEGORIES}
    for category, bits in breakdown.items():
        if category != "indices+fillers":
            out[category] += bits
    for category, values, width in structure:
        if category == "indices+fillers":
            escape = (1 << width) - 1
            n_fill = int(np.count_nonzero(values == escape))
            out["fillers"] += n_fill * width
            out["indices"] += (values.size - n_fill) * width
    return out


def count_bits(weight: object, fmt: str, weight_bits: int = 32, index_bits: int = 4, scheme: str = "filter") -> dict[str, int]:
    """Bits per category of the stream ``encode`` would write, without packing it."""
    fields = sections(weight, fmt, weight_bits, index_bits, scheme)
    raw: dict[str, int] = {}
    for category, values, width in fields:
        raw[category] = raw.get(category, 0) + int(values.size) * width
    return _split_fillers(raw, fields)


def encode(weight: object, fmt: str, weight_bits: int = 32, index_bits: int = 4, scheme: str = "filter") -> Encoded:
    """Pack ``weight`` in ``fmt``; the breakdown sums to ``n_bits``, the length of the packed stream."""
    matrix, shape = as_matrix(weight)
    fields = _sections(matrix, shape, fmt, weight_bits, index_bits, scheme)
    writer = BitWriter()
    for category, values, width in fields:
        writer.write(category, values, width)
    return Encoded(fmt, writer.getvalue(), writer.n_bits, _split_fillers(writer.breakdown, fields), shape,
                   int(np.count_nonzero(matrix)))


# ----------------------------------------------------------------------------- decoding
def _check_weight_field(weight_bits: int) -> None:
    """A stream header's weight-bits field (width and flags) must be one the encoders write: a 0-bit value would
    let any count of values be read from no bits at all."""
    width = weight_bits & ~(_UNIFORM_FLAG | _ZERO_FREE_FLAG)
    flagged = weight_bits != width
    if width not in WEIGHT_BITS or (flagged and width == 32) or (weight_bits & _ZERO_FREE_FLAG and not weight_bits & _UNIFORM_FLAG):
        raise EncodingError(f"stream header declares weight-bits field {weight_bits}: not a width the encoders write")


def _read_values(reader: BitReader, count: int, weight_bits: int) -> np.ndarray:
    if weight_bits & _UNIFORM_FLAG:
        zero_free = bool(weight_bits & _ZERO_FREE_FLAG)
        weight_bits &= ~(_UNIFORM_FLAG | _ZERO_FREE_FLAG)
        alpha = reader.read(1, 32).astype(np.uint32).view(np.float32)[0]
        q = code_levels(reader.read(count, weight_bits), weight_bits, zero_free)
        if np.abs(q).max(initial=0) > max_level(weight_bits, allow_zero=not zero_free):
            raise EncodingError(f"a level {int(np.abs(q).max())} beyond the {weight_bits}-bit grid: corrupt stream")
        return alpha * q.astype(np.float32)
    if weight_bits == 32:
        return reader.read(count, 32).astype(np.uint32).view(np.float32)
    size = reader.read_int(_DIM_BITS)
    codebook = reader.read(size, 32).astype(np.uint32).view(np.float32)
    codes = reader.read(count, weight_bits)
    if codes.size and codes.max() >= size:
        raise EncodingError(f"a value code {int(codes.max())} points past the {size}-entry codebook: corrupt stream")
    return codebook[codes.astype(np.int64)]


def _read_ends(reader: BitReader, n_rows: int, pointer_bits: int, most: int) -> np.ndarray:
    """Row pointers (cumulative entry counts), checked before anything is sized by them: each pointer takes at
    least one bit (the encoders write ``width_for(count) >= 1``), so ``n_rows`` cannot exceed the stream's bits,
    and they never decrease nor pass ``most``, the entries the rows can hold."""
    if n_rows and pointer_bits < 1:
        raise EncodingError(f"{n_rows} row pointers of {pointer_bits} bits: corrupt stream")
    ends = reader.read(n_rows, pointer_bits).astype(np.int64)
    if n_rows and ((np.diff(ends) < 0).any() or ends[0] < 0 or int(ends[-1]) > most):
        raise EncodingError(f"row pointers decrease or pass the {most} entries the rows can hold: corrupt stream")
    return ends


def _decode_relative(reader: BitReader, rows_shape: tuple[int, int], index_bits: int, pointer_bits: int,
                     weight_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, value) of every non-zero, in the coordinates of the encoded rows."""
    n_rows, n_cols = rows_shape
    if index_bits not in INDEX_BITS:
        raise EncodingError(f"run codes of {index_bits} bits; the encoders write {INDEX_BITS.start}..{INDEX_BITS.stop - 1}: corrupt stream")
    escape = (1 << index_bits) - 1
    # every entry is a value or a filler of `escape` zeros: a row holds at most n_cols // escape + n_cols of them
    ends = _read_ends(reader, n_rows, pointer_bits, n_rows * (n_cols // escape + n_cols))
    total = int(ends[-1]) if n_rows else 0
    codes = reader.read(total, index_bits).astype(np.int64)
    real = codes != escape
    values = _read_values(reader, int(real.sum()), weight_bits)
    counts = np.diff(np.concatenate([[0], ends]))
    row = np.repeat(np.arange(n_rows), counts)
    step = np.where(real, codes + 1, escape)
    reached = np.cumsum(step)
    start = np.concatenate([[0], reached])[np.concatenate([[0], ends])[:-1]]
    col = reached - np.repeat(start, counts) - 1
    if real.any() and col[real].max() >= n_cols:
        raise EncodingError("a run points past the end of its row: corrupt stream")
    return row[real], col[real], values


def _read_shape(reader: BitReader) -> tuple[str, tuple[int, ...]]:
    fmt_code, ndim = (int(v) for v in reader.read(2, _SMALL_BITS))
    if fmt_code >= len(CODED_FORMATS) or ndim not in (2, 4):
        raise EncodingError(f"stream header names format {fmt_code} with {ndim} dims: not a stream of study.costs.encoding")
    return CODED_FORMATS[fmt_code], tuple(int(d) for d in reader.read(ndim, _DIM_BITS))


SHAPE_HEAD_BITS = 2 * _SMALL_BITS + 4 * _DIM_BITS  # format, dims, then at most four 32-bit sizes: where a shape ends


def stream_shape(data: bytes, n_bits: int) -> tuple[int, ...]:
    """The weight shape a stream declares, read from its first bits alone.

    ``decode`` allocates the tensor it declares (a sparse format's bits do not bound it: an empty row costs one
    pointer), so a reader of foreign bytes compares this with the shape it expects before decoding.
    """
    head_bits = min(n_bits, SHAPE_HEAD_BITS)
    try:
        return _read_shape(BitReader(data[:-(-head_bits // 8)], head_bits))[1]
    except ValueError as error:
        raise EncodingError(f"stream too short for its header: {error}") from None


def decode(data: bytes, n_bits: int) -> np.ndarray:
    """The exact float32 tensor that ``encode`` packed into ``data`` (``n_bits`` long).

    Every count the stream declares is checked against the bits it has left before an array is sized by it; only
    the tensor itself is sized by the declared shape (see ``stream_shape``).
    """
    reader = BitReader(data, n_bits)
    fmt, shape = _read_shape(reader)
    weight_bits, index_bits, aux, pointer_bits = (int(v) for v in reader.read(4, _SMALL_BITS))
    _check_weight_field(weight_bits)
    n_rows = shape[0]
    n_cols = int(np.prod(shape[1:], dtype=object))
    if fmt == "dense":
        matrix = _read_values(reader, n_rows * n_cols, weight_bits).reshape(n_rows, n_cols)
    elif fmt == "structured":
        if aux >= len(STRUCTURED_SCHEMES):
            raise EncodingError(f"structured stream names scheme {aux}: corrupt stream")
        scheme = STRUCTURED_SCHEMES[aux]
        template = group_view(np.zeros((n_rows, n_cols), dtype=np.float32), shape, scheme)
        kept = reader.read(template.shape[0], 1).astype(bool)
        template[kept] = _read_values(reader, int(kept.sum()) * template.shape[1], weight_bits).reshape(-1, template.shape[1])
        matrix = _ungroup(template, shape, scheme)
    elif fmt == "bitmap":
        mask = reader.read(n_rows * n_cols, 1).astype(bool)
        flat = np.zeros(n_rows * n_cols, dtype=np.float32)
        flat[mask] = _read_values(reader, int(mask.sum()), weight_bits)
        matrix = flat.reshape(n_rows, n_cols)
    elif fmt == "csr":
        ends = _read_ends(reader, n_rows, pointer_bits, n_rows * n_cols)
        nnz = int(ends[-1]) if n_rows else 0
        cols = reader.read(nnz, (n_cols - 1).bit_length()).astype(np.int64)
        if nnz and cols.max() >= n_cols:
            raise EncodingError(f"a column index {int(cols.max())} past the {n_cols} columns: corrupt stream")
        rows = np.repeat(np.arange(n_rows), np.diff(np.concatenate([[0], ends])))
        values = _read_values(reader, nnz, weight_bits)
        matrix = np.zeros((n_rows, n_cols), dtype=np.float32)
        matrix[rows, cols] = values
    elif fmt in NM_FORMATS:
        matrix = _decode_nm(reader, fmt, shape, weight_bits)
    else:  # rel_csc encodes the rows of the transposed matrix
        csc = fmt == "rel_csc"
        row, col, values = _decode_relative(reader, (n_cols, n_rows) if csc else (n_rows, n_cols),
                                            index_bits, pointer_bits, weight_bits)
        matrix = np.zeros((n_rows, n_cols), dtype=np.float32)
        matrix[(col, row) if csc else (row, col)] = values
    reader.finish()
    return matrix.reshape(shape)
