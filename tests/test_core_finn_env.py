"""FINN+'s settings follow the build directory of each build in one process."""

from __future__ import annotations


def test_each_build_directory_receives_finn_generated_folders(tmp_path, monkeypatch):
    from finn.util.basic import make_build_dir

    from fpgaprint.core.finn_env import ensure_finn

    monkeypatch.delenv("FINN_BUILD_DIR", raising=False)
    for name in ("first", "second"):
        ensure_finn(tmp_path / name)
        made = make_build_dir("code_gen_")
        assert str(made).startswith(str((tmp_path / name).resolve()) + "/"), (name, made)
