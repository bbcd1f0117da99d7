"""`qwen-sft prepare` and `check` as a user runs them (in-process): what --output / --report may replace, and no
tracebacks."""

import json

import pytest

from qwen_sft.cli import main


def prepare(tmp_path, capsys, *args):
    code = main(["prepare", *[str(a) for a in args]])
    return code, capsys.readouterr().err


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    return path


def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, capsys, src):
    before = src.read_text()
    for extra in ([], ["--overwrite"]):
        code, err = prepare(tmp_path, capsys, "--input", src, "--output", src, *extra)
        assert code == 2 and "is also an --input" in err
    code, err = prepare(tmp_path, capsys, "--input", tmp_path, "--output", src, "--overwrite")  # via its directory
    assert code == 2 and "is also an --input" in err
    assert src.read_text() == before


def test_output_that_is_a_directory_or_under_a_file(tmp_path, capsys, src):
    (tmp_path / "outdir").mkdir()
    code, err = prepare(tmp_path, capsys, "--input", src, "--output", tmp_path / "outdir", "--overwrite")
    assert (
        code == 2
        and err.strip() == f"error: {tmp_path / 'outdir'}: is a directory; --output names the JSONL file to write"
    )
    code, err = prepare(tmp_path, capsys, "--input", src, "--output", src / "x.jsonl")
    assert code == 2 and "is a file, not a directory" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir", "raw.jsonl"]  # no temp file left behind


def test_output_in_a_new_directory(tmp_path, capsys, src):
    out = tmp_path / "new" / "sub" / "train.jsonl"
    code, _ = prepare(tmp_path, capsys, "--input", src, "--output", out)
    assert code == 0 and json.loads(out.read_text())["messages"][1]["content"] == "a"


def test_check_report_never_replaces_a_data_file(tmp_path, capsys, src, monkeypatch):
    # Was: `check d.jsonl --report d.jsonl` (or a data file at the default report path) replaced the data with the
    # report.
    before = src.read_text()
    assert main(["check", str(src), "--report", str(src)]) == 2
    assert "is one of the data files being checked" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sft/outputs/data_reports").mkdir(parents=True)
    mine = tmp_path / "sft/outputs/data_reports/raw.jsonl"
    mine.write_text(before)
    assert main(["check", "sft/outputs/data_reports/raw.jsonl", "--report", "sft/outputs/data_reports/raw.jsonl"]) == 2
    assert src.read_text() == before and mine.read_text() == before
    capsys.readouterr()
    assert main(["check", str(src), "--report", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
