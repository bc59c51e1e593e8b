"""Encoders round-trip losslessly, count every bit of their real streams, and refuse what they cannot store."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from study.contract import max_level
from study.costs import encoding
from study.costs.bitstream import BitReader, BitWriter, from_bits, to_bits

SHAPES = st.one_of(
    st.tuples(st.integers(1, 9), st.integers(1, 40)),
    st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
)


@st.composite
def sparse_weights(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """A weight tensor of random shape and density, with values a ``weight_bits`` code can hold."""
    shape = draw(SHAPES)
    weight_bits = draw(st.sampled_from(encoding.WEIGHT_BITS))
    density = draw(st.sampled_from([0.0, 0.02, 0.3, 0.9, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if weight_bits == 32:
        values = rng.standard_normal(shape).astype(np.float32)
    else:  # the b-bit levels of study.compression.constraints, +-(1 .. 2**(b-1) - 1): with zero they fit b-bit codes
        levels = min(max(1, (1 << (weight_bits - 1)) - 1), 64)
        values = (rng.integers(1, levels + 1, shape) * np.float32(0.37)).astype(np.float32)
        values *= rng.choice(np.array([-1, 1], dtype=np.float32), shape) if weight_bits > 1 else 1
        if weight_bits == 1:
            density = 1.0 if density > 0.5 else density  # pruned binary layers: dense format would need 3 codes
    mask = rng.random(shape) < density
    return (values * mask).astype(np.float32), weight_bits


def _formats_for(weight: np.ndarray, weight_bits: int) -> list[tuple[str, str]]:
    has_zero = not np.count_nonzero(weight) == weight.size
    out = [(fmt, "filter") for fmt in encoding.SPARSE_FORMATS]
    if not (weight_bits == 1 and has_zero and np.unique(weight).size > 2):
        out.append(("dense", "filter"))
        out += [("structured", s) for s in encoding.STRUCTURED_SCHEMES]
    return out


@settings(max_examples=150, deadline=None)
@given(sparse_weights(), st.integers(1, 8))
def test_every_format_round_trips_and_counts_its_stream(case: tuple[np.ndarray, int], index_bits: int) -> None:
    weight, weight_bits = case
    for fmt, scheme in _formats_for(weight, weight_bits):
        encoded = encoding.encode(weight, fmt, weight_bits, index_bits, scheme)
        assert np.array_equal(encoding.decode(encoded.data, encoded.n_bits), weight), (fmt, scheme)
        assert sum(encoded.breakdown.values()) == encoded.n_bits
        assert len(encoded.data) == math.ceil(encoded.n_bits / 8)
        assert encoding.count_bits(weight, fmt, weight_bits, index_bits, scheme) == encoded.breakdown
        assert encoded.breakdown["values"] == weight_bits * _stored_count(weight, fmt, scheme)


def _stored_count(weight: np.ndarray, fmt: str, scheme: str) -> int:
    if fmt == "dense":
        return weight.size
    if fmt == "structured":
        groups = encoding.group_view(weight.reshape(weight.shape[0], -1), weight.shape, scheme)
        return int(groups.any(axis=1).sum()) * groups.shape[1]
    return int(np.count_nonzero(weight))


@given(st.integers(1, 400), st.integers(1, 6))
def test_long_runs_need_exactly_run_over_escape_fillers(position: int, index_bits: int) -> None:
    row = np.zeros((1, position + 1), dtype=np.float32)
    row[0, position] = 2.5
    encoded = encoding.encode(row, "rel_csr", 32, index_bits)
    escape = (1 << index_bits) - 1
    assert encoded.breakdown["fillers"] == (position // escape) * index_bits
    assert encoded.breakdown["indices"] == index_bits
    assert np.array_equal(encoding.decode(encoded.data, encoded.n_bits), row)


def test_hand_checked_row_with_one_filler() -> None:
    """1x20 row, one non-zero at position 17, 4-bit runs: a filler (15 zeros), then run 2, then the value."""
    row = np.zeros((1, 20), dtype=np.float32)
    row[0, 17] = -1.25
    bits = encoding.count_bits(row, "rel_csr", 32, 4)
    assert bits["fillers"] == 4 and bits["indices"] == 4 and bits["values"] == 32
    assert bits["pointers"] == 2  # one row pointer: 2 entries need a 2-bit counter
    header = 2 * 8 + 2 * 32 + 4 * 8
    assert bits["header"] == header and sum(bits.values()) == header + 2 + 4 + 4 + 32


def test_hand_checked_csr_and_bitmap_and_structured() -> None:
    weight = np.array([[0, 1.5, 0, 0], [0, 0, 0, 0], [2.0, 0, 0, -1.0]], dtype=np.float32)
    csr = encoding.count_bits(weight, "csr", 32)
    assert csr["pointers"] == 3 * 2  # 3 row ends, up to 3 entries -> 2 bits each
    assert csr["indices"] == 3 * 2  # 4 columns -> 2-bit column indices
    bitmap = encoding.count_bits(weight, "bitmap", 32)
    assert bitmap["indices"] == 12 and bitmap["values"] == 3 * 32
    columns = encoding.count_bits(weight, "structured", 32, scheme="column")
    assert columns["indices"] == 4 and columns["values"] == 3 * 3 * 32  # columns 0, 1, 3 kept
    filters = encoding.count_bits(weight, "structured", 32, scheme="filter")
    assert filters["indices"] == 3 and filters["values"] == 2 * 4 * 32


def test_channel_groups_of_a_conv_layer() -> None:
    weight = torch.zeros(3, 4, 2, 2)
    weight[:, 1] = 1.0
    weight[0, 3, 1, 1] = -2.0
    encoded = encoding.encode(weight, "structured", 32, scheme="channel")
    assert encoded.breakdown["indices"] == 4
    assert encoded.breakdown["values"] == 2 * 3 * 4 * 32
    assert np.array_equal(encoding.decode(encoded.data, encoded.n_bits), weight.numpy())


def test_codebook_is_counted_and_holds_the_distinct_values() -> None:
    # 0.3, 0.5, 0.7 are no scale's 2-bit levels (that would need levels 3, 5, 7): a codebook of the three
    weight = np.array([[0.5, -0.7, 0, 0.3]], dtype=np.float32)
    bits = encoding.count_bits(weight, "bitmap", 2)
    assert bits["codebook"] == 32 + 3 * 32 and bits["values"] == 3 * 2


def test_uniform_eight_bit_irregular_layer_stores_one_scale_and_its_levels() -> None:
    rng = np.random.default_rng(3)
    alpha = np.float32(0.0123)
    levels = rng.integers(-127, 128, size=(20, 30)) * (rng.random((20, 30)) < 0.1)
    weight = alpha * levels.astype(np.float32)
    encoded = encoding.encode(weight, "rel_csr", 8, index_bits=4)
    parts = encoded.breakdown
    assert parts["codebook"] == 0 and parts["scale"] == 32 and parts["values"] == 8 * np.count_nonzero(weight)
    assert encoded.n_bits == parts["values"] + parts["indices"] + parts["fillers"] + parts["pointers"] + parts["scale"] + parts["header"]
    assert np.array_equal(encoding.decode(encoded.data, encoded.n_bits), weight)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), alpha=st.floats(0.0001220703125, 8.0, allow_nan=False, width=32), seed=st.integers(0, 2**16),
       fmt=st.sampled_from(["dense", "bitmap", "csr", "rel_csc", "rel_csr"]), survivors=st.booleans())
def test_uniform_levels_round_trip_in_the_scale_form(bits: int, alpha: float, seed: int, fmt: str, survivors: bool) -> None:
    # survivors: a pruned layer's levels +-1..+-2^(b-1), no 0 among the stored values; else the dense grid with 0
    rng = np.random.default_rng(seed)
    m = max_level(bits, allow_zero=not survivors)
    if bits == 1 or survivors:
        levels = rng.choice([-1, 1], size=(6, 9)) * rng.integers(1, m + 1, size=(6, 9))
    else:
        levels = rng.integers(-m, m + 1, size=(6, 9))
    if fmt != "dense" and bits > 1:
        levels = levels * (rng.random((6, 9)) < 0.5)
    weight = np.float32(alpha) * levels.astype(np.float32)
    encoded = encoding.encode(weight, fmt, bits)
    assert np.array_equal(encoding.decode(encoded.data, encoded.n_bits), weight)
    if np.count_nonzero(weight):
        assert encoded.breakdown["scale"] == 32 and encoded.breakdown["codebook"] == 0


def test_a_pruned_layers_codes_name_every_level() -> None:
    # 2 bits for survivors: four non-zero levels -2, -1, +1, +2 (0 is what the index marks), codes 0..3
    alpha = np.float32(0.25)
    weight = alpha * np.array([[-2, 0, -1, 0], [0, 1, 0, 2]], dtype=np.float32)
    encoded = encoding.encode(weight, "csr", 2)
    parts = encoded.breakdown
    assert parts["scale"] == 32 and parts["codebook"] == 0 and parts["values"] == 2 * 4
    assert np.array_equal(encoding.decode(encoded.data, encoded.n_bits), weight)
    assert encoding.level_codes(np.array([-2, -1, 1, 2]), 2, zero_free=True).tolist() == [0, 1, 2, 3]
    # with 0 stored (the dense format) the same values have five levels: no 2-bit grid holds them
    with pytest.raises(encoding.EncodingError, match="5 distinct stored values"):
        encoding.encode(weight, "dense", 2)


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(1, 8), zero_free=st.booleans(), data=st.data())
def test_level_codes_are_a_bijection_onto_b_bit_codes(bits: int, zero_free: bool, data: st.DataObject) -> None:
    m = max_level(bits, allow_zero=not zero_free)
    levels = np.array([q for q in range(-m, m + 1) if not (q == 0 and (zero_free or bits == 1))])
    codes = encoding.level_codes(levels, bits, zero_free or bits == 1)
    assert len(set(codes.tolist())) == len(levels) and int(codes.max()) < 2**bits
    assert len(levels) == (2**bits if (zero_free or bits == 1) else 2**bits - 1)
    assert encoding.code_levels(codes, bits, zero_free or bits == 1).tolist() == levels.tolist()


def test_non_uniform_levels_keep_the_codebook() -> None:
    weight = np.array([[0.1, -0.7, 0.0, 0.3]], dtype=np.float32)  # no scale makes 0.1, 0.3 and 0.7 2-bit levels
    encoded = encoding.encode(weight, "csr", 2)
    assert encoded.breakdown["scale"] == 0 and encoded.breakdown["codebook"] == 32 + 3 * 32
    assert np.array_equal(encoding.decode(encoded.data, encoded.n_bits), weight)


def test_empty_and_full_tensors() -> None:
    for weight in (np.zeros((3, 5), np.float32), np.ones((3, 5), np.float32)):
        for fmt in encoding.FORMATS:
            encoded = encoding.encode(weight, fmt)
            assert np.array_equal(encoding.decode(encoded.data, encoded.n_bits), weight)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": np.zeros((2, 3, 4))}, "3-D"),
        ({"weight": np.zeros(5)}, "1-D"),
        ({"weight": np.array([[1.0, np.nan]])}, "NaN"),
        ({"weight": np.array([[1.0, np.inf]])}, "NaN or inf"),
        ({"index_bits": 0, "fmt": "rel_csc"}, "index_bits=0"),
        ({"index_bits": 17, "fmt": "rel_csr"}, "index_bits=17"),
        ({"weight_bits": 9}, "weight_bits=9"),
        ({"weight_bits": 0}, "weight_bits=0"),
        ({"fmt": "coo"}, "format='coo'"),
        ({"fmt": "structured", "scheme": "kernel"}, "scheme='kernel'"),
        ({"weight": np.arange(1, 7, dtype=np.float32).reshape(2, 3), "weight_bits": 2}, "6 distinct"),
    ],
)
def test_bad_input_is_refused_by_name(kwargs: dict, message: str) -> None:
    arguments = {"weight": np.eye(3, dtype=np.float32), "fmt": "rel_csc", "weight_bits": 32, "index_bits": 4, "scheme": "filter"}
    arguments.update(kwargs)
    with pytest.raises(encoding.EncodingError, match=message):
        encoding.encode(arguments.pop("weight"), **arguments)


def test_truncated_or_foreign_streams_are_refused() -> None:
    encoded = encoding.encode(np.eye(4, dtype=np.float32), "rel_csc")
    with pytest.raises(ValueError, match="truncated"):
        encoding.decode(encoded.data[:-4], encoded.n_bits - 32)
    with pytest.raises(ValueError, match="unread"):
        encoding.decode(encoded.data + b"\0\0", encoded.n_bits + 16)
    with pytest.raises(encoding.EncodingError, match="not a stream"):
        encoding.decode(b"\xff" * 20, 160)


@given(st.lists(st.integers(0, 2**20 - 1), max_size=50), st.integers(20, 64))
def test_bit_fields_round_trip(values: list[int], width: int) -> None:
    assert from_bits(to_bits(np.array(values, dtype=np.uint64), width), width).tolist() == values


def test_writer_and_reader_agree_on_mixed_widths() -> None:
    writer = BitWriter()
    writer.write("a", [5, 0, 7], 3)
    writer.write("b", 1, 1)
    writer.write("a", [1023], 10)
    assert writer.breakdown == {"a": 19, "b": 1} and writer.n_bits == 20
    reader = BitReader(writer.getvalue(), writer.n_bits)
    assert reader.read(3, 3).tolist() == [5, 0, 7] and reader.read_int(1) == 1 and reader.read_int(10) == 1023
    reader.finish()
    with pytest.raises(ValueError, match="does not fit"):
        to_bits(np.array([8]), 3)
