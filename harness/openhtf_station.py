"""OpenHTF station: a `BoardPlug` around BoardClient and a test with four phases.

Phases: identify (package id, protocol), power-on self-test (the board's own claim), verify
(the package's embedded vectors, host-side verdict) and, with a verifier-held fingerprint set,
challenge. Every decision is a measurement with a validator, so OpenHTF's outcome is the
verdict. Runs headless (no web UI) as `fpgaprint station` (harness/cli_station.py):

    fpgaprint station --port /dev/pts/5 --package build/pkg [--challenge FP.npz] [--json REC]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import openhtf as htf
from openhtf.core.base_plugs import BasePlug

from fpgaprint.harness.verdict import FAIL, NO_VERDICT, PASS, Answers, decide, identity_check
from fpgaprint.harness.verify import (
    DEFAULT_BATCH,
    Plan,
    answer_width,
    challenge_plan,
    expected_identity,
    load_package,
    run_plan,
    selftest_plan,
)


class BoardPlug(BasePlug):
    """A connected BoardClient; `port`, `timeout`, `retries` are set by `board_plug()`."""

    port: str = ""
    timeout: float = 2.0
    retries: int = 3

    def __init__(self) -> None:
        from fpgaprint.harness.client import BoardClient

        if not self.port:
            raise ValueError("BoardPlug has no port: create it with board_plug(port)")
        self.client = BoardClient(self.port, timeout=self.timeout, retries=self.retries)
        self.client.__enter__()

    def hello(self) -> dict[str, Any]:
        return dict(self.client.hello())

    def info(self) -> dict[str, Any]:
        return dict(self.client.info())

    def run(self, plan: Plan, batch_size: int = DEFAULT_BATCH, width: int | None = None):
        """Send a plan's vectors and return the answers (LinkError propagates as an ERROR)."""
        answers = Answers(len(plan.expected), width)
        run_plan(self.client, plan, answers, batch_size)
        return answers

    def tearDown(self) -> None:
        self.client.__exit__(None, None, None)

    def _asdict(self) -> dict[str, Any]:
        return {"port": self.port}


def board_plug(port: str, timeout: float = 2.0, retries: int = 3) -> type[BoardPlug]:
    """A BoardPlug subclass bound to one port (OpenHTF instantiates plugs itself)."""
    return type("BoardPlug", (BoardPlug,), {"port": port, "timeout": timeout, "retries": retries})


def make_test(
    pkg_path: str | Path,
    port: str,
    challenge: str | Path | None = None,
    trusted_key: str | Path | None = None,
    allow_unsigned: bool = False,
    timeout: float = 2.0,
    retries: int = 3,
    batch_size: int = DEFAULT_BATCH,
    allow_unpinned: bool = False,
) -> htf.Test:
    """Build the station's OpenHTF test for one board (package verified here, InputError)."""
    pkg = load_package(pkg_path, trusted_key, allow_unsigned, allow_unpinned)
    plug = board_plug(port, timeout, retries)
    ident = expected_identity(pkg, _protocol())
    st_plan = selftest_plan(pkg)
    thr = st_plan.policy.fingerprint_threshold
    exact = "exact" in st_plan.policy.checks
    n = len(st_plan.expected)

    @htf.measures(
        htf.Measurement("package_id").equals(ident["package_id"]),
        htf.Measurement("protocol").equals(ident["protocol"]),
        htf.Measurement("identity").equals(PASS).doc(
            "package id, protocol and bitstream hash as verify checks them"),
        htf.Measurement("serial").doc("serial number the board reports"),
        htf.Measurement("board"),
    )
    @htf.plug(board=plug)
    def identify(test: htf.TestApi, board: BoardPlug) -> None:
        hello = board.hello()
        test.measurements.package_id = hello.get("package_id")
        test.measurements.protocol = hello.get("protocol")
        test.measurements.serial = str(hello.get("serial"))
        test.measurements.board = str(hello.get("board"))
        if hello.get("serial"):
            test.dut_id = str(hello["serial"])
        check = identity_check(ident, hello)
        test.measurements.identity = check.status
        if check.status != PASS:
            return htf.PhaseResult.STOP

    @htf.measures(
        htf.Measurement("selftest_passed").equals(True),
        htf.Measurement("selftest_exact_mismatches").equals(0),
    )
    @htf.plug(board=plug)
    def power_on_selftest(test: htf.TestApi, board: BoardPlug) -> None:
        st = board.info().get("selftest") or {}
        test.measurements.selftest_passed = bool(st.get("passed"))
        test.measurements.selftest_exact_mismatches = st.get("exact_mismatches")

    verify_measures = [
        htf.Measurement("verify_answered").equals(n),
        htf.Measurement("verify_verdict").equals(PASS).doc("the pass rule (core.selftest)"),
        htf.Measurement("verify_match_rate").doc(f"label match rate (threshold {thr:.3f})"),
    ]
    if exact:
        verify_measures.append(htf.Measurement("verify_exact_failed").equals(0))
    onchip = "onchip" in st_plan.policy.checks
    if onchip:
        verify_measures.append(htf.Measurement("verify_onchip").equals(PASS).doc(
            "the board's on-chip self-test (BIST registers)"))

    def judge(board: BoardPlug, plan: Plan):
        """The plan's answers and the verdict of the one pass rule (both modes)."""
        checks = plan.policy.checks
        answers = board.run(plan, batch_size, answer_width(pkg, plan.policy))
        regs = (board.info().get("selftest") or {}).get("bist") if "onchip" in checks else None
        return answers, decide(plan.expected, answers, plan.policy, onchip=regs, bist=plan.bist)

    @htf.measures(*verify_measures)
    @htf.plug(board=plug)
    def verify(test: htf.TestApi, board: BoardPlug) -> None:
        answers, v = judge(board, st_plan)
        test.measurements.verify_answered = int(answers.answered.sum())
        test.measurements.verify_verdict = v.reported
        test.measurements.verify_match_rate = v.match_rate
        if exact:
            test.measurements.verify_exact_failed = v.check("exact").failed
        if onchip:
            test.measurements.verify_onchip = v.check("onchip").status
        test.attach("verify.json", _json(v.to_dict()), "application/json")

    phases = [identify, power_on_selftest, verify]

    if challenge is not None:
        rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
        ch_plan = challenge_plan(pkg, challenge, rng)

        ch_measures = [
            htf.Measurement("challenge_answered").equals(len(ch_plan.expected)),
            htf.Measurement("challenge_verdict").equals(PASS).doc(
                "the pass rule (core.selftest) with the package's policy"),
            htf.Measurement("challenge_match_rate").doc(
                f"label match rate (threshold {ch_plan.policy.fingerprint_threshold:.3f})"),
        ]
        if "exact" in ch_plan.policy.checks:
            ch_measures.append(htf.Measurement("challenge_exact_failed").equals(0))

        @htf.PhaseOptions(name="challenge")
        @htf.measures(*ch_measures)
        @htf.plug(board=plug)
        def challenge_phase(test: htf.TestApi, board: BoardPlug) -> None:
            answers, v = judge(board, ch_plan)
            test.measurements.challenge_answered = int(answers.answered.sum())
            test.measurements.challenge_verdict = v.reported
            test.measurements.challenge_match_rate = v.match_rate
            if "exact" in ch_plan.policy.checks:
                test.measurements.challenge_exact_failed = v.check("exact").failed
        phases.append(challenge_phase)

    test = htf.Test(*phases, test_name=f"fpgaprint-{pkg.manifest.get('name', 'board')}",
                    package_id=pkg.package_id)
    return test


def _protocol() -> int:
    from fpgaprint.hw_targets.protocol import PROTOCOL_VERSION

    return PROTOCOL_VERSION


def _json(obj: Any) -> bytes:
    import json

    return json.dumps(obj).encode()


def run(test: htf.Test, record_json: str | Path | None = None) -> Any:
    """Execute headless; returns the OpenHTF TestRecord (optionally also written as JSON)."""
    records: list[Any] = []
    test.add_output_callbacks(records.append)
    if record_json is not None:
        from openhtf.output.callbacks import json_factory

        test.add_output_callbacks(json_factory.OutputToJSON(str(record_json), indent=2))
    test.execute(test_start=lambda: "unknown")
    return records[-1]


def summary(record: Any) -> tuple[list[str], str, str]:
    """(one line per phase with its failed measurements, the verdict, its reason) of a
    TestRecord: OpenHTF's PASS and FAIL are the verdict; anything else (an error, a lost
    link) is NO_VERDICT with OpenHTF's outcome details as the reason."""
    from openhtf.core.test_record import Outcome

    lines, failed = [], []
    for phase in record.phases:
        lines.append(f"{phase.name}: {phase.outcome.name}")
        for name, m in (phase.measurements or {}).items():
            if m.outcome.name != "PASS":
                value = m.measured_value.value if m.measured_value.is_value_set else "unset"
                lines.append(f"  {name} = {value} ({m.outcome.name})")
                failed.append(name)
    if record.outcome == Outcome.PASS:
        return lines, PASS, ""
    if record.outcome == Outcome.FAIL:
        return lines, FAIL, f"failed measurements: {', '.join(failed)}"
    details = "; ".join(str(d.description or d.code) for d in record.outcome_details or [])
    return lines, NO_VERDICT, f"OpenHTF outcome {record.outcome.name}" + (
        f": {details}" if details else "")
