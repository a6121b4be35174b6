"""The build's stage worker (`compiler/stage_runner.py`): forked from the process's forkserver,
it works in the build's environment and directory as they are when the worker starts, not
in the forkserver's."""

from __future__ import annotations

import os

from fpgaprint.compiler.stage_runner import StageRunner

MARK = "FPGAPRINT_STAGE_WORKER_MARK"


def test_the_worker_takes_the_builds_environment_and_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(MARK, raising=False)
    for d in ("a", "b"):  # a build's folder: the worker's library warnings go to its log
        (tmp_path / d / "finn").mkdir(parents=True)
    with StageRunner(tmp_path / "a" / "finn") as first:  # the forkserver runs from here on
        assert first._worker().submit(os.getenv, MARK).result() is None
    monkeypatch.setenv(MARK, "this build")
    monkeypatch.chdir(tmp_path)
    with StageRunner(tmp_path / "b" / "finn") as runner:
        pool = runner._worker()
        pid, env, cwd = (pool.submit(f, *a).result()
                         for f, a in ((os.getpid, ()), (os.getenv, (MARK,)), (os.getcwd, ())))
    assert pid != os.getpid()
    assert env == "this build"
    assert cwd == str(tmp_path)
