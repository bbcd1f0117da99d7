"""The trainer's live record (live.py) on the tiny model: what a UI or `tail -f` sees of a run."""

import json

import pytest

from qwen_sft import live
from qwen_sft.config import build_config
from qwen_sft.errors import DataError, UserError
from qwen_sft.train import train
from tests.e2e.test_train import base_cfg, write_rows

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not


def records(run_dir):
    return live.read_records(run_dir / live.FILE)[0]


def test_a_run_records_setup_every_logged_step_and_its_end(tmp_path):
    write_rows(tmp_path / "data.jsonl")
    cfg = build_config(base_cfg(tmp_path, max_steps=4, logging_steps=2, val_size=4, eval_steps=2))
    metrics = train(cfg)
    recs = records(cfg.run_dir)
    assert [r["status"] for r in recs] == ["running"] * 4 + ["finished"]
    assert recs[0]["phase"] == "setup" and recs[0]["config"] == cfg.to_dict() and live.trainer_alive(recs[0])
    history = json.loads((cfg.run_dir / "loss_history.json").read_text())
    # step 1 (the session's first: progress shows at once), then the logged steps 2 and 4 with their losses
    assert [r["step"] for r in recs[1:4]] == [1, 2, 4] and all(r["total_steps"] == 4 for r in recs[1:4])
    assert "loss" not in recs[1]
    assert [(r["step"], r["loss"], r["eval_loss"]) for r in recs[2:4]] == [
        (h["step"], h["loss"], e["eval_loss"]) for h, e in zip(history[0::2], history[1::2])]
    assert all(r["tokens_per_second"] > 0 and r["memory_gb"] > 0 for r in recs[1:4])
    assert recs[3]["eta_s"] == 0 and recs[1]["eta_s"] > 0
    assert recs[4]["metrics"] == metrics == json.loads((cfg.run_dir / "metrics.json").read_text())


def test_bad_data_is_recorded_as_failed_with_its_line(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "q", "output": ""}) + "\n")
    cfg = build_config(base_cfg(tmp_path))
    with pytest.raises(DataError):
        train(cfg)
    end = records(cfg.run_dir)[-1]
    assert end["status"] == "failed"
    assert end["error"] == f"{tmp_path / 'data.jsonl'}:1: output: empty"


def test_a_refused_start_leaves_the_record_of_a_finished_run_alone(tmp_path):
    write_rows(tmp_path / "data.jsonl")
    cfg = build_config(base_cfg(tmp_path, max_steps=1))
    train(cfg)
    before = (cfg.run_dir / live.FILE).read_bytes()
    with pytest.raises(UserError, match="already holds a finished run"):
        train(cfg)
    assert (cfg.run_dir / live.FILE).read_bytes() == before
