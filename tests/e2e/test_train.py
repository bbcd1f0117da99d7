"""End-to-end training on the tiny Qwen3 stand-in: outputs, frozen base, exact resume, faults."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from qwen_sft import checkpoint as ckpt
from qwen_sft.config import build_config
from qwen_sft.errors import UserError
from qwen_sft.train import train
from tests.cli import run_cli as run_cli_in_process
from tests.tiny import tiny_model_dir

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not

REPO = Path(__file__).resolve().parents[2]
TOPICS = ["interest rates", "inflation", "bond yields", "stock splits", "dividends", "index funds",
          "currency risk", "cash flow", "balance sheets", "credit scores", "mortgages", "options"]


def write_rows(path: Path, n: int = 24, salt: str = "") -> Path:
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append(
            {
                "instruction": f"Explain {topic} in one sentence{salt}. (#{i})",
                "input": "" if i % 3 else "Keep it short.",
                "output": f"{topic.capitalize()} matter because they change what money is worth over time, case {i}.",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def base_cfg(tmp: Path, **over) -> dict:
    cfg = {
        "model_name_or_path": str(tiny_model_dir()), "dataset": str(tmp / "data.jsonl"),
        "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.05, "learning_rate": 1e-3,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "max_steps": 8,
        "warmup_ratio": 0.1, "bf16": False, "gradient_checkpointing": False, "cutoff_len": 128,
        "dataloader_num_workers": 1, "output_dir": str(tmp / "out"), "run_name": "run",
        "logging_steps": 1, "save_steps": 2, "save_total_limit": 10, "report_to": "none", "seed": 7,
    }
    cfg.update(over)
    return cfg


def run_cli(cfg: dict, tmp: Path, delay: float = 0.0, name: str = "cfg.yaml", wait: bool = True):
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, QWEN_SFT_DEBUG_STEP_DELAY=str(delay))
    cmd = [sys.executable, "-m", "qwen_sft.cli", "train", str(path)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = proc.communicate(timeout=300)
        return proc.returncode, out
    return proc


def train_in_process(capsys, cfg: dict, tmp: Path, name: str = "cfg.yaml") -> tuple[int, str]:
    """`qwen-sft train` as run_cli runs it, but in this process (for runs that no test signals): code, output."""
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    out = run_cli_in_process(capsys, "train", path, cwd=REPO)
    return out.returncode, out.stdout + out.stderr


def wait_for(path: Path, proc, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path} appeared:\n{proc.stdout.read()}"
        assert time.time() < end, f"timed out waiting for {path}"
        time.sleep(0.05)


def adapter(run_dir: Path) -> dict:
    return load_file(run_dir / "lora_adapters" / "adapter_model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, the baseline for every resume test."""
    tmp = tmp_path_factory.mktemp("ref")
    write_rows(tmp / "data.jsonl")
    cfg = build_config(base_cfg(tmp, report_to="tensorboard", val_size=4, eval_steps=4))
    metrics = train(cfg)
    return tmp, cfg, metrics


def test_outputs_and_frozen_base(reference):
    tmp, cfg, metrics = reference
    run = cfg.run_dir
    for name in ("config.yaml", "data_report.json", "metrics.json", "loss_curve.png", "loss_history.json",
                 "lora_adapters/adapter_config.json", "lora_adapters/adapter_model.safetensors",
                 "lora_adapters/tokenizer.json", "lora_adapters/qwen_sft.json"):
        assert (run / name).exists(), name
    assert list((run / "logs").glob("events.out.tfevents.*")), "TensorBoard events"
    saved = json.loads((run / "metrics.json").read_text())
    for key in (
        "train_runtime",
        "train_tokens",
        "train_tokens_per_second",
        "train_loss",
        "eval_loss",
        "peak_memory_gb",
    ):
        assert isinstance(saved[key], (int, float)), key
    assert saved["train_steps"] == 8 and saved["train_tokens"] > 0
    assert json.loads((run / "lora_adapters" / "adapter_config.json").read_text())["r"] == 4
    tok_cfg = json.loads((run / "lora_adapters" / "tokenizer_config.json").read_text())
    assert "chat_template" in tok_cfg and (run / "lora_adapters" / "chat_template.jinja").exists()
    assert not isinstance(tok_cfg.get("extra_special_tokens"), list)  # transformers 4 (vLLM on it) reads a dict there

    # LoRA B starts at zero: every B must have moved. The base weights on disk are untouched by training.
    trained = adapter(run)
    b_weights = [k for k in trained if "lora_B" in k]
    assert len(b_weights) == 2 * 7 and all(float(trained[k].abs().max()) > 0 for k in b_weights)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir())
    ref_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = PeftModel.from_pretrained(base, run / "lora_adapters")
    for name, p in model.get_base_model().named_parameters():
        if "lora_" not in name:
            key = name.replace("base_layer.", "")
            assert torch.equal(p, ref_state[key]), name
            assert not p.requires_grad


def test_loss_normalized_per_trained_token_across_accumulation(reference):
    """The logged step loss is the token-weighted mean over the step's micro-batches."""
    _, cfg, metrics = reference
    hist = [h for h in json.loads((cfg.run_dir / "loss_history.json").read_text()) if "loss" in h]
    assert len(hist) == 8
    assert all(h["loss"] > 0 for h in hist)
    assert metrics["eval_loss"] is not None and metrics["eval_loss"] > 0


def test_sigkill_mid_epoch_then_auto_resume_is_exact(reference, tmp_path, capsys):
    _, ref_cfg, _ = reference
    write_rows(tmp_path / "data.jsonl")
    cfg = base_cfg(tmp_path, report_to="tensorboard", val_size=4, eval_steps=4)
    proc = run_cli(cfg, tmp_path, delay=0.4, wait=False)
    run_dir = tmp_path / "out" / "run"
    wait_for(run_dir / "checkpoint-4" / ckpt.MARKER, proc)
    proc.send_signal(signal.SIGKILL)  # step 4 of 6 in epoch 0: mid-epoch
    proc.wait()
    assert not (run_dir / "metrics.json").exists()

    code, out = train_in_process(capsys, {**cfg, "resume_from_checkpoint": "auto"}, tmp_path, name="resume.yaml")
    assert code == 0, out
    assert "resumed from" in out
    assert max_diff(adapter(run_dir), adapter(ref_cfg.run_dir)) <= 1e-6
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["train_steps"] == 8
    ref_hist = json.loads((ref_cfg.run_dir / "loss_history.json").read_text())
    new_hist = json.loads((run_dir / "loss_history.json").read_text())
    assert [h["step"] for h in new_hist] == [h["step"] for h in ref_hist]
    for a, b in zip(new_hist, ref_hist):
        assert abs(a.get("loss", a.get("eval_loss")) - b.get("loss", b.get("eval_loss"))) <= 1e-6


def test_sigterm_saves_at_step_boundary_and_resumes_exactly(reference, tmp_path, capsys):
    _, ref_cfg, _ = reference
    write_rows(tmp_path / "data.jsonl")
    cfg = base_cfg(tmp_path, report_to="tensorboard", val_size=4, eval_steps=4, save_steps=2)
    proc = run_cli(cfg, tmp_path, delay=0.6, wait=False)
    run_dir = tmp_path / "out" / "run"
    wait_for(run_dir / "checkpoint-2" / ckpt.MARKER, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    assert "stopped at step" in out and "Traceback" not in out
    stopped_at = int(ckpt.list_checkpoints(run_dir)[-1].name.split("-")[1])
    assert f"stopped at step {stopped_at}" in out
    assert 2 < stopped_at < 8

    code, out = train_in_process(capsys, {**cfg, "resume_from_checkpoint": "auto"}, tmp_path, name="resume.yaml")
    assert code == 0, out
    assert f"at step {stopped_at}" in out
    assert max_diff(adapter(run_dir), adapter(ref_cfg.run_dir)) <= 1e-6


def test_resume_refuses_changed_data_unless_forced(tmp_path):
    write_rows(tmp_path / "data.jsonl")
    cfg = base_cfg(tmp_path, max_steps=2, save_steps=1, dataloader_num_workers=0)
    train(build_config({**cfg, "max_steps": 1}))  # leaves checkpoint-1 (and a finished run)
    write_rows(tmp_path / "data.jsonl", salt=" briefly")
    with pytest.raises(UserError) as e:
        train(build_config({**cfg, "resume_from_checkpoint": "auto"}))
    assert "dataset_hash" in str(e.value) and "force_resume" in str(e.value)
    with pytest.raises(UserError) as e:
        train(build_config({**cfg, "resume_from_checkpoint": "auto", "lora_rank": 8}))
    assert "lora" in str(e.value)
    write_rows(tmp_path / "data.jsonl")  # the original file again, but another held-out split: other train rows
    with pytest.raises(UserError) as e:
        train(build_config({**cfg, "resume_from_checkpoint": "auto", "val_size": 3}))
    assert "train_split_hash" in str(e.value) and "dataset_hash" not in str(e.value)
    metrics = train(build_config({**cfg, "resume_from_checkpoint": "auto", "force_resume": True}))
    assert metrics["train_steps"] == 2


def test_cached_and_uncached_runs_are_identical(tmp_path, capsys):
    """The first run encodes into the data cache, the second reads it back (memory-mapped), a third keeps no
    cache: the same losses and the same adapter, bit for bit."""
    write_rows(tmp_path / "data.jsonl")
    cache = tmp_path / "cache"
    runs = {"first": str(cache), "cached": str(cache), "no_cache": None}
    for name, where in runs.items():
        train(build_config(base_cfg(tmp_path, run_name=name, data_cache_dir=where, val_size=4, eval_steps=4,
                                    preprocessing_num_workers=2)))
        out = capsys.readouterr().out
        said = [line for line in out.splitlines() if line.startswith("data cache:")]
        assert said[0].startswith("data cache: 24 encoded rows from" if name == "cached" else "data cache: encoding"), (
            said
        )
    assert len(list(cache.iterdir())) == 1
    first = tmp_path / "out" / "first"
    for name in ("cached", "no_cache"):
        other = tmp_path / "out" / name
        a, b = adapter(first), adapter(other)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        assert json.loads((other / "loss_history.json").read_text()) == json.loads(
            (first / "loss_history.json").read_text()
        )
        assert (other / "data_report.json").read_text() == (first / "data_report.json").read_text()
        record = json.loads((other / "checkpoint-8" / "run_record.json").read_text())
        assert (
            record["train_split_hash"]
            == json.loads((first / "checkpoint-8" / "run_record.json").read_text())["train_split_hash"]
        )


def test_nan_loss_stops_naming_step_and_rows_without_checkpoint(tmp_path, monkeypatch):
    from qwen_sft import loss as loss_mod

    write_rows(tmp_path / "data.jsonl")
    real = loss_mod.CausalLMLoss.forward
    calls = {"n": 0}

    def poisoned(self, *a, **kw):
        calls["n"] += 1
        out = real(self, *a, **kw)
        return out * float("nan") if calls["n"] > 4 else out  # step 3 (2 micro-batches per step)

    monkeypatch.setattr(loss_mod.CausalLMLoss, "forward", poisoned)
    cfg = build_config(base_cfg(tmp_path, save_steps=1, dataloader_num_workers=0))
    with pytest.raises(UserError) as e:
        train(cfg)
    msg = str(e.value)
    assert "step 3" in msg and "nan" in msg and "data.jsonl:" in msg
    assert [p.name for p in ckpt.list_checkpoints(cfg.run_dir)] == ["checkpoint-1", "checkpoint-2"]


def test_finished_run_is_not_overwritten(reference):
    _, cfg, _ = reference
    with pytest.raises(UserError, match="already holds a finished run"):
        train(build_config({**cfg.to_dict()}))


def test_resume_never_replaces_a_finished_run_it_cannot_continue(tmp_path):
    write_rows(tmp_path / "data.jsonl")
    cfg = base_cfg(tmp_path, max_steps=2, dataloader_num_workers=0)
    # A finished run without checkpoints (save_steps beyond max_steps): auto has nothing to resume from.
    no_ckpt = build_config({**cfg, "run_name": "no-ckpt", "save_steps": 100})
    train(no_ckpt)
    before = (no_ckpt.run_dir / "lora_adapters" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(UserError, match="no complete checkpoint to resume from"):
        train(
            build_config({**cfg, "run_name": "no-ckpt", "save_steps": 100, "resume_from_checkpoint": "auto", "seed": 8})
        )
    assert (no_ckpt.run_dir / "lora_adapters" / "adapter_model.safetensors").read_bytes() == before
    # A finished run resumed at its last step: nothing to train, its metrics stay as they were.
    done = build_config({**cfg, "run_name": "done", "save_steps": 2})
    metrics = train(done)
    saved = (done.run_dir / "metrics.json").read_text()
    assert (
        train(build_config({**cfg, "run_name": "done", "save_steps": 2, "resume_from_checkpoint": "auto"})) == metrics
    )
    assert (done.run_dir / "metrics.json").read_text() == saved
    # A refused resume (other LoRA shape) leaves the run's config.yaml as it was.
    config_before = (done.run_dir / "config.yaml").read_text()
    with pytest.raises(UserError, match="has another LoRA shape"):  # refused before anything is written (#23)
        train(
            build_config({**cfg, "run_name": "done", "save_steps": 2, "resume_from_checkpoint": "auto", "lora_rank": 8})
        )
    assert (done.run_dir / "config.yaml").read_text() == config_before
    # A checkpoint past the run's (lowered) length: refused, not saved as the run's result with 0 tokens trained.
    adapter_before = (done.run_dir / "lora_adapters" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(UserError, match=r"checkpoint-2 is at step 2, past this run's 1 steps"):
        train(
            build_config({**cfg, "run_name": "done", "save_steps": 2, "resume_from_checkpoint": "auto", "max_steps": 1})
        )
    assert (done.run_dir / "lora_adapters" / "adapter_model.safetensors").read_bytes() == adapter_before
    assert (done.run_dir / "metrics.json").read_text() == saved
    # Another run's checkpoint cannot continue (and so replace) a finished run.
    with pytest.raises(UserError, match="belongs to another run directory"):
        train(
            build_config({**cfg, "run_name": "no-ckpt", "resume_from_checkpoint": str(done.run_dir / "checkpoint-2")})
        )


def test_cli_config_error_is_one_line_no_traceback(tmp_path, capsys):
    write_rows(tmp_path / "data.jsonl")
    code, out = train_in_process(capsys, {**base_cfg(tmp_path), "learning_rat": 1e-4}, tmp_path)
    assert code == 2
    assert "learning_rat: unknown key" in out and "did you mean 'learning_rate'" in out
    assert "Traceback" not in out


def test_second_sigint_exits_at_once(tmp_path):
    write_rows(tmp_path / "data.jsonl")
    proc = run_cli(base_cfg(tmp_path, save_steps=2, max_steps=40), tmp_path, delay=1.0, wait=False)
    wait_for(tmp_path / "out" / "run" / "checkpoint-2" / ckpt.MARKER, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "saving a checkpoint at the next step boundary" in out and "second interrupt: exiting now" in out
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "out" / "run")] == ["checkpoint-2"]


def test_packing_and_sample_generations_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_rows(tmp_path / "data.jsonl")
    cfg = build_config(base_cfg(tmp_path, packing=True, per_device_train_batch_size=1, gradient_accumulation_steps=1,
                                max_steps=-1, num_train_epochs=1, val_size=4, eval_steps=2, eval_sample_generations=2,
                                report_to="tensorboard", dataloader_num_workers=0, save_steps=100))
    metrics = train(cfg)
    # 20 train rows of ~45 tokens, packed into sequences of <= cutoff_len=128 tokens: 2 or 3 per pack.
    from qwen_sft.batching import pack_rows
    from qwen_sft.data.dataset import encode_and_split
    from qwen_sft.data.tokenizer import load_tokenizer

    train_rows = encode_and_split(cfg, load_tokenizer(cfg.model_name_or_path)).train
    packs = pack_rows([len(r.input_ids) for r in train_rows], 128)
    assert metrics["train_steps"] == len(packs) <= 10
    assert metrics["train_tokens"] == sum(len(r.input_ids) for r in train_rows)  # every row once, no padding
    events = EventAccumulator(str(cfg.run_dir / "logs"), size_guidance={"tensors": 0})
    events.Reload()
    assert "eval/samples/text_summary" in events.Tags()["tensors"]



def test_stop_during_eval_returns_at_once_and_loss_is_kept_out():
    """A stop request inside eval ends eval at the next batch (the loop then saves at the step boundary)."""
    from qwen_sft.batching import collate_padding_free
    from qwen_sft.data.encode import Encoded
    from qwen_sft.loss import CausalLMLoss
    from qwen_sft.model import load_base_model, wrap_lora
    from qwen_sft.launch import GracefulStop
    from qwen_sft.train import held_out_loss

    cfg = build_config(base_cfg(Path("/tmp"), gradient_checkpointing=False))
    module = CausalLMLoss(wrap_lora(load_base_model(cfg, torch.device("cpu")), cfg))
    stop = GracefulStop()
    batch = collate_padding_free([Encoded([1, 2, 3, 4], [-100, -100, 3, 4])])
    seen = []

    def loader():
        for i in range(5):
            seen.append(i)
            if i == 2:
                stop.requested = True  # as the signal handler does
            yield batch

    assert held_out_loss(module, loader(), torch.device("cpu"), stop) is None
    assert seen == [0, 1, 2] and module.training
    assert held_out_loss(module, [batch, batch], torch.device("cpu"), GracefulStop()) > 0


def test_resume_between_logging_steps_keeps_the_loss_history_and_token_count(tmp_path):
    """A checkpoint that falls between two logged steps (a SIGTERM stop, or save_steps not a multiple of
    logging_steps): the resumed run logs the same loss over the whole logging window, and counts the input
    tokens of the steps before the resume, as the uninterrupted run does."""
    import shutil

    write_rows(tmp_path / "data.jsonl")
    common = dict(max_steps=4, save_steps=2, logging_steps=3, dataloader_num_workers=0)
    ref = build_config(base_cfg(tmp_path, run_name="ref", **common))
    ref_metrics = train(ref)
    run_dir = tmp_path / "out" / "resumed"
    run_dir.mkdir(parents=True)
    shutil.copytree(ref.run_dir / "checkpoint-2", run_dir / "checkpoint-2")
    metrics = train(build_config(base_cfg(tmp_path, run_name="resumed", resume_from_checkpoint="auto", **common)))
    assert max_diff(adapter(run_dir), adapter(ref.run_dir)) <= 1e-6
    ref_hist = json.loads((ref.run_dir / "loss_history.json").read_text())
    new_hist = json.loads((run_dir / "loss_history.json").read_text())
    assert [h["step"] for h in new_hist] == [h["step"] for h in ref_hist] == [3, 4]
    for a, b in zip(new_hist, ref_hist):
        # step 3: the mean of steps 1-3, not of step 3 alone
        assert abs(a["loss"] - b["loss"]) <= 1e-6 * b["loss"], (a, b)
    for key in ("train_loss", "final_train_loss", "train_tokens", "train_trained_tokens"):
        assert metrics[key] == pytest.approx(ref_metrics[key], rel=1e-6), key
