"""OpenHTF station: a `BoardPlug` around BoardClient and a test of four or five phases.

Phases: identify (package id, protocol), power-on self-test (the board's own claim), verify
(the package's embedded vectors, host-side verdict) and, with a verifier-held fingerprint set,
challenge, then `confident_verdict`. The verify and challenge phases judge the board with
`verify_board`, as `fpgaprint verify` (and `verify --challenge`) does, on the plug's
connection: the same checks, verdict and reason. The power-on self-test is recorded, never
decisive (verify does not decide from the board's claim either). Every decision is a
measurement with a validator, and OpenHTF's outcome is the verdict by one rule (`NoVerdict`):
PASS, FAIL, and ERROR for NO_VERDICT. Runs headless (no web UI) as `fpgaprint station`
(harness/cli_station.py):

    fpgaprint station --port /dev/pts/5 --package build/pkg [--challenge FP.npz] [--json REC]
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import openhtf as htf
from openhtf.core.base_plugs import BasePlug
from openhtf.core.test_record import Outcome, PhaseOutcome

from fpgaprint.core.errors import LinkError
from fpgaprint.harness.verdict import FAIL, NO_VERDICT, PASS, BoardOutcome, identity_check
from fpgaprint.harness.verify import (
    DEFAULT_BATCH,
    LinkSettings,
    Plan,
    challenge_plan,
    expected_identity,
    load_package,
    selftest_plan,
    verify_board,
)


class NoVerdict(Exception):
    """No confident verdict (NO_VERDICT, exit 3), raised by the last phase.

    The one rule between fpgaprint's verdict and OpenHTF's outcome, both ways (`summary`):

    - PASS: every measurement passes; OpenHTF outcome PASS.
    - FAIL: a decisive measurement fails (`verdict_measurement` fails on FAIL); outcome FAIL.
    - NO_VERDICT: the verdict measurements hold NO_VERDICT, marginal but not failed, so
      the test goes on (a later FAIL still decides); its last phase, `confident_verdict`,
      raises NoVerdict with their reasons: outcome ERROR, outcome detail `NoVerdict`. Any
      other ERROR (a lost link at HELLO, a port that cannot be opened) is NO_VERDICT too.

    Validators fail only where verify says FAIL, so the station's verdict is verify's.
    """


class _NotFailed:
    """A verdict measurement's validator: FAIL (or anything unknown) fails, PASS passes,
    NO_VERDICT passes as marginal (`NoVerdict`)."""

    def __call__(self, value: Any) -> bool:
        return value in (PASS, NO_VERDICT)

    def is_marginal(self, value: Any) -> bool:
        return value == NO_VERDICT

    def __str__(self) -> str:
        return f"not {FAIL} ({NO_VERDICT} is marginal and makes the outcome ERROR)"


def _none_failed(value: Any) -> bool:
    """No vector failed (0), or the exact check was not judged (None: the board's identity
    failed, a FAIL the verdict measurement holds)."""
    return value is None or value == 0


def verdict_measurement(name: str, doc: str) -> htf.Measurement:
    """A measurement holding a verdict (PASS, FAIL, NO_VERDICT) by the `NoVerdict` rule."""
    return htf.Measurement(name).with_validator(_NotFailed()).doc(doc)


def record_verdict(test: htf.TestApi, phase: str, status: str, reason: str) -> None:
    """Set a judging phase's verdict measurement (`PHASE_verdict`); a NO_VERDICT's reason is
    kept for `confident_verdict`."""
    test.measurements[f"{phase}_verdict"] = status
    if status == NO_VERDICT:
        test.state.setdefault(NO_VERDICT, []).append(f"{phase}: {reason}")


@htf.PhaseOptions(name="confident_verdict")
def confident_verdict(test: htf.TestApi) -> None:
    """The last phase: NoVerdict (outcome ERROR) when a phase recorded NO_VERDICT and none
    failed; otherwise the phases' own outcome (PASS or FAIL) is the verdict."""
    if any(p.outcome == PhaseOutcome.FAIL for p in test.test_record.phases):
        return
    reasons = test.state.get(NO_VERDICT)
    if reasons:
        raise NoVerdict("; ".join(reasons))


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

    def verify(self, pkg: Any, plan: Plan, settings: LinkSettings) -> BoardOutcome:
        """Judge the board by `plan` as `fpgaprint verify` does (`verify_board`), on this
        plug's connection: identity, the board's BIST registers, the vectors, the verdict. A
        lost link is NO_VERDICT and a challenge answer not bound to its nonce is FAIL in the
        outcome, as in verify; nothing is raised."""
        return verify_board(self.port, pkg, plan, settings, client_factory=self._lent)

    @contextlib.contextmanager
    def _lent(self, port: str, *, deadline: float | None = None, **_: Any):
        """This plug's open client for one verification, bounded by `deadline` seconds from
        now as a client of its own would be; left open afterwards."""
        pipe = self.client.pipe
        before = pipe.deadline
        if deadline is not None:
            pipe.deadline = time.monotonic() + deadline
        try:
            yield self.client
        finally:
            pipe.deadline = before

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
        htf.Measurement("selftest_passed").doc(
            "the board's own claim (recorded; the host decides in verify, from its answers)"),
        htf.Measurement("selftest_exact_mismatches").doc("the board's own claim"),
    )
    @htf.plug(board=plug)
    def power_on_selftest(test: htf.TestApi, board: BoardPlug) -> None:
        try:
            st = board.info().get("selftest") or {}
        except LinkError:  # as in verify: the verify phase asks again and judges
            st = {}
        test.measurements.selftest_passed = st.get("passed")
        test.measurements.selftest_exact_mismatches = st.get("exact_mismatches")

    settings = LinkSettings(timeout, retries, batch_size)

    def judging_phase(name: str, plan: Plan, doc: str) -> Any:
        """The phase that judges the board by `plan` (`BoardPlug.verify`, as verify does) and
        records the outcome as `NAME_...` measurements and a NAME.json attachment."""
        checks = plan.policy.checks
        measures = [
            verdict_measurement(f"{name}_verdict",
                                f"{doc}: verify's verdict (the pass rule, core.selftest)"),
            htf.Measurement(f"{name}_reason").doc("verify's reason for the verdict"),
            htf.Measurement(f"{name}_answered").doc(f"vectors answered of {len(plan.expected)}"),
            htf.Measurement(f"{name}_match_rate").doc(
                f"label match rate (threshold {plan.policy.fingerprint_threshold:.3f})"),
        ]
        if "exact" in checks:
            measures.append(htf.Measurement(f"{name}_exact_failed").with_validator(
                _none_failed).doc(
                "vectors whose raw output or label differs from the golden model's"))
        if "onchip" in checks:
            measures.append(verdict_measurement(
                f"{name}_onchip", "the board's on-chip self-test (BIST registers)"))
        if plan.mode == "challenge":
            measures.append(verdict_measurement(
                f"{name}_binding", "every answer bound to its nonce and inputs"))

        @htf.PhaseOptions(name=name)
        @htf.measures(*measures)
        @htf.plug(board=plug)
        def phase(test: htf.TestApi, board: BoardPlug) -> None:
            o = board.verify(pkg, plan, settings)
            v = o.verdict
            m = test.measurements
            record_verdict(test, name, o.status, o.reason)
            m[f"{name}_reason"] = o.reason
            m[f"{name}_answered"] = o.answered
            m[f"{name}_match_rate"] = o.match_rate
            if "exact" in checks:
                m[f"{name}_exact_failed"] = o.exact_failed
            if "onchip" in checks:  # not judged when the board's identity failed
                c = v.check("onchip")
                m[f"{name}_onchip"] = NO_VERDICT if c is None else c.status
            if plan.mode == "challenge":  # a binding check is there when an answer broke it
                bound = v.check("binding")
                m[f"{name}_binding"] = PASS if bound is None else bound.status
            test.attach(f"{name}.json", _json(o.to_dict()), "application/json")

        return phase

    phases = [identify, power_on_selftest,
              judging_phase("verify", st_plan, "the package's embedded vectors")]
    if challenge is not None:
        rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
        phases.append(judging_phase("challenge", challenge_plan(pkg, challenge, rng),
                                    "the verifier-held challenge set"))
    phases.append(confident_verdict)

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
    """(one line per phase with its failed and marginal measurements, the verdict, its reason)
    of a TestRecord, by the `NoVerdict` rule: OpenHTF's PASS and FAIL are the verdict; ERROR
    (NoVerdict, a lost link) or any other outcome is NO_VERDICT, with NoVerdict's reasons or
    OpenHTF's outcome details as the reason."""
    lines, failed = [], []
    for phase in record.phases:
        lines.append(f"{phase.name}: {phase.outcome.name}")
        for name, m in (phase.measurements or {}).items():
            if m.outcome.name != "PASS" or m.marginal:
                value = m.measured_value.value if m.measured_value.is_value_set else "unset"
                lines.append(f"  {name} = {value} ("
                             + ("marginal" if m.outcome.name == "PASS" else m.outcome.name) + ")")
                if m.outcome.name != "PASS":
                    failed.append(name)
    if record.outcome == Outcome.PASS and not record.marginal:
        return lines, PASS, ""
    if record.outcome == Outcome.FAIL:
        return lines, FAIL, f"failed measurements: {', '.join(failed)}"
    details = record.outcome_details or []
    if [d.code for d in details] == [NoVerdict.__name__]:
        return lines, NO_VERDICT, details[0].description
    why = "; ".join(str(d.description or d.code) for d in details)
    return lines, NO_VERDICT, f"OpenHTF outcome {record.outcome.name}" + (
        f": {why}" if why else "") + (" (marginal)" if record.marginal else "")
