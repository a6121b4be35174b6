"""End to end: a real package served by `fpgaprint board serve --pty`, checked by the harness.

The module builds one small package through the CLI (digits-mlp, 5 epochs, 48 intrinsic
examples: 24 embedded as self-test vectors, 24 kept by the verifier as the challenge set); every
board is a real `fpgaprint board serve` subprocess behind a real pty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from junitparser import JUnitXml

from fpgaprint.hw_targets.served import served_boards

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FPGAPRINT = str(BIN / "fpgaprint")
COUNT = 24


def assert_jenkins_junit(path: Path) -> None:
    """The JUnit file validates against the JUnit format Jenkins reads (tests/data/junit.xsd)."""
    from lxml import etree

    schema = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "data" / "junit.xsd")))
    schema.assertValid(etree.parse(str(path)))


def run(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([FPGAPRINT, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> dict[str, Path]:
    """model, embedded fingerprint, challenge set, package, and a look-alike package."""
    d = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "FINN_BUILD_DIR": str(d / "finn")}
    (d / "finn").mkdir()
    model, both, fp, ch, pkg = (d / n for n in ("model.pt", "both.npz", "fp.npz",
                                                "challenge.npz", "pkg"))
    for args in (
        ("train", "zoo:digits-mlp", "--epochs", "5", "--out", str(model)),
        ("fingerprint", "generate", str(model), "--count", str(2 * COUNT), "--steps", "20",
         "--out", str(both)),
    ):
        r = run(*args, env=env)
        assert r.returncode == 0, f"{args[0]} failed:\n{r.stdout}\n{r.stderr}"
    # one half is embedded in the package, the other stays with the verifier
    from fpgaprint.core.fpset import load_set

    s = load_set(both)
    s.subset(np.arange(COUNT)).save(fp)
    s.subset(np.arange(COUNT, 2 * COUNT)).save(ch)
    r = run("build", str(model), "--out", str(pkg), "--fingerprint", str(fp), "--allow-unsigned",
            env=env)
    assert r.returncode == 0, f"build failed:\n{r.stdout}\n{r.stderr}"
    # same files, another manifest: a valid package with another package id
    other = d / "other"
    shutil.copytree(pkg, other)
    m = json.loads((other / "manifest.json").read_text())
    m["name"] = m["name"] + "-rev2"
    (other / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    return {"dir": d, "model": model, "fp": fp, "challenge": ch, "pkg": pkg, "other": other}


def boards(*specs: tuple):
    """Start unsigned-package boards in parallel: each spec is (package, *serve args)."""
    return served_boards(*((pkg, "--allow-unsigned", *args) for pkg, *args in specs))


def verify(art, port: str, *extra: str) -> subprocess.CompletedProcess:
    return run("verify", "--port", port, "--package", str(art["pkg"]), "--allow-unsigned",
               *extra, timeout=120)


# ------------------------------------------------------------------------------- verify


def test_verify_pass_reports_every_vector(art, tmp_path):
    from fpgaprint.compiler.package import write_tar

    tar = write_tar(art["pkg"])
    with boards((art["pkg"], "--serial", "SN-0001")) as (b,):
        r = verify(art, b.port, "--json", str(tmp_path / "r.json"),
                   "--junit", str(tmp_path / "j.xml"))
        from_tar = run("verify", "--port", b.port, "--package", str(tar), "--allow-unsigned")
    tar.unlink()
    assert r.returncode == 0, r.stdout + r.stderr
    assert from_tar.returncode == 0, from_tar.stdout + from_tar.stderr
    assert "verdict: PASS" in r.stdout
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["status"] == "PASS" and rep["identity"]["serial"] == "SN-0001"
    vecs = rep["verdict"]["vectors"]
    assert len(vecs) == COUNT
    assert all(v["exact"] and v["raw_diff"] == 0 and v["answered"] for v in vecs)
    xml = JUnitXml.fromfile(str(tmp_path / "j.xml"))
    # the virtual board's on-chip self-test registers are emulated (no RTL there)
    assert [c.name for s in xml for c in s] == ["identity", "exact", "fingerprint", "onchip"]
    assert {c.classname for s in xml for c in s} == {"fpgaprint.verify.SN-0001"}
    assert xml.failures == 0 and xml.errors == 0
    times = [c.time for s in xml for c in s]
    assert 0 < times[0] < times[1] == times[2] <= next(iter(xml)).time  # HELLO; the vectors
    assert 0 <= times[3] <= next(iter(xml)).time  # INFO: the power-on self-test (ms)
    assert_jenkins_junit(tmp_path / "j.xml")


def test_build_ran_the_on_chip_self_test(art):
    from fpgaprint.compiler.bist.stage import cycle_tolerance

    rep = json.loads((art["pkg"] / "reports" / "build.json").read_text())["bist"]
    spec = json.loads((art["pkg"] / "hw" / "rtl" / "bist" / "bist.json").read_text())
    assert rep["simulated"] and rep["passed"] and rep["vectors"] == COUNT
    assert rep["signature_measured"] == rep["signature"] == spec["signature"]
    assert abs(rep["measured_cycles"] - rep["predicted_cycles"]) <= \
        cycle_tolerance(rep["predicted_cycles"])
    policy = json.loads((art["pkg"] / "selftest" / "policy.json").read_text())
    assert "onchip" in policy["checks"]


def test_bit_flips_fail_exact_check(art, tmp_path):
    with boards((art["pkg"], "--flip-bits", "20", "--seed", "3")) as (b,):
        r = verify(art, b.port, "--json", str(tmp_path / "r.json"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "verdict FAIL: exact:" in r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    exact = next(c for c in rep["verdict"]["checks"] if c["name"] == "exact")
    assert exact["status"] == "FAIL" and exact["failed"] > 0
    assert sum(1 for v in rep["verdict"]["vectors"] if v["exact"] is False) == exact["failed"]


def test_wrong_package_on_board_is_identity_fail(art):
    with boards((art["other"],)) as (b,):
        r = verify(art, b.port)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "identity mismatch: package_id: board reports" in r.stderr


def test_challenge_passes_healthy_board_and_fails_replay(art, tmp_path):
    with boards((art["pkg"],), (art["pkg"], "--replay")) as (good, replay):
        ok = verify(art, good.port, "--challenge", str(art["challenge"]),
                    "--json", str(tmp_path / "ok.json"))
        ok2 = verify(art, good.port, "--challenge", str(art["challenge"]),
                     "--json", str(tmp_path / "ok2.json"))
        bad = verify(art, replay.port, "--challenge", str(art["challenge"]))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok2.returncode == 0, ok2.stdout + ok2.stderr
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "fingerprint: match rate" in bad.stderr
    r1, r2 = (json.loads((tmp_path / f).read_text()) for f in ("ok.json", "ok2.json"))
    assert r1["mode"] == "challenge" and len(r1["verdict"]["vectors"]) == COUNT
    n1, n2 = r1["nonce"].split(","), r2["nonce"].split(",")
    assert len(n1) == 2 and all(len(n) == 32 for n in n1)  # 24 vectors / batch 16, 16-B nonces
    assert not set(n1) & set(n2)


def test_hung_board_gives_no_verdict(art, tmp_path):
    # answers HELLO, INFO and the first batch, then stays silent
    with boards((art["pkg"], "--hang-after", "3")) as (b,):
        r = verify(art, b.port, "--timeout", "0.3", "--retries", "1",
                   "--json", str(tmp_path / "r.json"))
    assert r.returncode == 3, r.stdout + r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["status"] == "NO_VERDICT" and "link error" in rep["reason"]
    answered = [v["answered"] for v in rep["verdict"]["vectors"]]
    assert answered.count(True) == 16 and answered.count(False) == COUNT - 16


def test_no_board_at_port_is_link_error(art, tmp_path):
    r = verify(art, str(tmp_path / "no-such-tty"), "--retries", "0")
    assert r.returncode == 3
    errors = [line for line in r.stderr.splitlines() if not line.startswith("warning: ")]
    assert errors == [f"error: cannot open board port {tmp_path / 'no-such-tty'}: No such "
                      "file or directory"]  # the OS reason once, no table of unanswered checks
    assert r.stdout == ""


def test_tampered_package_is_refused_before_connecting(art, tmp_path):
    bad = tmp_path / "pkg"
    shutil.copytree(art["pkg"], bad)
    with open(bad / "selftest" / "policy.json", "a") as f:
        f.write(" ")
    r = run("verify", "--port", "/dev/null", "--package", str(bad), "--allow-unsigned")
    assert r.returncode == 2
    assert "file changed: selftest/policy.json" in r.stderr


def test_signed_package_pinned_to_trusted_key(art, tmp_path):
    from fpgaprint.core.manifest import sign_manifest

    keys = tmp_path / "keys"
    for name in ("good", "other"):
        r = run("keys", "generate", "--out", str(keys / name))
        assert r.returncode == 0, r.stderr
    signed = tmp_path / "signed"
    shutil.copytree(art["pkg"], signed)
    sign_manifest(signed, keys / "good" / "signing.key")
    with boards((signed, "--trusted-key", str(keys / "good" / "signing.pub"))) as (b,):
        ok = run("verify", "--port", b.port, "--package", str(signed),
                 "--trusted-key", str(keys / "good" / "signing.pub"))
        wrong = run("verify", "--port", b.port, "--package", str(signed),
                    "--trusted-key", str(keys / "other" / "signing.pub"))
        unpinned = run("verify", "--port", b.port, "--package", str(signed))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert wrong.returncode == 2
    assert "not by the trusted key" in wrong.stderr
    assert unpinned.returncode == 2 and "which is not pinned" in unpinned.stderr
    unsigned = run("verify", "--port", "/dev/null", "--package", str(art["pkg"]))
    assert unsigned.returncode == 2


def test_challenge_set_of_another_model_is_refused(art, tmp_path):
    z = dict(np.load(art["challenge"]))
    z["source_sha256"] = np.array("0" * 64)
    np.savez(tmp_path / "foreign.npz", **z)
    r = verify(art, "/dev/null", "--challenge", str(tmp_path / "foreign.npz"))
    assert r.returncode == 2
    assert "challenge set comes from model 0000" in r.stderr


# ------------------------------------------------------------------------------- accept


def _db_rows(db: Path, run_id: int) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "select r.port, r.serial, r.status, r.n_vectors, r.n_answered, "
            "(select count(*) from accept_vectors v where v.result_id = r.id) "
            "from accept_results r where r.run_id = ? order by r.port", (run_id,)
        ).fetchall()
    finally:
        con.close()


def test_accept_three_boards_one_faulty(art, tmp_path):
    db = tmp_path / "acc.db"
    with boards((art["pkg"], "--serial", "A1"), (art["pkg"], "--serial", "B2", "--flip-bits",
                "20", "--seed", "3"), (art["pkg"], "--serial", "C3")) as bs:
        r = run("accept", "--ports", ",".join(b.port for b in bs), "--package", str(art["pkg"]),
                "--allow-unsigned", "--db", f"sqlite:///{db}", "--junit", str(tmp_path / "a.xml"),
                "--html", str(tmp_path / "a.html"), "--station", "line-7", timeout=180)
        ports = {b.port: s for b, s in zip(bs, ("A1", "B2", "C3"))}
    assert r.returncode == 1, r.stdout + r.stderr
    run_id = int(re.search(r"run (\d+) in", r.stdout).group(1))
    rows = _db_rows(db, run_id)
    assert sorted((ports[p], s, st, n, a, v) for p, s, st, n, a, v in rows) == [
        ("A1", "A1", "PASS", COUNT, COUNT, COUNT),
        ("B2", "B2", "FAIL", COUNT, COUNT, COUNT),
        ("C3", "C3", "PASS", COUNT, COUNT, COUNT),
    ]
    con = sqlite3.connect(db)
    assert con.execute("select status, station, finished_at is not null from accept_runs "
                       "where id = ?", (run_id,)).fetchone() == ("FAIL", "line-7", 1)
    xml = JUnitXml.fromfile(str(tmp_path / "a.xml"))
    assert sorted(s.name for s in xml) == ["accept A1", "accept B2", "accept C3"]
    # identity, exact, fingerprint, onchip (emulated on the virtual boards) per board
    assert len([c for s in xml for c in s]) == 12 and xml.failures == 2
    assert [(c.classname, c.name) for s in xml for c in s if c.is_failure] == [
        ("fpgaprint.accept.B2", "exact"), ("fpgaprint.accept.B2", "onchip")]
    assert_jenkins_junit(tmp_path / "a.xml")
    page = (tmp_path / "a.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "line-7" in page


def test_accept_all_good_passes_and_hung_board_is_no_verdict(art, tmp_path):
    db = f"sqlite:///{tmp_path}/acc.db"
    with boards((art["pkg"],), (art["pkg"],), (art["pkg"], "--hang-after", "1")) as bs:
        good = run("accept", "--ports", f"{bs[0].port},{bs[1].port}", "--package",
                   str(art["pkg"]), "--allow-unsigned", "--db", db, timeout=120)
        hung = run("accept", "--ports", ",".join(b.port for b in bs), "--package",
                   str(art["pkg"]), "--allow-unsigned", "--db", db, "--timeout", "0.3",
                   "--retries", "1", timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    assert hung.returncode == 3, hung.stdout + hung.stderr
    assert "no verdict" in hung.stderr


def test_kill_mid_run_keeps_committed_results(art, tmp_path):
    """kill -9 after the first commits: committed rows stay whole, nothing half-written."""
    db = tmp_path / "acc.db"
    with boards((art["pkg"], "--serial", "G1"), (art["pkg"], "--serial", "G2"),
                (art["pkg"], "--serial", "H3", "--hang-after", "2")) as bs:
        proc = subprocess.Popen(
            [FPGAPRINT, "accept", "--ports", ",".join(b.port for b in bs), "--package",
             str(art["pkg"]), "--allow-unsigned", "--db", f"sqlite:///{db}",
             "--timeout", "5", "--retries", "3"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 60
            committed = 0
            while time.monotonic() < deadline and proc.poll() is None:
                if db.exists():
                    con = sqlite3.connect(db, timeout=5)
                    try:
                        committed = con.execute("select count(*) from accept_results").fetchone()[0]
                    except sqlite3.OperationalError:
                        committed = 0  # tables not created yet
                    finally:
                        con.close()
                if committed >= 2:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "accept finished before it could be killed"
            assert committed >= 2
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(10)
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    run_id, status, finished = con.execute(
        "select id, status, finished_at from accept_runs").fetchone()
    assert (status, finished) == ("RUNNING", None)
    rows = _db_rows(db, run_id)
    assert sorted((s, st, n, a, v) for _, s, st, n, a, v in rows) == [
        ("G1", "PASS", COUNT, COUNT, COUNT), ("G2", "PASS", COUNT, COUNT, COUNT)
    ]
    from fpgaprint.harness.db import ResultStore

    with ResultStore(f"sqlite:///{db}") as store:  # the database is still usable
        assert store.start_run("s", "x", "x", []) == run_id + 1


def test_accept_into_postgresql(art, tmp_path):
    from test_harness_db import require_pg

    url = require_pg()
    with boards((art["pkg"], "--serial", "P1"), (art["pkg"], "--serial", "P2")) as bs:
        r = run("accept", "--ports", ",".join(b.port for b in bs), "--package", str(art["pkg"]),
                "--allow-unsigned", "--db", url, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fpgaprint_test:***@" in r.stdout.replace("\n", "")
    run_id = int(re.search(r"run (\d+) in", r.stdout).group(1))
    from fpgaprint.harness.db import ResultStore

    with ResultStore(url) as store:
        got = store.run(run_id)
    assert got["status"] == "PASS"
    assert sorted((x["serial"], x["vector_rows"]) for x in got["results"]) == [
        ("P1", COUNT), ("P2", COUNT)
    ]


# ------------------------------------------------------------------------------- OpenHTF


def test_openhtf_station_headless(art, tmp_path):
    from openhtf.core.test_record import Outcome

    from fpgaprint.harness.openhtf_station import make_test
    from fpgaprint.harness.openhtf_station import run as run_station

    with boards((art["pkg"], "--serial", "HTF-1"), (art["pkg"], "--flip-bits", "20", "--seed",
                "3"), (art["pkg"], "--replay")) as (good, flipped, replay):
        rec = run_station(make_test(art["pkg"], good.port, art["challenge"],
                                    allow_unsigned=True), tmp_path / "rec.json")
        bad = run_station(make_test(art["pkg"], flipped.port, allow_unsigned=True))
        rep = run_station(make_test(art["pkg"], replay.port, art["challenge"],
                                    allow_unsigned=True))
    assert rec.outcome == Outcome.PASS and rec.dut_id == "HTF-1"
    names = [p.name for p in rec.phases]
    assert names[-4:] == ["identify", "power_on_selftest", "verify", "challenge"]
    assert json.loads((tmp_path / "rec.json").read_text())["outcome"] == "PASS"
    assert bad.outcome == Outcome.FAIL
    verify_phase = next(p for p in bad.phases if p.name == "verify")
    assert verify_phase.measurements["verify_exact_failed"].outcome.name == "FAIL"
    assert rep.outcome == Outcome.FAIL
    ch = next(p for p in rep.phases if p.name == "challenge")
    assert ch.measurements["challenge_verdict"].outcome.name == "FAIL"


# ------------------------------------------------------------------------------- pytest plugin


def test_pytest_plugin_board_fixture(art, tmp_path):
    t = tmp_path / "test_hil.py"
    t.write_text(
        "import numpy as np\n"
        "def test_board_answers_golden(board):\n"
        "    board.hello()\n"
        "    v = board.package.vectors()\n"
        "    raw, labels = board.infer(v['inputs'])\n"
        "    assert np.array_equal(raw, v['golden_raw'])\n"
        "    assert board.client.identity['package_id'] == board.package.package_id\n"
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(t),
           "--rootdir", str(tmp_path)]
    with boards((art["pkg"],)) as (b,):
        r = subprocess.run(cmd + ["--board-port", b.port, "--board-package", str(art["pkg"]),
                                  "--board-allow-unsigned"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr
