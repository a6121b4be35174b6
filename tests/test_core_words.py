"""Memory words: storage of every datatype, flips and stuck bits, random flips."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaprint.core.errors import InputError
from fpgaprint.core.words import MemoryImage, flip, from_word, random_flips, stick, to_word


@pytest.mark.parametrize("value,bit,datatype,expected", [
    (1, 3, "INT4", -7), (-1, 3, "INT4", 7), (0, 0, "INT2", 1), (1, 1, "INT2", -1),
    (5, 2, "UINT8", 1), (255, 7, "UINT8", 127), (-1, 0, "BIPOLAR", 1), (1, 0, "BIPOLAR", -1),
    (0, 0, "BINARY", 1), (1, 0, "BINARY", 0),
])
def test_flip_is_an_involution_in_the_datatype(value, bit, datatype, expected):
    assert flip(value, bit, datatype) == expected
    assert flip(expected, bit, datatype) == value


@pytest.mark.parametrize("datatype", ["INT4", "UINT3", "INT13", "BIPOLAR", "BINARY", "TERNARY"])
def test_every_value_round_trips_and_flips_stay_in_storage(datatype):
    from qonnx.core.datatype import DataType

    dt = DataType[datatype]
    values = np.array([v for v in range(int(dt.min()), int(dt.max()) + 1)
                       if datatype != "BIPOLAR" or v != 0])
    np.testing.assert_array_equal(from_word(to_word(values, datatype), datatype), values)
    bits = 1 if datatype == "BIPOLAR" else dt.bitwidth()
    for bit in range(bits):
        flipped = flip(values, bit, datatype)
        assert not np.array_equal(flipped, values)
        np.testing.assert_array_equal(flip(flipped, bit, datatype), values)
        words = to_word(flipped, datatype)
        assert words.min() >= 0 and words.max() < 1 << bits
    if datatype == "BIPOLAR":
        assert set(flip(values, 0, datatype).tolist()) == {-1, 1}


def test_stuck_bits_read_their_level():
    assert stick(-8, 3, 0, "INT4") == 0
    assert stick(0, 3, 1, "INT4") == -8
    assert stick(-1, 0, 0, "BIPOLAR") == -1 and stick(-1, 0, 1, "BIPOLAR") == 1


def test_bad_bits_and_datatypes_are_named():
    with pytest.raises(InputError, match="bit 4 out of range for a 4-bit INT4 word"):
        flip(0, 4, "INT4")
    with pytest.raises(InputError, match="bit 1 out of range for a 1-bit BIPOLAR word"):
        flip(1, 1, "BIPOLAR")
    with pytest.raises(InputError, match="FLOAT32 values are not integer words"):
        flip(1, 0, "FLOAT32")
    with pytest.raises(InputError, match="unknown datatype"):
        flip(1, 0, "INT_FOUR")


def _mem(shape, datatype, kind):
    from qonnx.core.datatype import DataType

    dt = DataType[datatype]
    return MemoryImage("A", "t", kind, np.zeros(shape, np.int64), datatype, dt.bitwidth(),
                       dt.signed())


def test_random_flips_are_distinct_bounded_and_seeded():
    mems = {"A/weights": _mem((8, 4), "INT4", "weights"),
            "A/thresholds": _mem((4, 3), "INT9", "thresholds"),
            "B/weights": _mem((5,), "BIPOLAR", "weights")}
    total = 8 * 4 * 4 + 12 * 9 + 5
    flips = random_flips(mems, 60, 0)
    assert len(set(flips)) == 60 and flips == random_flips(mems, 60, 0)
    assert flips != random_flips(mems, 60, 1)
    for key, idx, bit in flips:
        assert 0 <= idx < mems[key].values.size and 0 <= bit < mems[key].format.bits
    assert {k for k, _, _ in random_flips(mems, 20, 1, kinds=("weights",))} <= {
        "A/weights", "B/weights"}
    assert len(set(random_flips(mems, total, 2))) == total
    with pytest.raises(InputError, match=f"cannot flip {total + 1} distinct bits"):
        random_flips(mems, total + 1, 2)
