"""Issue #18: every command checks its paths and numbers before any work, and never replaces a file it did not
write. In-process (qwen_sft.cli.main), as a user runs the commands."""

import json

import pytest

from qwen_sft.cli import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(3)))
    return path


@pytest.mark.parametrize("args,message", [
    (["check", ""], "items: empty path"),
    (["prepare", "--input", "", "--output", "o.jsonl"], "input: empty path"),
    (["prepare", "--format", "sample", "--output", ""], "output: empty path"),
    (["train", "dataset="], "dataset: empty path"),
    (["demo", "--workdir", ""], "workdir: empty path"),
    (["merge", "", "-o", "x"], "adapter: empty path"),
])
def test_empty_paths_are_refused(tmp_path, capsys, monkeypatch, data, args, message):
    """case 7: an empty path (an unset variable) meant "this directory": check / prepare read every data file there."""
    monkeypatch.chdir(tmp_path)
    code, err = run(capsys, *args)
    assert code == 2 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]  # nothing written


@pytest.mark.slow
def test_check_report_replaces_only_its_own_reports(tmp_path, capsys, data):
    """case 8: check --report overwrote any file, the --config of the same command included."""
    config = tmp_path / "c.yaml"
    config.write_text("cutoff_len: 256\n")
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    for target in (config, other):
        before = target.read_text()
        code, err = run(capsys, "check", data, "--config", config, "--tokenizer", _tok(), "--report", target)
        assert code == 2 and "exists and is not a data report written by check; pass --overwrite" in err
        assert target.read_text() == before
    report = tmp_path / "r.json"
    assert run(capsys, "check", data, "--tokenizer", _tok(), "--report", report)[0] == 0
    assert run(capsys, "check", data, "--tokenizer", _tok(), "--report", report)[0] == 0  # its own: replaced
    assert run(capsys, "check", data, "--tokenizer", _tok(), "--report", other, "--overwrite")[0] == 0
    assert json.loads(other.read_text())["rows_read"] == 3


def test_a_data_path_containing_equals_is_a_path(tmp_path, capsys, data):
    """case 10: check took 'a=b.jsonl' for an override (unknown key a)."""
    odd = tmp_path / "lr=1e-4.jsonl"
    odd.write_text(data.read_text())
    report = tmp_path / "r.json"
    code, err = run(capsys, "check", odd, "--tokenizer", _tok(), "--report", report, "cutoff_len=256")
    assert code == 0, err
    saved = json.loads(report.read_text())
    assert saved["files"] == [str(odd)] and saved["cutoff_len"] == 256


@pytest.mark.parametrize("args,message", [
    (["prepare", "--format", "sample", "--num_samples", "-1", "--output", "o.jsonl"], "--num_samples -1: must be >= 1"),
    (["prepare", "--format", "sample", "--num_samples", "0", "--output", "o.jsonl"], "--num_samples 0: must be >= 1"),
    (["inspect", "c.yaml", "--n", "-3"], "--n -3: must be >= 1"),
    (["train", "c.yaml", "--nproc", "0"], "--nproc 0: must be >= 1"),
    (["demo", "--steps", "0"], "--steps 0: must be >= 1"),
    (["merge", "adapter", "--max_shard_size", "abc"], "--max_shard_size 'abc': expected a size like 5GB"),
    (["merge", "adapter", "--max_shard_size", "0GB"], "--max_shard_size '0GB': must be more than 0 bytes"),
    (["merge", "adapter", "--validate_tokens", "-3"], "--validate_tokens -3: must be >= 1"),
    (["merge", "adapter", "--tolerance", "-1"], "--tolerance -1.0: must be > 0"),
    (["merge", "adapter", "--tolerance", "nan"], "--tolerance nan: must be > 0"),
])
def test_numbers_are_range_checked_before_any_work(tmp_path, capsys, monkeypatch, args, message):
    """case 9 / 10: prepare --num_samples -1 was a traceback and 0 wrote an empty file that check rejects; merge
    --max_shard_size abc failed only after the whole merge, --tolerance -1 was reported as a model mismatch,
    --validate_tokens -3 compared nothing; inspect --n -3 printed rows."""
    import qwen_sft.merge as merge_mod

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("cutoff_len: 256\n")
    monkeypatch.setattr(merge_mod, "merge", lambda *a, **k: pytest.fail("merge started"))
    code, err = run(capsys, *args)
    assert code == 2 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_demo_workdir_that_is_a_file(tmp_path, capsys):
    """case 9: demo --workdir FILE was a traceback (NotADirectoryError)."""
    f = tmp_path / "f"
    f.write_text("keep")
    for workdir in (f, f / "sub"):
        code, err = run(capsys, "demo", "--workdir", workdir)
        assert code == 2 and f"{f} is a file, not a directory" in err
    assert f.read_text() == "keep"


def _tok():
    from qwen_sft.assets import qwen3_tokenizer_dir

    return str(qwen3_tokenizer_dir())


def test_names_of_255_bytes_work_and_longer_ones_are_one_line(tmp_path, capsys, monkeypatch, data):
    """#23 item 15: `prepare --output`, `check --report` of a 255-byte name failed on their temporary name (longer
    than the output's); a longer name in train, check, prepare or cache build was `OSError: [Errno 36]`."""
    monkeypatch.chdir(tmp_path)
    name = "n" * 249 + ".jsonl"
    assert len(name.encode()) == 255
    assert run(capsys, "prepare", "--input", data, "--output", name)[0] == 0
    assert run(capsys, "prepare", "--input", data, "--output", "short.jsonl")[0] == 0
    assert (tmp_path / name).read_text() == (tmp_path / "short.jsonl").read_text() != ""
    (tmp_path / "short.jsonl").unlink()
    report = "r" * 250 + ".json"
    assert run(capsys, "check", data, "--tokenizer", _tok(), "--report", report)[0] == 0
    assert json.loads((tmp_path / report).read_text())["rows_read"] == 3
    long = "x" * 256
    (tmp_path / "c.yaml").write_text(f"dataset: {data}\ndata_cache_dir: {tmp_path / long}\n")
    for args, message in [(["prepare", "--input", data, "--output", long], f"output: the name {long[:40]}... is 256 "
                                                                           "bytes"),
                          (["check", data, "--report", long], f"report: the name {long[:40]}... is 256 bytes"),
                          (["train", f"run_name={long}"], f"run_name: the name {long[:40]}... is 256 bytes"),
                          (["train", f"output_dir={long}/runs"], f"output_dir: the name {long[:40]}... is 256 bytes"),
                          (["cache", "build", "c.yaml"], f"data_cache_dir: the name {long[:40]}... is 256 bytes")]:
        before = sorted(p.name for p in tmp_path.iterdir())
        code, err = run(capsys, *args)
        assert code == 2 and message in err, (args, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == before
