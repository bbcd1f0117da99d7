"""The data commands as a user runs them: prepare -> check -> inspect, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

from tests.cli import run_cli

import pytest

REPO = Path(__file__).resolve().parents[2]
LORA_CONFIG = str(REPO / "sft/configs/lora_config.yaml")




@pytest.mark.slow
def test_sample_prepare_then_inspect_json(tmp_path, capsys):
    out = run_cli(capsys, "prepare", "--format", "sample", "--num_samples", "40", "--output", "sft/data/train.jsonl",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "sft/data/train.jsonl").read_text().splitlines()) == 40
    out = run_cli(capsys, "inspect", LORA_CONFIG, "--n", "5", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 5
    for r in rows:
        assert set(r) == {"input_ids", "labels"} and len(r["input_ids"]) == len(r["labels"])
        trained = [i for i, label in enumerate(r["labels"]) if label != -100]
        assert trained and all(r["labels"][i] == r["input_ids"][i] for i in trained)
        assert r["labels"][trained[-1]] == 151645  # every reply ends with a trained <|im_end|>
    out = run_cli(capsys, "inspect", LORA_CONFIG, "--n", "2", cwd=tmp_path)
    assert out.returncode == 0 and "trained" in out.stdout
    # The seed's shim does the same job.
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "sft/scripts/prepare_data.py"),
            "--format",
            "sample",
            "--num_samples",
            "5",
            "--output",
            "s.jsonl",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and len((tmp_path / "s.jsonl").read_text().splitlines()) == 5


def test_prepare_csv_and_refuse_overwrite(tmp_path, capsys):
    (tmp_path / "raw.csv").write_text('question,answer\n"What is ""EBITDA""?","Earnings before interest,\ntaxes, '
                                      'D&A."\n', encoding="utf-8-sig")
    out = run_cli(capsys, "prepare", "--input", "raw.csv", "--output", "out.jsonl", "--instruction_col", "question",
                  "--output_col", "answer", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert row["messages"] == [{"role": "user", "content": 'What is "EBITDA"?'},
                               {"role": "assistant", "content": "Earnings before interest,\ntaxes, D&A."}]
    out = run_cli(capsys, "prepare", "--input", "raw.csv", "--output", "out.jsonl", "--instruction_col", "question",
                  "--output_col", "answer", cwd=tmp_path)
    assert out.returncode == 2 and "already exists; pass --overwrite" in out.stderr
    # The seed's question-only example: refused, naming the missing column and the flag.
    out = run_cli(capsys, "prepare", "--input", "raw.csv", "--output", "q.jsonl", "--format", "csv",
                  "--instruction_col", "question", cwd=tmp_path)
    assert out.returncode == 2 and "output: column not found" in out.stderr and "--output_col" in out.stderr
    assert not (tmp_path / "q.jsonl").exists()


def test_bad_rows_one_line_each_no_traceback_and_skip_invalid(tmp_path, capsys):
    lines = [
        '{"instruction": "a", "output": "b"}',
        '{"instruction": "a", "output": ""}',
        "{not json",
        '{"instruction": 3, "output": "x"}',
    ]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    out = run_cli(capsys, "prepare", "--input", "bad.jsonl", "--output", "o.jsonl", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "bad.jsonl:2: output: empty" in out.stderr
    assert "bad.jsonl:3: (line): malformed JSON" in out.stderr
    assert "bad.jsonl:4: instruction: expected a string, got int" in out.stderr
    assert not (tmp_path / "o.jsonl").exists()
    out = run_cli(capsys, "prepare", "--input", "bad.jsonl", "--output", "o.jsonl", "--skip_invalid", cwd=tmp_path)
    assert out.returncode == 0 and "skipped 3 invalid row(s)" in out.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1
    out = run_cli(capsys, "prepare", "--input", "missing.jsonl", "--output", "o2.jsonl", cwd=tmp_path)
    assert out.returncode == 2 and "missing.jsonl: dataset path does not exist" in out.stderr


@pytest.mark.parametrize("share,code", [("0.05", 1), ("0.6", 0)])
def test_check_report_and_thresholds(tmp_path, share, code, capsys):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(8)] + [{"instruction": "q0", "output": "a0"}] * 2
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The override after an option: argparse alone would stop at it ("unrecognized arguments").
    out = run_cli(capsys, "check", "d.jsonl", "--report", "rep.json", f"max_duplicate_share={share}", cwd=tmp_path)
    assert out.returncode == code, out.stderr
    report = json.loads((tmp_path / "rep.json").read_text())
    assert report["rows_read"] == 10 and report["duplicate_rows"] == 2 and report["rows_per_format"] == {"alpaca": 10}
    assert set(report["length_percentiles"]) >= {"p50", "p90", "p99", "max"}
    if code:
        assert "FAIL: 2 of 10 duplicate rows (20.0%) exceeds max_duplicate_share=0.05" in out.stderr


@pytest.mark.parametrize("config,reasoning,kind,thinking", [
    ("qwen3_4b_instruct_2507.yaml", False, "instruct", False),
    ("qwen3_4b_thinking_2507.yaml", True, "thinking", True)])
def test_shipped_2507_configs_check_their_sample_data(tmp_path, config, reasoning, kind, thinking, capsys):
    """As the configs' comments say: sample data (with --reasoning for the thinking model) passes `check` with each
    config, on that model's own chat template (the bundled one: the hub id is not in the cache here)."""
    path = REPO / "sft/configs" / config
    data = "sft/data/" + ("thinking.jsonl" if reasoning else "train.jsonl")
    out = run_cli(capsys, "prepare", "--format", "sample", "--num_samples", "60", "--output", data,
              *(["--reasoning"] if reasoning else []), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = run_cli(capsys, "check", data, "--config", str(path), "--report", "r.json", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    hub_id = f"Qwen/Qwen3-4B-{'Thinking' if thinking else 'Instruct'}-2507"
    assert f"note: {hub_id} is not in the local cache; using the bundled copy of its tokenizer and chat template" \
        in out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["template_kind"], report["enable_thinking"]) == (kind, thinking)
    assert report["thinking_rows"] == (60 if thinking else 0) and report["rows_without_reasoning"] == 0
    # the thinking config refuses ordinary sample rows, most of which have no reasoning
    if thinking:
        run_cli(capsys, "prepare", "--format", "sample", "--num_samples", "60", "--output", "plain.jsonl", cwd=tmp_path)
        out = run_cli(capsys, "check", "plain.jsonl", "--config", str(path), "--report", "p.json", cwd=tmp_path)
        assert out.returncode == 1 and "exceeds max_no_reasoning_share=0.5" in out.stderr
