"""`fpgaprint station`: the OpenHTF station as a subcommand, on the digits package served as a
virtual board on a pty; its help, its exit codes and its record."""

from __future__ import annotations

import json
import re

import pytest
from conftest import in_process_board, make_challenge, moved, run_fpgaprint

from fpgaprint.core.golden import GoldenModel
from fpgaprint.hw_targets import protocol as P
from fpgaprint.hw_targets.agent import BoardAgent
from fpgaprint.hw_targets.served import ServedBoard


def test_station_help_documents_every_option(run_cli):
    code, out, _ = run_cli("station", "--help")
    assert code == 0
    assert "station [OPTIONS]" in out and "openhtf_station" not in out
    options = re.findall(r"^\s+(--[a-z-]+)", out, re.M)
    assert {"--port", "--package", "--challenge", "--trusted-key", "--allow-unsigned",
            "--allow-unpinned", "--timeout", "--retries", "--json"} <= set(options)
    assert "--record" not in options  # the old spelling is hidden
    for line in out.split("Options:")[1].splitlines():
        if m := re.match(r"^\s+(-h, )?(--[a-z-]+)( [A-Z]+)?\s*$", line):
            pytest.fail(f"{m.group(1)} has no help text")
    code, top, _ = run_cli("--help")
    assert re.search(r"^\s+station\s+Run the OpenHTF station", top, re.M), top


def station(*args) -> tuple[int, str, str]:
    """`fpgaprint station ARGS` in a child process with pipes (OpenHTF prints to the real
    stdout)."""
    r = run_fpgaprint("station", *args)
    return r.returncode, r.stdout, r.stderr


def test_station_passes_a_healthy_board_and_fails_a_flipped_one(digits_package, keypair,
                                                                tmp_path):
    from fpgaprint.core.golden import GoldenModel

    pub = keypair[1]
    record = tmp_path / "record.json"
    with ServedBoard(digits_package, "--trusted-key", pub) as board:
        code, out, err = station("--port", board.port, "--package", digits_package,
                                 "--trusted-key", pub, "--json", record)
    assert code == 0, out + err
    assert out.splitlines()[-1] == "verdict: PASS"
    for phase in ("identify", "power_on_selftest", "verify"):
        assert f"{phase}: PASS" in out
    assert json.loads(record.read_text())["outcome"] == "PASS"

    mems = GoldenModel(digits_package / "model" / "golden.onnx").memories()
    key = [k for k in mems if k.endswith("/weights")][-1]
    old = tmp_path / "old.json"
    with ServedBoard(digits_package, "--trusted-key", pub,
                     "--flip", f"{key}:0:{mems[key].bits - 1}") as board:
        code, out, err = station("--port", board.port, "--package", digits_package,
                                 "--trusted-key", pub, "--record", old)
    assert code == 1, out + err
    assert "verify: FAIL" in out and "verify_exact_failed" in out
    last = out.splitlines()[-1]
    assert last.startswith("verdict: FAIL: failed measurements: ") and "verify_verdict" in last
    assert "--record is now --json" in err
    assert json.loads(old.read_text())["outcome"] == "FAIL"


@pytest.mark.parametrize("args, message", [
    (["--port", "", "--package", "p"], "--port '': empty"),
    (["--port", "/dev/pts/9", "--package", "p", "--timeout", "0"], "--timeout: expected"),
    (["--port", "/dev/pts/9", "--package", "p", "--json", "/etc/passwd/x"], "--json"),
    (["--port", "/dev/pts/9", "--package", "p", "--json", "a.json", "--record", "b.json"],
     "--record: the old spelling of --json; give one of them"),
])
def test_station_checks_its_options_before_any_board(run_cli, args, message, tmp_path,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("station", *args)
    assert code == 2 and out == "" and message in err, err
    assert err.count("\n") == 1, err


# ------------------------------------------------------- the station's verdict is verify's


class UnboundAgent(BoardAgent):
    """Answers challenges with the healthy outputs and a digest bound to another nonce, as a
    recorded session would."""

    def _challenge(self, payload):
        nonce, x = P.unpack_challenge_request(payload)
        raw, labels = self._run(x)
        return P.pack_challenge_response(raw, labels,
                                         P.challenge_digest(bytes(16), x, raw, labels))

    _handlers = {**BoardAgent._handlers, P.MsgType.CHALLENGE: _challenge}


class NoBistRecord:
    """A healthy board whose on-chip self-test registers cannot be read: its power-on record
    has none, so by the package's rule its own claim is no pass either."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def selftest(self):
        st = dict(self.backend.selftest())
        del st["bist"], st["bist_source"]
        return {**st, "passed": False}


def verify_and_station(run_cli, pkg, pub, url, tmp_path, *extra):
    """`verify` and `station` on the same board: ((code, last line) of each, the station's
    whole output, its OpenHTF record)."""
    code, out, err = run_cli("verify", "--port", url, "--package", pkg, "--trusted-key", pub,
                             *extra)
    assert out.strip(), err
    record = tmp_path / "record.json"
    s_code, s_out, s_err = station("--port", url, "--package", pkg, "--trusted-key", pub,
                                   "--json", record, *extra)
    assert s_out.strip(), s_err
    return ((code, out.splitlines()[-1]), (s_code, s_out.splitlines()[-1]), s_out,
            json.loads(record.read_text()))


def reason_of(last: str) -> str:
    """The reason in verify's verdict line `verdict: STATUS (SECONDS s): REASON`."""
    return last.split(" s): ", 1)[1]


def test_a_challenge_answer_not_bound_to_its_nonce_fails_at_the_station_as_in_verify(
        run_cli, digits_build, digits_package, keypair, tmp_path):
    pub = keypair[1]
    fp = make_challenge(digits_build.golden, moved(digits_build.inputs), tmp_path / "ch.npz")
    with in_process_board(digits_package, pub, agent_cls=UnboundAgent, pty=True) as link:
        (code, last), (s_code, s_last), s_out, rec = verify_and_station(
            run_cli, digits_package, pub, link.url, tmp_path, "--challenge", fp)
    assert code == 1 and last.startswith("verdict: FAIL") and "binding" in last, last
    assert s_code == code, s_out
    assert s_last.startswith("verdict: FAIL: failed measurements: ") and \
        "challenge_binding" in s_last, s_out
    assert "verify: PASS" in s_out and "challenge: FAIL" in s_out  # INFER answers are healthy
    assert rec["outcome"] == "FAIL"


def test_a_board_without_its_on_chip_self_test_record_has_no_verdict_at_the_station_as_in_verify(
        run_cli, make_package, digits_build, keypair, tmp_path):
    pub = keypair[1]
    pkg = make_package("digits-mlp", tmp_path / "bist", bist="exact")
    fp = make_challenge(digits_build.golden, moved(digits_build.inputs), tmp_path / "ch.npz")
    with in_process_board(pkg, pub, pty=True) as link:  # the record is there: PASS
        (code, _), (s_code, s_last), s_out, rec = verify_and_station(
            run_cli, pkg, pub, link.url, tmp_path)
    assert code == s_code == 0 and s_last == "verdict: PASS", s_out
    with in_process_board(pkg, pub, wrap=NoBistRecord, pty=True) as link:
        for extra in ((), ("--challenge", fp)):
            (code, last), (s_code, s_last), s_out, rec = verify_and_station(
                run_cli, pkg, pub, link.url, tmp_path, *extra)
            assert code == 3 and "the board reported no on-chip self-test" in last, last
            assert s_code == code, s_out
            phase = "challenge" if extra else "verify"
            assert s_last.startswith("verdict: NO_VERDICT: ") and \
                s_last.endswith(f"{phase}: {reason_of(last)}"), s_out  # verify's reason
            assert "FAIL" not in s_out, s_out  # nothing failed: no measurement, no phase
            assert "power_on_selftest: PASS" in s_out  # the board's claim: recorded only
            assert rec["outcome"] == "ERROR"
            assert [d["code"] for d in rec["outcome_details"]] == ["NoVerdict"]


def test_a_marginal_pass_has_no_verdict_at_the_station_as_in_verify(
        run_cli, make_package, digits_build, keypair, tmp_path):
    pub = keypair[1]
    golden_labels = GoldenModel(digits_build.golden).run(digits_build.inputs)[2]
    k, n = int((golden_labels == digits_build.expected).sum()), len(golden_labels)
    edge = make_package("digits-mlp", tmp_path / "edge", threshold=k / n)  # rate == threshold
    with in_process_board(edge, pub, pty=True) as link:
        (code, last), (s_code, s_last), s_out, rec = verify_and_station(
            run_cli, edge, pub, link.url, tmp_path)
    assert code == 3 and "no confident verdict" in last, last
    assert s_code == code, s_out
    assert s_last == f"verdict: NO_VERDICT: verify: {reason_of(last)}", s_out
    assert "FAIL" not in s_out, s_out
    assert rec["outcome"] == "ERROR"


def test_a_link_lost_before_any_answer_of_a_judging_phase_has_no_verdict_at_the_station(
        digits_package, keypair):
    """The board answers the station's first two requests (identify, power-on self-test), then
    stays silent: the verify phase has no verdict at all (no answer, not even its HELLO). Its
    records of what it could not judge are NO_VERDICT, never a failed measurement."""
    pub = keypair[1]
    with ServedBoard(digits_package, "--trusted-key", pub, "--hang-after", "2") as board:
        code, out, err = station("--port", board.port, "--package", digits_package,
                                 "--trusted-key", pub, "--timeout", "0.3", "--retries", "0")
    assert code == 3, out + err
    assert out.splitlines()[-1].startswith("verdict: NO_VERDICT: verify: "), out
    assert "FAIL" not in out, out
