"""`fingerprint eval` fanned out on Dask equals the serial run with the same seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpgaprint.core.cluster import connect
from fpgaprint.core.errors import InputError
from fpgaprint.fingerprint.calibrate import Predictions
from fpgaprint.fingerprint.evaluate import EvalConfig, evaluate
from fpgaprint.fingerprint.fanout import Runner, job_seed, run_job


def small() -> EvalConfig:
    """Every kind of job (generation, calibration sides, variants), kept small."""
    c = EvalConfig.quick()
    c.methods = ("robust", "natural")
    c.count = 30
    c.build = False
    c.ptq_bits, c.qat_bits, c.prune_fractions, c.swap_seeds = (8,), (), (0.7,), (1,)
    c.epochs = 1
    c.attack_epochs = 5
    return c


def _comparable(results: dict) -> dict:
    r = json.loads(json.dumps(results, default=str))
    for m in r["methods"].values():
        m.pop("seconds")  # wall time, the only thing allowed to differ
    return r


def test_eval_on_a_local_cluster_equals_serial():
    serial, sets_a = evaluate("zoo:digits-mlp", small())
    with connect("local", 2) as cluster:
        fanned, sets_b = evaluate("zoo:digits-mlp", small(), cluster=cluster)
    assert _comparable(fanned) == _comparable(serial)
    for m in sets_a:
        np.testing.assert_array_equal(sets_a[m].inputs_int, sets_b[m].inputs_int)
        assert sets_a[m].threshold == sets_b[m].threshold
    rows = {r["name"] for r in serial["variants"]}
    assert {"ptq8", "prune70+ft", "swap-seed1", "extraction", "backdoor-c"} <= rows
    cal = serial["methods"]["robust"]["calibration"]
    assert set(cal["attack"]) == {"independent-seed1001", "independent-seed1002"}


def test_jobs_are_seeded_by_name_not_by_order():
    import torch

    def draw():
        return torch.rand(3).tolist(), int(np.random.randint(1 << 30))

    a = Runner().values([("one", draw, ()), ("two", draw, ())])
    b = Runner().values([("two", draw, ()), ("one", draw, ())])
    assert a[0][0] == b[1][0] and a[1][0] == b[0][0] and a[0][0] != a[1][0]
    assert run_job(("one", draw, ()))[0] == a[0][0] and job_seed("one") != job_seed("two")


def test_job_errors_come_back_with_their_job():
    def bad():
        raise InputError("no such variant")

    out = Runner().map([("ok", lambda: 1, ()), ("bad", bad, ())])
    assert out[0].value[0] == 1 and isinstance(out[1].error, InputError)
    with pytest.raises(InputError, match="no such variant"):
        Runner().values([("bad", bad, ())])


def test_predictions_answer_only_their_inputs():
    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    p = Predictions("v", [x], [np.array([1, 2, 3, 4])])
    assert p.predict(x.copy()).tolist() == [1, 2, 3, 4]
    with pytest.raises(InputError, match="no outputs for these inputs"):
        p.predict(x[:2])


@pytest.mark.parametrize("args, message", [
    (("--workers", "2"), "--workers: only with --scheduler local"),
    (("--scheduler", "ftp://h:1"), "--scheduler 'ftp://h:1': expected"),
    (("--scheduler", "local", "--workers", "0"), "--workers: expected an integer from 1"),
])
def test_eval_cli_refuses_bad_scheduler_options(run_cli, tmp_path, args, message):
    code, _, err = run_cli("fingerprint", "eval", "zoo:digits-mlp", "--out", tmp_path / "o",
                           *args)
    assert code == 2 and message in err, err
