"""The input grid: signed and unsigned integers meaning x = q · scale."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaprint.core.errors import InputError
from fpgaprint.core.grid import InputGrid


def test_default_grid_is_uint8_over_0_1():
    g = InputGrid()
    assert (g.datatype, g.qmin, g.qmax, g.source) == ("UINT8", 0, 255, "default")
    assert g.lo == 0.0 and g.hi == pytest.approx(1.0)
    np.testing.assert_array_equal(g.to_int([-0.5, 0.0, 0.25, 1.0, 2.0]), [0, 0, 64, 255, 255])


@pytest.mark.parametrize("bits, narrow, lo, hi", [(8, False, -128, 127), (8, True, -127, 127),
                                                  (2, False, -2, 1)])
def test_signed_grid_range_and_round_trip(bits, narrow, lo, hi):
    g = InputGrid(bits, signed=True, scale=1 / 128, narrow=narrow, source="q")
    assert (g.datatype, g.qmin, g.qmax) == (f"INT{bits}", lo, hi)
    q = np.arange(lo, hi + 1)
    np.testing.assert_array_equal(g.to_int(g.to_float(q)), q)
    assert g.to_float(q).dtype == np.float32
    np.testing.assert_array_equal(g.to_float(q), q.astype(np.float32) * np.float32(1 / 128))
    assert g.to_int([-1e9])[0] == lo and g.to_int([1e9])[0] == hi
    assert g.contains(q) and not g.contains([hi + 1]) and not g.contains([lo - 1])
    r = g.random(np.random.default_rng(0), (1000,))
    assert r.min() == lo and r.max() == hi


def test_grid_dict_round_trip_and_comparison():
    g = InputGrid(4, signed=False, scale=0.25, source="Quant_0")
    back = InputGrid.from_dict(g.to_dict())
    assert back == g and back.same_integers(InputGrid(4, scale=0.25))
    assert not g.same_integers(InputGrid(4)) and not g.same_integers(InputGrid(4, True, 0.25))


@pytest.mark.parametrize("kwargs", [{"bits": 0}, {"bits": 25}, {"bits": 1, "signed": True},
                                    {"scale": 0.0}, {"scale": float("nan")}])
def test_bad_grid_refused(kwargs):
    with pytest.raises(InputError, match="input grid"):
        InputGrid(**kwargs)
