"""The run's files are written whole and never through a symbolic link: a run directory from elsewhere (a shared
folder, a clone, the UI's workspace) must not make training, eval or the UI write into another file."""

import json

import pytest

from qwen_sft.config import build_config, save_config
from qwen_sft.data.report import save_report
from qwen_sft.fileio import replacing, write_text


def test_a_link_at_the_name_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("metrics.json", "config.yaml", "data_report.json"):
        (run / name).symlink_to(victim)
    write_text(run / "metrics.json", "{}")
    save_config(build_config({"run_name": "x"}), run / "config.yaml")
    save_report({"rows_read": 1}, run / "data_report.json")
    assert victim.read_text() == "keep me"
    assert not any(p.is_symlink() for p in run.iterdir())
    assert (run / "metrics.json").read_text() == "{}" and json.loads((run / "data_report.json").read_text()) == {"rows_read": 1}
    assert "run_name: x" in (run / "config.yaml").read_text()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "data_report.json", "metrics.json"]  # no temp


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    monkeypatch.setattr("os.getpid", lambda: 7)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / ".out.json.tmp-7").symlink_to(victim)
    write_text(tmp_path / "out.json", "new")
    assert victim.read_text() == "keep me" and (tmp_path / "out.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "victim"]


def test_an_error_while_writing_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(path) as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with replacing(tmp_path / "curve.png", "wb") as f:
        f.write(b"\x89PNG")
    assert (tmp_path / "curve.png").read_bytes() == b"\x89PNG"
