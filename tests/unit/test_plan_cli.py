"""`qwen-sft plan` on the tiny stand-in: what it prints, its JSON, its suggestions, and train's use of it (#24)."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch
import yaml

from qwen_sft.cli import main
from qwen_sft.config import load_config
from qwen_sft.errors import UserError
from qwen_sft.plan import cards, core
from qwen_sft.plan.report import change_text
from tests.e2e.test_train import base_cfg, write_rows
from tests.tiny import tiny_model_dir


@pytest.fixture
def config_file(tmp_path):
    write_rows(tmp_path / "data.jsonl")
    cfg = base_cfg(tmp_path, max_steps=-1, num_train_epochs=3, bf16=True)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def plan_json(capsys, *argv) -> dict:
    assert main(["plan", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_prints_peak_breakdown_speed_and_fit(config_file, capsys):
    assert main(["plan", str(config_file), "--gpu", "rtx4090"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"plan: {tiny_model_dir()} (qwen3, 2 layers; config: ")
    peak = next(line for line in lines if line.startswith("peak GPU memory: "))
    assert "on NVIDIA GeForce RTX 4090 24GB (23.5 GiB usable): fits" in peak
    for label in ("frozen weights", "LoRA weights", "LoRA gradients", "AdamW state", "saved activations",
                  "working memory", "CUDA workspace margin"):
        assert any(line.strip().startswith(label) for line in lines), label
    assert any(line.startswith("speed: ") and "tokens/s (estimate: " in line for line in lines)


def test_json_parts_add_up_to_the_peak(config_file, capsys):
    p = plan_json(capsys, config_file, "--gpu", "h100")
    b = p["breakdown"]
    parts = ("frozen_weights_gib", "lora_weights_gib", "lora_grads_gib", "optimizer_state_gib",
             "saved_activations_gib", "transient_gib", "cuda_workspace_margin_gib")
    assert math.isclose(sum(b[k] for k in parts), p["peak_gib"], rel_tol=1e-12)
    assert p["card"]["key"] == "h100" and p["fits"] is True and p["tokens_per_s"] > 0
    assert b["cuda_workspace_margin_gib"] == core.CALIBRATION["margin_gib"]
    assert p["error_gib"] == core.CALIBRATION["error_gib"]
    # The micro-batch of cutoff_len rows (no data figures yet): 2 x 128 tokens, every position but the first trained.
    assert p["micro_batch"]["tokens"] == 256 and p["data"]["source"] is None and p["steps"] is None


@pytest.mark.slow
def test_data_figures_from_the_cache_give_steps_and_wall_time(config_file, capsys):
    assert main(["cache", "build", str(config_file)]) == 0
    capsys.readouterr()
    p = plan_json(capsys, config_file, "--gpu", "rtx4090")
    assert p["data"]["source"].startswith("data cache entry ") and p["data"]["train_rows"] == 24
    # 24 rows in micro-batches of 2, 2 per optimizer step: 6 steps an epoch, 3 epochs.
    assert (p["steps_per_epoch"], p["steps"]) == (6, 18)
    assert p["train_tokens"] == 3 * p["data"]["train_tokens"]
    assert p["wall_s"] == pytest.approx(p["train_tokens"] / p["tokens_per_s"])
    # The worst micro-batch is the data's two longest rows, not two rows of cutoff_len.
    assert p["micro_batch"]["tokens"] < 256 and p["micro_batch"]["what"] == "the 2 longest rows of the data"


@pytest.mark.slow
def test_each_suggestion_is_the_plan_of_the_changed_config(config_file, capsys):
    roomy = plan_json(capsys, config_file, "--memory", 80)
    smaller = plan_json(capsys, config_file, "per_device_train_batch_size=1", "gradient_accumulation_steps=4",
                        "--memory", 80)
    assert smaller["peak_gib"] < roomy["peak_gib"]
    # A card between the two (a run fits while its peak, less the plan's error, is within the usable memory): the
    # run does not fit; the change to micro-batches of 1 (the same rows a step) does.
    memory = cards.CONTEXT_GIB - core.CALIBRATION["error_gib"] + (roomy["peak_gib"] + smaller["peak_gib"]) / 2
    p = plan_json(capsys, config_file, "--memory", memory)
    assert p["fits"] is False
    first = p["suggestions"][0]
    assert first["change"] == {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 4}
    assert first["fits"] is True and first["peak_gib"] == smaller["peak_gib"]
    assert any(s["kind"] == "gpus" and s["gpus"] == 2 for s in p["suggestions"])


def test_bad_arguments_are_one_line_errors(config_file, capsys):
    assert main(["plan", str(config_file), "--gpu", "gtx-9000"]) == 2
    assert "--gpu gtx-9000: not a card plan knows" in capsys.readouterr().err
    assert main(["plan", str(config_file), "--memory", "-3"]) == 2
    assert "--memory -3.0: must be > 0" in capsys.readouterr().err
    assert main(["plan", str(config_file), "model_name_or_path=someone/unknown-model"]) == 2
    assert "no config.json there" in capsys.readouterr().err


# ---------------------------------------------------------------- train


@pytest.mark.slow
def test_train_prints_the_plan_before_the_model_loads(tmp_path, capsys):
    write_rows(tmp_path / "data.jsonl")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(base_cfg(tmp_path, max_steps=1)))
    assert main(["train", str(tmp_path / "train.yaml")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("plan: "))
    assert line.startswith("plan: peak memory ") and " GiB at the " in line
    assert out.index("plan: peak memory") < out.index("train rows 24")


def test_a_plan_that_fails_never_stops_training(monkeypatch):
    """A bug in the estimate is said in one line and training goes on (on CUDA too: no plan, no refusal)."""
    from qwen_sft.plan import core, data as plan_data
    from qwen_sft.plan.gate import before_training

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(plan_data, "from_rows", lambda *args: None)
    monkeypatch.setattr(core, "plan", broken)
    lines = []
    cfg = SimpleNamespace(plan_check=True)
    assert before_training(cfg, SimpleNamespace(train=None, report={}), fake_cuda(monkeypatch, 80),
                           log=lines.append) is None
    assert lines == ["plan: could not be computed (RuntimeError: boom); training goes on without it (please report "
                     "this)"]


def fake_cuda(monkeypatch, free_gib: float):
    from qwen_sft.plan import command

    monkeypatch.setattr(command, "local_card", lambda device=None: cards.Card(
        "local", "a test card", 24, 165.2, "free memory now", free_gib=free_gib))
    return SimpleNamespace(device=torch.device("cuda"), num_processes=1, is_main_process=True)


@pytest.mark.slow
def test_on_cuda_train_refuses_a_run_that_cannot_fit_naming_the_first_change_that_does(config_file, monkeypatch):
    from qwen_sft.plan.gate import before_training
    from qwen_sft.data.dataset import encode_and_split
    from qwen_sft.data.tokenizer import load_tokenizer

    cfg = load_config(config_file)
    data = encode_and_split(cfg, load_tokenizer(cfg.model_name_or_path), log=None)
    lines = []
    big = before_training(cfg, data, fake_cuda(monkeypatch, 80), log=lines.append)
    assert big["fits"] is True and lines[0].startswith("plan: peak GPU memory ") and ": fits" in lines[0]
    small = before_training(dataclasses.replace(cfg, per_device_train_batch_size=1, gradient_accumulation_steps=4),
                            data, fake_cuda(monkeypatch, 80), log=lines.append)
    free = (big["peak_gib"] + small["peak_gib"]) / 2 - core.CALIBRATION["error_gib"]
    with pytest.raises(UserError) as e:
        before_training(cfg, data, fake_cuda(monkeypatch, free), log=lines.append)
    message = str(e.value)
    assert message.startswith(f"plan_check: this run needs about {big['peak_gib']:.2f} GiB of GPU memory")
    assert f"more than the {free:.2f} GiB free: set per_device_train_batch_size=1 gradient_accumulation_steps=4 " \
           f"(predicted {small['peak_gib']:.2f} GiB; the same rows per optimizer step)" in message
    assert "plan_check=false starts it anyway" in message
    # plan_check: false starts it anyway; the summary still says it does not fit.
    p = before_training(dataclasses.replace(cfg, plan_check=False), data, fake_cuda(monkeypatch, free),
                        log=lines.append)
    assert p["fits"] is False and ": does NOT fit" in lines[-1]
    assert change_text({"a": True, "b": 2.0}) == "a=true b=2"
