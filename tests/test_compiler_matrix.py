"""`fpgaprint build --matrix`: builds as Dask tasks on a real LocalCluster, serial builds in
this process, a worker killed mid-build, reruns, failed builds and the matrix file's errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from fpgaprint.compiler.matrix import build_matrix, load_matrix, run_matrix
from fpgaprint.core.cluster import connect
from fpgaprint.core.errors import InputError

NAMES = ["digits-Pynq-Z1", "digits-Pynq-Z1-w6", "digits-ZCU104", "digits-ZCU104-w6"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, keypair) -> Path:
    """A trained digits-mlp checkpoint, a fingerprint set of it and a 4-build matrix file."""
    from fpgaprint.compiler import modelio, zoo
    from fpgaprint.fingerprint.generate import generate
    from fpgaprint.fingerprint.source import load_model

    d = tmp_path_factory.mktemp("matrix")
    modelio.save(zoo.make("digits-mlp", seed=0, epochs=10), d / "model.pt")
    fs = generate(load_model(d / "model.pt"), "robust", 32, seed=0)
    fs.with_threshold(0.5, {"method": "fixed for the test"}).save(d / "fp.npz")
    (d / "broken.onnx").write_bytes(b"not a model")
    (d / "matrix.yaml").write_text(yaml.safe_dump({
        "models": [{"model": "model.pt", "name": "digits"}],
        "boards": ["Pynq-Z1", "ZCU104"],
        "config": {"equivalence_samples": 4},
        "overrides": [{}, {"name": "w6", "weight_bits": 6, "act_bits": 6}],
        "fingerprint": "fp.npz",
        "key": str(keypair[0]),
    }))
    return d


@pytest.fixture(scope="module")
def serial(inputs, tmp_path_factory):
    """The matrix built one build after the other in this process."""
    out = tmp_path_factory.mktemp("serial")
    return build_matrix(inputs / "matrix.yaml", out, scheduler="serial")


def _ids(result) -> dict[str, str]:
    return {r["name"]: r["package_id"] for r in result.records}


def test_serial_matrix_builds_packages_and_reports(serial, inputs):
    assert [r["name"] for r in serial.records] == NAMES
    assert all(r["status"] == "ok" for r in serial.records), serial.records
    ids = _ids(serial)
    assert len(set(ids.values())) == 4 and all(len(i) == 64 for i in ids.values())
    for r in serial.records:
        pkg = serial.out / r["name"]
        assert hashlib.sha256((pkg / "manifest.json").read_bytes()).hexdigest() == \
            r["package_id"]
        report = json.loads((pkg / "reports" / "build.json").read_text())
        assert r["estimated"]["ii_cycles"] == report["estimates"]["max_cycles"]
        assert r["resources"]["LUT"]["used"] == round(
            report["estimates"]["resources_total"]["LUT"], 1)
        assert r["equivalence"]["ok"] and r["fit"].startswith("fits")
        stitched = (report.get("rtl") or {}).get("stitched") or {}
        if stitched.get("built"):  # the build simulated its RTL: measured cycles reported
            assert r["measured"]["ii_cycles"] == stitched["ii_cycles"]
        else:
            assert r["measured"] is None
    bits = [json.loads((serial.out / n / "reports" / "build.json").read_text())["config"]
            ["weight_bits"] for n in NAMES]
    assert bits == [4, 6, 4, 6]
    doc = json.loads((serial.out / "matrix.json").read_text())
    assert doc["counts"] == {"ok": 4, "skipped": 0, "failed": 0}
    md = (serial.out / "matrix.md").read_text()
    assert all(i in md for i in ids.values())
    assert [r["signature"] for r in serial.records] == ["signed"] * 4
    lines = md.splitlines()
    head = [c.strip() for c in lines[4].strip("|").split("|")]
    assert [[c.strip() for c in ln.strip("|").split("|")][head.index("signature")]
            for ln in lines[6:10]] == ["signed"] * 4
    page = (serial.out / "matrix.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "digits-ZCU104-w6" in page


def test_one_build_alone_gives_the_matrix_package_id(serial, inputs, tmp_path, keypair):
    """The matrix adds nothing to a build: `build_model` alone makes the same package."""
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig

    build_model(str(inputs / "model.pt"), "ZCU104", tmp_path / "one",
                BuildConfig(equivalence_samples=4), fingerprint=inputs / "fp.npz",
                key=keypair[0])
    got = hashlib.sha256((tmp_path / "one" / "manifest.json").read_bytes()).hexdigest()
    assert got == _ids(serial)["digits-ZCU104"]


def test_local_cluster_gives_the_serial_package_ids_with_a_worker_killed_mid_build(
        serial, inputs, tmp_path):
    """The matrix on a real LocalCluster gives the serial package ids, even when the worker
    process running a build gets SIGKILL: Dask gives the task to a worker again, the
    interrupted build reruns (resuming its steps), the other is kept. Two builds, one per
    worker."""
    out = tmp_path / "out"
    spec = yaml.safe_load((inputs / "matrix.yaml").read_text())
    spec["overrides"] = [{}]
    (inputs / "two-boards.yaml").write_text(yaml.safe_dump(spec))
    matrix = load_matrix(inputs / "two-boards.yaml", out)
    killed: dict = {}
    with connect("local", 2) as cluster:
        assert len(cluster.workers) == 2 and cluster.dashboard
        client = cluster.client
        pids = client.run(os.getpid)

        def kill_first_running() -> None:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not killed:
                running = list((out / ".matrix").glob("*.running")) if out.is_dir() else []
                if running:
                    name = running[0].name.removesuffix(".running")
                    worker = json.loads(running[0].read_text())["worker"]
                    time.sleep(0.5)  # well inside the build
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.update(name=name, worker=worker)
                    return
                time.sleep(0.05)

        t = threading.Thread(target=kill_first_running)
        t.start()
        try:
            res = run_matrix(matrix, out, cluster)
        finally:
            t.join()
    assert killed, "no build was seen running"
    recs = {r["name"]: r for r in res.records}
    assert [r["status"] for r in res.records] == ["ok"] * 2, res.records
    assert _ids(res) == {n: i for n, i in _ids(serial).items() if n in recs} and len(recs) == 2
    assert all(r["worker"].startswith("tcp://127.0.0.1:") for r in res.records)
    assert recs[killed["name"]]["attempts"] == 2
    assert recs[killed["name"]]["worker"] != killed["worker"]
    assert not list((out / ".matrix").glob("*.running"))
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["counts"]["ok"] == 2 and "(attempt 2)" in (out / "matrix.md").read_text()
    assert [r["attempts"] for r in res.records if r["name"] != killed["name"]] == [1]
    # the dashboard died with the cluster: the reports do not point at it
    dashboard = cluster.dashboard.split("//", 1)[-1]
    for report in ("matrix.json", "matrix.md", "matrix.html"):
        text = (out / report).read_text()
        assert "dashboard" not in text.lower() and dashboard not in text, report


def test_rerun_skips_present_packages_and_rebuilds_changed_inputs(serial, inputs, tmp_path):
    res = build_matrix(inputs / "matrix.yaml", serial.out, scheduler="serial")
    assert [r["status"] for r in res.records] == ["skipped"] * 4
    assert _ids(res) == _ids(serial)
    assert all(r["seconds"] < 5 for r in res.records)
    # a changed input (equivalence vectors) is built again, resuming its unchanged steps
    changed = tmp_path / "matrix.yaml"
    spec = yaml.safe_load((inputs / "matrix.yaml").read_text())
    spec["boards"] = ["ZCU104"]
    spec["overrides"] = [{}]
    spec["models"] = [{"model": str(inputs / "model.pt"), "name": "digits"}]
    spec["config"]["equivalence_samples"] = 5
    spec["fingerprint"] = str(inputs / "fp.npz")
    changed.write_text(yaml.safe_dump(spec))
    res2 = build_matrix(changed, serial.out, scheduler="serial")
    (rec,) = res2.records
    assert rec["status"] == "ok" and rec["name"] == "digits-ZCU104"
    assert rec["steps_reused"] >= 1  # the build's own resume


def test_failed_build_is_reported_and_never_stops_the_others(inputs, tmp_path, run_cli):
    spec = {"models": [{"model": "model.pt", "name": "digits"},
                       {"model": "broken.onnx", "name": "broken"}],
            "boards": ["ZCU104"], "config": {"equivalence_samples": 4}}
    path = inputs / "two.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, out, err = run_cli("build", "--matrix", path, "--out", tmp_path / "m",
                             "--scheduler", "serial")
    assert code == 2, err
    assert "1 of 2 builds failed, first broken-ZCU104" in err
    doc = json.loads((tmp_path / "m" / "matrix.json").read_text())
    recs = {r["name"]: r for r in doc["builds"]}
    assert recs["digits-ZCU104"]["status"] == "ok"
    assert recs["digits-ZCU104"]["package_id"] is None  # no fingerprint: no package
    assert recs["digits-ZCU104"]["signature"] is None
    assert recs["broken-ZCU104"]["status"] == "failed"
    assert "broken.onnx" in recs["broken-ZCU104"]["error"]
    assert "broken.onnx" in (tmp_path / "m" / "matrix.md").read_text()


@pytest.mark.parametrize("spec, message", [
    ({"models": []}, "models: List should have at least 1 item"),
    ({"models": ["zoo:digits-mlp"], "boards": ["Nope"]}, "unknown board"),
    ({"models": ["zoo:digits-mlp"], "overrides": [{"weight_bit": 3}]},
     "overrides[0]: unknown config key(s) weight_bit"),
    ({"models": ["zoo:digits-mlp"], "overrides": [{"weight_bits": 99}]},
     "overrides[0]: config weight_bits"),
    ({"models": ["zoo:digits-mlp"], "config": {"weight_bit": 3}},
     ": config: unknown config key(s) weight_bit"),
    ({"models": ["zoo:digits-mlp"], "config": {"weight_bits": 99}, "overrides": [{}, {}]},
     ": config: config weight_bits"),
    ({"models": ["nothere.pt"]}, "models[0] nothere.pt: no such file"),
    ({"models": ["zoo:digits-mlp"], "colour": 1}, "colour: Extra inputs are not permitted"),
    ({"models": ["zoo:digits-mlp"], "overrides": [{"name": "a"}, {"name": "a"}]},
     "two builds would be named digits-mlp-Pynq-Z1-a"),
])
def test_matrix_file_errors_name_the_file_and_entry(tmp_path, spec, message):
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError) as e:
        load_matrix(p, tmp_path / "out", unsigned=True)
    assert str(e.value).startswith(str(p)) and message in str(e.value), str(e.value)


def test_matrix_expands_sweeps_and_finn_key_names(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump({
        "models": ["zoo:digits-mlp"], "boards": ["Pynq-Z1"],
        "overrides": [{}, {"name": "fast", "clock_ns": 5.0}],
        "sweep": {"target_fps": [1000, 10000]}, "unsigned": True}))
    m = load_matrix(p, tmp_path / "out")
    assert [j.name for j in m.jobs] == [
        "digits-mlp-Pynq-Z1-target_fps-1000", "digits-mlp-Pynq-Z1-target_fps-10000",
        "digits-mlp-Pynq-Z1-fast_target_fps-1000", "digits-mlp-Pynq-Z1-fast_target_fps-10000"]
    assert [(j.config["target_fps"], j.config["clock_ns"]) for j in m.jobs] == [
        (1000, None), (10000, None), (1000, 5.0), (10000, 5.0)]
    assert len({j.inputs for j in m.jobs}) == 4


@pytest.mark.parametrize("args, message", [
    (("zoo:digits-mlp", "--matrix", "m.yaml"), "give one"),
    (("--scheduler", "local", "zoo:digits-mlp"), "--scheduler: only with --matrix"),
    (("--matrix", "m.yaml", "--weight-bits", "3"), "--weight-bits: not with --matrix"),
    (("--matrix", "m.yaml", "--scheduler", "http://x"), "--scheduler 'http://x': expected"),
    ((), "give MODEL, or --matrix"),
])
def test_build_cli_refuses_mixed_forms(run_cli, tmp_path, args, message):
    code, _, err = run_cli("build", *args, "--out", tmp_path / "o")
    assert code == 2 and message in err, err


def test_an_unsigned_package_is_marked_in_the_matrix_reports(inputs, tmp_path):
    spec = {"models": [{"model": "model.pt", "name": "digits"}], "boards": ["ZCU104"],
            "config": {"equivalence_samples": 4}, "fingerprint": "fp.npz", "unsigned": True}
    path = inputs / "unsigned.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = build_matrix(path, tmp_path / "m", scheduler="serial")
    (rec,) = res.records
    assert rec["status"] == "ok" and len(rec["package_id"]) == 64
    assert rec["signature"] == "UNSIGNED"
    assert not (tmp_path / "m" / "digits-ZCU104" / "manifest.sig").exists()
    md = (tmp_path / "m" / "matrix.md").read_text().splitlines()
    head = [c.strip() for c in md[4].strip("|").split("|")]
    row = [c.strip() for c in md[6].strip("|").split("|")]
    assert row[head.index("signature")] == "UNSIGNED"
    assert "<td>UNSIGNED</td>" in (tmp_path / "m" / "matrix.html").read_text()
    assert "dashboard" not in (tmp_path / "m" / "matrix.json").read_text()
