"""Two processes on CPU (gloo, DDP) with the tiny model: outputs written once by rank 0, the same loss as one
process with the same global batch, exact stop/resume, the world-size guard, and the multi-node launch shape
(torchrun with a c10d rendezvous endpoint). FSDP / DeepSpeed need GPUs: only their CPU refusal and their
settings files are checked here."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from qwen_sft import checkpoint as ckpt
from qwen_sft import distributed
from qwen_sft.config import build_config
from qwen_sft.errors import UserError
from qwen_sft.train import train
from tests.e2e.test_train import REPO, adapter, base_cfg, max_diff, wait_for, write_rows

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not


def launch(cfg: dict, tmp: Path, name: str, torchrun: list[str] | None = None, delay: float = 0.0, wait: bool = True):
    """`qwen-sft train CFG --nproc 2`, or `torchrun TORCHRUN -m qwen_sft.cli train CFG`."""
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    env["QWEN_SFT_DEBUG_STEP_DELAY"] = str(delay)
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun, "-m", "qwen_sft.cli", "train", str(path)]
    else:
        cmd = [sys.executable, "-m", "qwen_sft.cli", "train", str(path), "--nproc", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "loss_history.json").read_text())


def two_proc_cfg(tmp: Path) -> dict:
    # 22 rows, 5 held out: 17 train rows, so one is left over on 2 processes (8 each); 3 val micro-batches, so
    # the ranks' eval shares differ (2 and 1 + a padding one). Epoch-based steps: 2 per epoch, 6 in all.
    write_rows(tmp / "data.jsonl", n=22)
    return base_cfg(tmp, val_size=5, eval_steps=2, max_steps=-1, num_train_epochs=3, save_steps=2,
                    data_cache_dir=str(tmp / "cache"))


@pytest.fixture(scope="module")
def two_proc(tmp_path_factory):
    """An uninterrupted 2-process run (LoRA dropout on): the baseline for the resume test."""
    tmp = tmp_path_factory.mktemp("two")
    cfg = two_proc_cfg(tmp)
    code, out = launch(cfg, tmp, "cfg.yaml")
    assert code == 0, out
    return tmp, cfg, out


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """The same 16 rows per optimizer step (the whole train split) in 1 process (2 x 8) and in 2 (2 x 4 each),
    the 2-process run launched the way a multi-node user launches each node: torchrun + c10d rendezvous."""
    tmp = tmp_path_factory.mktemp("parity")
    write_rows(tmp / "data.jsonl", n=21)  # 5 held out: 16 train rows
    common = dict(val_size=5, eval_steps=2, max_steps=4, save_steps=100, lora_dropout=0.0, logging_steps=1)
    one = build_config(
        base_cfg(tmp, run_name="one", per_device_train_batch_size=2, gradient_accumulation_steps=8, **common)
    )
    train(one)
    two = base_cfg(tmp, run_name="two", per_device_train_batch_size=2, gradient_accumulation_steps=4, **common)
    torchrun = ["--nnodes", "1", "--nproc_per_node", "2", "--rdzv_backend", "c10d",
                "--rdzv_endpoint", f"127.0.0.1:{free_port()}"]
    code, out = launch(two, tmp, "two.yaml", torchrun=torchrun)
    return one.run_dir, tmp / "out" / "two", code, out


def test_two_processes_finish_and_only_rank0_writes(two_proc):
    tmp, cfg, out = two_proc
    run = tmp / "out" / "run"
    assert out.count("done: adapter in") == 1
    assert sorted(p.name for p in run.iterdir()) == [
        ".qwen-sft.lock", "checkpoint-2", "checkpoint-4", "checkpoint-6", "config.yaml", "data_report.json",
        "live.jsonl", "lora_adapters", "loss_curve.png", "loss_history.json", "metrics.json", "run_id"]
    assert (run / ".qwen-sft.lock").read_text() == ""  # rank 0 held the run directory and released it
    # The live record: rank 0's alone (one setup line, one pid), ending with the run's metrics.
    records = [json.loads(line) for line in (run / "live.jsonl").read_text().splitlines()]
    assert [r.get("phase") for r in records].count("setup") == 1 and records[-1]["status"] == "finished"
    assert records[-1]["metrics"] == json.loads((run / "metrics.json").read_text())
    assert not [p for p in run.rglob("*") if "tmp" in p.name], "no temporary / partial directories"
    assert (run / "lora_adapters" / "adapter_model.safetensors").exists()
    # The left-over row is named, and every rank ran the same 6 steps (an uneven split would hang or crash).
    assert "1 train row(s) not trained" in out and "data.jsonl:22" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_steps"] == 6 and metrics["world_size"] == 2
    assert len(metrics["peak_memory_gb_per_rank"]) == 2
    assert [h["step"] for h in history(run) if "eval_loss" in h] == [2, 4, 6]
    # Each rank's own RNG stream is saved with every checkpoint; rng.pt stays rank 0's.
    for c in ckpt.list_checkpoints(run):
        r0, r1, main = (torch.load(c / n, weights_only=True)["torch"] for n in ("rng-0.pt", "rng-1.pt", "rng.pt"))
        assert torch.equal(r0, main) and not torch.equal(r0, r1)
        assert json.loads((c / "run_record.json").read_text())["world_size"] == 2


def test_both_ranks_map_one_cache_encoded_once(two_proc):
    """Rank 0 encodes into the data cache while rank 1 waits; rank 1 then maps the same files (its rows come from
    nowhere else): one entry, one encoding."""
    tmp, _, out = two_proc
    assert len(list((tmp / "cache").iterdir())) == 1
    assert out.count("data cache: encoding") == 1, out


def test_loss_matches_one_process_with_the_same_global_batch(parity):
    one, two, code, out = parity
    assert code == 0, out
    h1, h2 = history(one), history(two)
    assert [sorted(h) for h in h1] == [sorted(h) for h in h2] and len(h1) == 6  # 4 train entries, 2 eval entries
    for a, b in zip(h1, h2):
        key = "loss" if "loss" in a else "eval_loss"
        assert a["step"] == b["step"] and abs(a[key] - b[key]) <= 1e-4 * abs(a[key]), (a, b)
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    # Token counts are summed over the ranks, not rank 0's times 2.
    assert m1["train_tokens"] == m2["train_tokens"] and m1["train_trained_tokens"] == m2["train_trained_tokens"]
    assert abs(m1["eval_loss"] - m2["eval_loss"]) <= 1e-4 * m1["eval_loss"]
    assert max_diff(adapter(one), adapter(two)) <= 1e-4


def test_multinode_rendezvous_launch(parity):
    """`torchrun --nnodes N --nproc_per_node G --rdzv_backend c10d --rdzv_endpoint HOST:PORT -m qwen_sft.cli train`
    (here N=1): the workers train themselves (no second launch) and form one 2-process group."""
    _, two, code, out = parity
    assert code == 0, out
    assert "launching" not in out
    assert json.loads((two / "metrics.json").read_text())["world_size"] == 2
    assert "x 2 process(es)" in out


def test_stop_then_resume_under_two_processes_is_exact(two_proc, tmp_path):
    _, ref_cfg, _ = two_proc
    ref_run = Path(ref_cfg["output_dir"]) / "run"
    cfg = two_proc_cfg(tmp_path)
    proc = launch(cfg, tmp_path, "cfg.yaml", delay=0.5, wait=False)
    run = tmp_path / "out" / "run"
    wait_for(run / "checkpoint-2" / ckpt.MARKER, proc)
    proc.send_signal(signal.SIGTERM)  # to `qwen-sft train`, which supervises torchrun: it passes it on to both ranks
    out, _ = proc.communicate(timeout=120)
    # As in one process: exit code 3 and a one-line message, not torchrun's traceback and exit code 1.
    assert proc.returncode == 3 and "stopped at step" in out, out
    assert "Traceback" not in out and "SignalException" not in out and "ChildFailedError" not in out, out
    assert not (run / "metrics.json").exists()
    stopped_at = int(ckpt.list_checkpoints(run)[-1].name.split("-")[1])
    assert 2 < stopped_at < 6, out
    assert out.count(f"stopped at step {stopped_at}") >= 1

    code, out = launch({**cfg, "resume_from_checkpoint": "auto"}, tmp_path, "resume.yaml")
    assert code == 0, out
    assert f"resumed from {run / f'checkpoint-{stopped_at}'}" in out
    assert max_diff(adapter(run), adapter(ref_run)) <= 1e-5
    for a, b in zip(history(run), history(ref_run), strict=True):
        key = "loss" if "loss" in a else "eval_loss"
        assert a["step"] == b["step"] and abs(a[key] - b[key]) <= 1e-6


def test_resume_under_another_process_count_is_refused(two_proc):
    tmp, cfg, _ = two_proc
    checkpoint = tmp / "out" / "run" / "checkpoint-2"
    with pytest.raises(UserError) as e:
        train(build_config({**cfg, "run_name": "one-process", "resume_from_checkpoint": str(checkpoint)}))
    assert "world_size: checkpoint has 2, this run has 1" in str(e.value)


def test_sharded_strategies_are_refused_on_cpu_and_their_settings_parse(tmp_path):
    write_rows(tmp_path / "data.jsonl")
    for strategy in ("fsdp", "deepspeed_zero2", "deepspeed_zero3"):
        with pytest.raises(UserError, match="needs CUDA GPUs"):
            train(build_config(base_cfg(tmp_path, distributed_strategy=strategy)))
    fsdp = distributed.fsdp_plugin_kwargs(distributed.strategy_file("fsdp"))
    assert fsdp["use_orig_params"] is True and fsdp["sharding_strategy"] == "FULL_SHARD"
    assert fsdp["transformer_cls_names_to_wrap"] == "Qwen3DecoderLayer"
    cfg = build_config(base_cfg(tmp_path))
    for name, stage in (("deepspeed_zero2", 2), ("deepspeed_zero3", 3)):
        ds = distributed.deepspeed_config(distributed.strategy_file(name), cfg)
        assert ds["zero_optimization"]["stage"] == stage
        assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (2, 2)
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    with pytest.raises(UserError, match="distributed_strategy"):
        build_config(base_cfg(tmp_path, distributed_strategy="zero2"))


def test_packing_over_two_processes_gives_both_ranks_the_same_steps(tmp_path):
    """Packs are made over the whole split, then dealt out: rows of uneven lengths cannot give the ranks
    different step counts (which would leave one rank waiting in an all-reduce forever)."""
    rows = [{"instruction": f"Q{i} " + "word " * (5 + (i % 4) * 20), "output": f"A{i}."} for i in range(12)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = base_cfg(tmp_path, packing=True, cutoff_len=160, per_device_train_batch_size=1, gradient_accumulation_steps=1,
                   max_steps=-1, num_train_epochs=1, save_steps=100, dataloader_num_workers=0)
    code, out = launch(cfg, tmp_path, "cfg.yaml")
    assert code == 0, out
    metrics = json.loads((tmp_path / "out" / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train_steps"] >= 1


def test_a_stop_that_reaches_one_rank_during_setup_stops_both(tmp_path):
    """The supervisor passes a stop on to the workers registered so far: one of two when the other is still
    importing. Was: the signalled rank stopped "before the first step" alone and the other crashed in its first
    all-reduce (gloo; a hang under NCCL), exit code 1 and tracebacks."""
    write_rows(tmp_path / "data.jsonl", n=22)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(base_cfg(tmp_path, max_steps=6)))
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    env["TMPDIR"] = str(tmpdir)  # where the supervisor's registration folder is made
    proc = subprocess.Popen([sys.executable, "-m", "qwen_sft.cli", "train", str(path), "--nproc", "2"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while len(pids := list(tmpdir.glob("qwen-sft-launch-*/pid-*"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.01)
    # what the supervisor does when only this one has registered
    os.kill(int(pids[0].name.split("-")[1]), signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "stopped before the first step" in out, out
    assert "Traceback" not in out and "ChildFailedError" not in out, out
    # the supervisor's folder and torchrun's logs (in it) are removed; torch's compile cache may stay
    assert not list(tmpdir.glob("qwen-sft-launch-*")) and not list(tmpdir.glob("torchelastic_*"))
