"""CLI usage errors (exit 2, before any board is touched) and the pytest plugin without a board."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fpgaprint.cli import main
from fpgaprint.core.errors import InputError
from fpgaprint.harness.accept import parse_ports

FPGAPRINT = str(Path(sys.executable).parent / "fpgaprint")


def _exit(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def test_verify_missing_package_is_input_error(tmp_path, capsys):
    assert _exit(["verify", "--port", "/dev/null", "--package", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: package not found" in capsys.readouterr().err


def test_accept_requires_ports_and_package(capsys):
    assert _exit(["accept", "--package", "x"]) == 2
    assert "--ports: required" in capsys.readouterr().err


@pytest.mark.parametrize(
    "spec, msg",
    [("", "comma-separated"), ("a,,b", "comma-separated"), ("a,b,a", "port a given more")],
)
def test_parse_ports_errors(spec, msg):
    with pytest.raises(InputError, match=msg):
        parse_ports(spec)


def test_parse_ports_keeps_order():
    assert parse_ports("socket://h:1, /dev/pts/3") == ["socket://h:1", "/dev/pts/3"]


def test_plugin_imports_nothing_heavy():
    code = (
        "import sys, fpgaprint.harness.pytest_plugin\n"
        "heavy = [m for m in ('fpgaprint.core.package', 'fpgaprint.harness.client', 'numpy',"
        " 'serial') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_board_fixture_skips_without_options(tmp_path):
    t = tmp_path / "test_hil.py"
    t.write_text("def test_needs_board(board):\n    raise AssertionError('must not run')\n")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(t),
         "--rootdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout
    assert "no board under test: pass --board-port URL and --board-package DIR" in r.stdout
    h = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert "--board-port" in h.stdout and "--board-package" in h.stdout
