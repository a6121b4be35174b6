"""The wheel installs one namespace, `fpgaprint`, and works in a clean virtual environment."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"fpgaprint": "fpgaprint", "core": "fpgaprint/core", "compiler": "fpgaprint/compiler",
           "fingerprint": "fpgaprint/fingerprint", "hw_targets": "fpgaprint/hw_targets",
           "harness": "fpgaprint/harness"}


def test_wheel_holds_only_fpgaprint_and_runs_in_a_clean_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(dist), str(ROOT)], check=True,
                   capture_output=True, timeout=300)
    (whl,) = dist.glob("fpgaprint-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"fpgaprint", whl.name.split("-py")[0] + ".dist-info"}, tops
    assert "fpgaprint/core/boards.yaml" in names
    for folder, installed in FOLDERS.items():  # every source module made it into the wheel
        for src in (ROOT / folder).rglob("*.py"):
            rel = src.relative_to(ROOT / folder).as_posix()
            assert f"{installed}/{rel}" in names, f"{folder}/{rel} is not in the wheel"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", str(whl)], check=True, capture_output=True, timeout=300)
    # third-party packages from this environment, on PYTHONPATH (so no .pth file of this
    # environment, such as the editable install's finder, takes part)
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    code = ("import fpgaprint, fpgaprint.cli, fpgaprint.core.selftest, fpgaprint.compiler.build,"
            " fpgaprint.harness.verify, fpgaprint.hw_targets.backends.virtual;"
            " print(fpgaprint.__file__)")
    r = subprocess.run([str(py), "-c", code], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(venv)
    r = subprocess.run([str(venv / "bin" / "fpgaprint"), "boards"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Pynq-Z1" in r.stdout, r.stderr
