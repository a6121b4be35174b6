"""`make demo` keeps its signing key across runs: a host that trusts the demo's public key
(`fpgaprint keys trust build/demo/keys/signing.pub`) keeps trusting the next run's package."""

from __future__ import annotations

from fpgaprint.harness.demo import clear_keeping_key


def test_a_second_run_keeps_the_key_pair_and_nothing_else(tmp_path, run_cli):
    out = tmp_path / "demo"
    assert clear_keeping_key(out) is False and list(out.iterdir()) == []
    code, _, err = run_cli("keys", "generate", "--out", out / "keys")
    assert code == 0, err
    pair = {p.name: p.read_bytes() for p in (out / "keys").iterdir()}
    (out / "package").mkdir()
    (out / "package" / "manifest.json").write_text("{}")
    (out / "demo.log").write_text("old run")
    assert clear_keeping_key(out) is True
    assert [p.name for p in out.iterdir()] == ["keys"]
    assert {p.name: p.read_bytes() for p in (out / "keys").iterdir()} == pair


def test_half_a_key_pair_is_not_kept(tmp_path):
    out = tmp_path / "demo"
    (out / "keys").mkdir(parents=True)
    (out / "keys" / "signing.pub").write_text("a public key without its private key")
    assert clear_keeping_key(out) is False and list(out.iterdir()) == []
