"""`fingerprint generate --count auto`: the set sized to the gap its calibration measures, on
the digits model (pilot, choice, the set at that count, reproducibility), and the bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaprint.cli import main
from fpgaprint.compiler import modelio
from fpgaprint.core.boards import BOARDS
from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import load_set
from fpgaprint.fingerprint import power
from fpgaprint.fingerprint.generate import GenParams, generate
from fpgaprint.fingerprint.sizing import PILOT, sizing_lines

EXPECTED = "--count: expected an integer from 1 to 10000 or auto"
STEPS = "40"  # gradient steps per round: enough for digits, faster than the default 100


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


@pytest.fixture(scope="module")
def model(tmp_path_factory, src):
    d = tmp_path_factory.mktemp("power")
    modelio.save(modelio.Checkpoint(src.module, "float", (64,), 10, zoo="digits-mlp"),
                 d / "src.pt")
    return d / "src.pt"


@pytest.fixture(scope="module")
def auto(model):
    """Two `--count auto` runs of the same inputs: (their files, the first run's stdout)."""
    import io
    from contextlib import redirect_stdout

    outs, text = [], ""
    for name in ("a.npz", "b.npz"):
        out = model.parent / name
        buf = io.StringIO()
        with redirect_stdout(buf), pytest.raises(SystemExit) as e:
            main(["fingerprint", "generate", str(model), "--algorithm", "robust", "--count",
                  "auto", "--calibrate", "--steps", STEPS, "--seed", "2", "--board", "Pynq-Z1",
                  "--out", str(out)])
        assert e.value.code == 0, buf.getvalue()
        outs.append(out)
        text = text or buf.getvalue()
    return outs, text


def test_auto_count_is_the_pilots_power_computation(auto):
    (a, _), text = auto
    fs = load_set(a)
    sz = fs.calibration["sizing"]
    assert sz["requested"] == "auto" and sz["pilot"] == PILOT
    # the choice, derived from the pilot's measured rates of both sides
    b = min(sz["benign"].values())
    att = max(sz["attack"].values())
    need = power.vectors_needed(b, att, sz["confidence"], power.CAP)
    assert sz["from_pilot"] == (power.CAP if need is None else need) and sz["needed"] == need
    assert sz["against"] in fs.calibration["attack"]  # an independent model sets N
    assert len(fs) == sz["chosen"] == fs.calibration["count"]
    # sized again while the rates measured at N still overlap there: each round's count is
    # what the previous round's rates need, and the last round is separated, capped or the
    # third
    rounds = sz["rounds"]
    assert rounds[0]["count"] == sz["from_pilot"] and rounds[-1]["count"] == len(fs)
    for prev, nxt in zip(rounds, rounds[1:]):
        assert not prev["separated"] and nxt["count"] == prev["vectors_needed"] > prev["count"]
    last = rounds[-1]
    assert last["separated"] or last["vectors_needed"] is None or len(rounds) == 3 or \
        last["vectors_needed"] <= last["count"]
    assert sz["at_chosen"]["separated"] == last["separated"]
    # the set at N is calibrated at N: its threshold is the worst benign lower bound there
    cal = fs.calibration
    assert fs.threshold == cal["benign"][cal["worst_benign"]]["interval"][0]
    # line time at the board's UART rate, from boards.yaml
    assert sz["baud"] == BOARDS["Pynq-Z1"].baud and cal["power"]["baud"] == sz["baud"]
    assert sz["line_seconds"] == pytest.approx(
        power.line_seconds(len(fs), fs.inputs[0].size, 10, sz["baud"]))
    # impostors are measured on the pilot and reported, each with its own need
    assert set(sz["impostor"]) == set(cal["impostor"])
    for e in sz["impostor"].values():
        assert e["vectors_needed"] == power.vectors_needed(b, e["match_rate"],
                                                           sz["confidence"], power.CAP)
    line = next(x for x in text.splitlines() if x.startswith("count auto:"))
    assert f"N={len(fs)}" in line and f"{sz['line_seconds']:.2f} s at {sz['baud']} baud" in line
    assert f"{sz['worst_benign']} {b:.3f} against {sz['against']} {att:.3f}" in line
    assert "Pynq-Z1" in line and "impostors on the pilot" in text


def test_auto_count_is_reproducible_and_is_the_plain_set_at_n(auto, model):
    (a, b), _ = auto
    assert a.read_bytes() == b.read_bytes()
    fa, fb = load_set(a), load_set(b)
    np.testing.assert_array_equal(fa.inputs_int, fb.inputs_int)
    np.testing.assert_array_equal(fa.labels, fb.labels)
    assert fa.threshold == fb.threshold
    assert fa.calibration["sizing"] == fb.calibration["sizing"]
    # the vectors are those a plain generation at the chosen count makes from the same seed
    from fpgaprint.fingerprint.source import load_model

    plain = generate(load_model(model), "robust", len(fa), seed=2,
                     params=GenParams(steps=int(STEPS)))
    np.testing.assert_array_equal(plain.inputs_int, fa.inputs_int)


@pytest.mark.parametrize("args, message", [
    (["--count", "auto"], "--count auto: needs --calibrate"),
    (["--count", "0", "--calibrate"], f"{EXPECTED}, got '0'"),
    (["--count", "foo", "--calibrate"], f"{EXPECTED}, got 'foo'"),
    (["--count", "auto", "--calibrate", "--board", "nope"], "--board: unknown board 'nope'"),
    (["--count", "20", "--board", "Pynq-Z1"], "--board: only with --calibrate"),
    # no example reaches a margin of 100: the pilot fails, before any training
    (["--count", "auto", "--calibrate", "--steps", "5", "--margin", "100"],
     "--count auto: the pilot of 100: robust: 100 of 100 examples missing"),
])
def test_bad_count_is_one_line_exit_2(model, tmp_path, capsys, args, message):
    code, _, err = run(["fingerprint", "generate", str(model), *args, "--out",
                          str(tmp_path / "x.npz")], capsys)
    assert code == 2
    errors = [x for x in err.splitlines() if x.startswith("error:")]  # progress lines aside
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------- power.py, no training


@pytest.mark.parametrize("b, a", [(0.86, 0.27), (0.9, 0.6), (0.95, 0.85)])
def test_size_to_gap_is_vectors_needed_of_worst_benign_and_best_attack(b, a):
    sz = power.size_to_gap({"x": b + 0.05, "worst": b}, {"best": a, "y": a - 0.1})
    n = power.vectors_needed(b, a)
    assert (sz["worst_benign"], sz["against"]) == ("worst", "best")
    assert sz["chosen"] == sz["needed"] == n and n is not None
    assert sz["gap"] == pytest.approx(b - a)
    assert power.separated(b, a, n) and not power.separated(b, a, n - 1)


def test_size_to_gap_caps_and_says_so():
    close = power.size_to_gap({"w": 0.80}, {"a": 0.79}, cap=200)
    assert close["chosen"] == 200 and close["needed"] is None
    assert "no N up to 200" in close["reason"]
    none = power.size_to_gap({"w": 0.70}, {"a": 0.80})
    assert none["chosen"] == power.CAP and "no N separates" in none["reason"]
    sz = {**close, "pilot": PILOT, "baud": power.BAUD, "baud_source": "default",
          "line_seconds": power.line_seconds(200, 64, 10)}
    line = sizing_lines(sz)[0]
    assert line.startswith("count auto: N=200, the cap") and "the capped set is written" in line
    with pytest.raises(ValueError):
        power.size_to_gap({}, {"a": 0.5})


def test_board_baud_comes_from_boards_yaml():
    uart = next(b for b in BOARDS.values() if b.baud)
    assert power.board_baud(uart.name.lower()) == (uart.baud,
                                                   f"{uart.name}'s UART, core/boards.yaml")
    assert power.board_baud(None)[0] == power.BAUD
    tcp = next(b for b in BOARDS.values() if b.baud is None)
    baud, why = power.board_baud(tcp.name)
    assert baud == power.BAUD and "no UART" in why
    with pytest.raises(InputError, match="unknown board"):
        power.board_baud("nope")
