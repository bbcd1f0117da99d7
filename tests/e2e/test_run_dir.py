"""Issue #18 cases 1-5: runs never lose or misreport work. One owner per run directory, checkpoints of this run
only, a resume that uses and records one set of settings, evaluation as part of the step. Tiny model, in-process
(stops are real SIGINTs to this process at a chosen step) except where a second process is the point."""

import json
import os
import signal
import socket
import time
from contextlib import contextmanager

import pytest
import yaml

from qwen_sft import checkpoint as ckpt
from qwen_sft import train as train_mod
from qwen_sft.config import build_config
from qwen_sft.errors import StopRequested, UserError
from qwen_sft.train import train
from tests.e2e.test_train import adapter, base_cfg, max_diff, run_cli, wait_for, write_rows

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not


def cfg_for(tmp_path, **over) -> dict:
    write_rows(tmp_path / "data.jsonl", n=16)
    return base_cfg(tmp_path, gradient_accumulation_steps=1, dataloader_num_workers=0, **over)


@contextmanager
def stop_at_step(monkeypatch, step: int):
    """Send SIGINT to this process right after optimizer step `step` (through the step-delay test hook)."""
    calls = {"n": 0}

    class Clock:
        perf_counter, monotonic = staticmethod(time.perf_counter), staticmethod(time.monotonic)

        @staticmethod
        def sleep(_):
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "DEBUG_STEP_DELAY", 1e-9)
        m.setattr(train_mod, "time", Clock)
        yield


def names(run_dir):
    return [p.name for p in ckpt.list_checkpoints(run_dir)]


def test_case1_a_new_run_never_loses_its_checkpoints_to_an_older_run(tmp_path, monkeypatch, capsys):
    """Run B into run A's directory (overwrite_output_dir) said 'checkpoint saved to checkpoint-3' after pruning by
    step number had deleted it and kept A's -4 and -6; auto then 'resumed' A's checkpoint-6 under B's config."""
    a = cfg_for(tmp_path, max_steps=6, save_steps=2, save_total_limit=2, learning_rate=1e-3)
    train(build_config(a))
    run_dir = tmp_path / "out" / "run"
    assert names(run_dir) == ["checkpoint-4", "checkpoint-6"]
    b = {**a, "overwrite_output_dir": True, "save_steps": 1, "learning_rate": 1e-4}
    capsys.readouterr()
    with stop_at_step(monkeypatch, 3), pytest.raises(StopRequested) as e:
        train(build_config(b))
    out = capsys.readouterr().out
    assert f"checkpoint saved to {run_dir / 'checkpoint-3'}" in str(e.value)
    assert names(run_dir) == ["checkpoint-2", "checkpoint-3"]  # the message names a checkpoint that exists
    assert (
        "overwrite_output_dir: moved the earlier run's checkpoint-4, checkpoint-6, lora_adapters, metrics.json" in out
    )
    metrics = train(build_config({**b, "resume_from_checkpoint": "auto"}))
    assert f"resumed from {run_dir / 'checkpoint-3'} at step 3" in capsys.readouterr().out
    assert (
        metrics["train_steps"] == 6 and yaml.safe_load((run_dir / "config.yaml").read_text())["learning_rate"] == 1e-4
    )
    # The directory now holds B's adapter: equal to an uninterrupted run of B.
    train(build_config({**b, "run_name": "b-ref", "overwrite_output_dir": False}))
    assert max_diff(adapter(run_dir), adapter(tmp_path / "out" / "b-ref")) <= 1e-6


def test_overwrite_moves_everything_the_earlier_run_made_and_nothing_else(tmp_path, capsys):
    """#23 item 5: overwrite_output_dir left merged/, eval/, merge.log and eval.log; the UI then showed "Validation
    PASSED" and the eval table of an adapter that was deleted, and offered that merged model in chat. Now the
    earlier run and what was made of it move into overwritten/{its run id}/; a user's files and links stay."""
    a = cfg_for(tmp_path, max_steps=2, save_steps=1)
    train(build_config(a))
    run_dir = tmp_path / "out" / "run"
    first_id = ckpt.read_run_id(run_dir)
    (run_dir / "merged").mkdir()  # what the UI's merge and eval of this run's adapter leave (ui/ops.py)
    (run_dir / "merged" / "config.json").write_text("{}")
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "metrics.json").write_text(json.dumps({"tuned": {"loss": 1.0}}))
    (run_dir / "merge.log").write_text("validation PASSED\n")
    (run_dir / "eval.log").write_text("eval done\n")
    (run_dir / "train.log").write_text("the UI's log: the new run is writing it\n")
    (run_dir / "notes.md").write_text("mine")
    outside = tmp_path / "kept-elsewhere"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    (run_dir / "logs").symlink_to(outside)  # a link is moved as a link, never followed
    before = {p.name for p in run_dir.iterdir()}
    capsys.readouterr()
    train(build_config({**a, "overwrite_output_dir": True, "learning_rate": 1e-4}))
    out = capsys.readouterr().out
    dest = run_dir / "overwritten" / first_id
    moved = ["checkpoint-1", "checkpoint-2", "lora_adapters", "metrics.json", "loss_history.json", "loss_curve.png",
             "data_report.json", "config.yaml", "logs", "live.jsonl", "merged", "eval", "merge.log", "eval.log"]
    assert f"overwrite_output_dir: moved the earlier run's {', '.join(moved)} into {dest} (" in out
    assert sorted(p.name for p in dest.iterdir()) == sorted(moved + ["run_id"])
    assert (dest / "merge.log").read_text() == "validation PASSED\n" and (dest / "logs").is_symlink()
    assert (outside / "precious.txt").read_text() == "keep" and (dest / "logs" / "precious.txt").exists()
    assert (run_dir / "notes.md").read_text() == "mine" and (run_dir / "train.log").exists()
    for name in ("merged", "eval", "merge.log", "eval.log"):
        assert not os.path.lexists(run_dir / name)
    assert ckpt.read_run_id(run_dir) != first_id and ckpt.read_run_id(dest) == first_id
    assert {p.name for p in run_dir.iterdir()} == before - {"merged", "eval", "merge.log", "eval.log", "logs"} | {
        "overwritten"
    }
    assert [r["status"] for r in map(json.loads, (run_dir / "live.jsonl").read_text().splitlines())][-1] == "finished"
    assert sum(1 for line in (run_dir / "live.jsonl").read_text().splitlines() if '"phase": "setup"' in line) == 1
    # A second overwrite: a folder of its own beside the first.
    second_id = ckpt.read_run_id(run_dir)
    train(build_config({**a, "overwrite_output_dir": True}))
    assert sorted(p.name for p in (run_dir / "overwritten").iterdir()) == sorted([first_id, second_id])


def test_overwrite_refuses_an_overwritten_folder_that_is_a_link(tmp_path):
    a = cfg_for(tmp_path, max_steps=1, save_steps=1)
    train(build_config(a))
    run_dir = tmp_path / "out" / "run"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "overwritten").symlink_to(elsewhere)
    with pytest.raises(UserError, match=rf"^overwrite_output_dir: {run_dir / 'overwritten'} is not a directory \(a "
                                        r"link or a file\); the earlier run is moved there: remove it"):
        train(build_config({**a, "overwrite_output_dir": True}))
    assert list(elsewhere.iterdir()) == [] and (run_dir / "lora_adapters").is_dir()


def test_case1_a_stopped_run_is_not_taken_over_silently(tmp_path, monkeypatch):
    """Without overwrite_output_dir, a new run into a stopped run's directory (no metrics yet) took it over."""
    cfg = cfg_for(tmp_path, max_steps=6, save_steps=2)
    with stop_at_step(monkeypatch, 2), pytest.raises(StopRequested):
        train(build_config(cfg))
    run_dir = tmp_path / "out" / "run"
    before = (run_dir / "checkpoint-2" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(UserError) as e:
        train(build_config({**cfg, "learning_rate": 5e-4}))
    assert f"{run_dir} holds checkpoints of an unfinished run (checkpoint-2): resume it with " \
           "resume_from_checkpoint=auto, or set overwrite_output_dir=true" in str(e.value)
    assert (run_dir / "checkpoint-2" / "adapter_model.safetensors").read_bytes() == before
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["learning_rate"] == cfg["learning_rate"]


def test_case2_one_training_per_run_directory(tmp_path, capsys):
    """Two trainings into one run directory both exited 0; the second's adapter, config and checkpoints replaced
    the first's. A run killed outright leaves no lock that blocks its resume."""
    cfg = cfg_for(tmp_path, max_steps=8, save_steps=2)
    proc = run_cli(cfg, tmp_path, delay=0.5, wait=False)
    run_dir = tmp_path / "out" / "run"
    try:
        wait_for(run_dir / "checkpoint-2" / ckpt.MARKER, proc)
        config_before = (run_dir / "config.yaml").read_text()
        with pytest.raises(UserError) as e:
            train(build_config({**cfg, "learning_rate": 5e-4, "overwrite_output_dir": True}))
        assert f"{run_dir} is in use by another training run (pid {proc.pid} on host {socket.gethostname()}" in str(
            e.value
        )
        assert (run_dir / "config.yaml").read_text() == config_before and (run_dir / "checkpoint-2").exists()
        from qwen_sft.runlock import run_owner

        owner = run_owner(run_dir)
        assert owner["pid"] == proc.pid and owner["host"] == socket.gethostname()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert run_owner(run_dir) is None
    capsys.readouterr()
    metrics = train(build_config({**cfg, "resume_from_checkpoint": "auto"}))
    assert metrics["train_steps"] == 8
    assert f"taking over the lock left by an earlier run that ended without releasing it (pid {proc.pid}" \
        in capsys.readouterr().err


def test_case3_a_resume_with_another_learning_rate_is_refused_or_applied(tmp_path, capsys):
    """Resumed with learning_rate 1e-5 (constant schedule), every step trained at the checkpoint's 1e-3 while
    config.yaml said 1e-5."""
    cfg = cfg_for(tmp_path, max_steps=2, save_steps=2, lr_scheduler_type="constant", warmup_ratio=0.0)
    train(build_config(cfg))
    run_dir = tmp_path / "out" / "run"
    resume = {**cfg, "max_steps": 4, "resume_from_checkpoint": "auto", "learning_rate": 1e-5}
    with pytest.raises(UserError) as e:
        train(build_config(resume))
    assert "learning_rate: checkpoint has 0.001, this run has 1e-05" in str(e.value)
    assert "force_resume=true" in str(e.value) and "max_steps" not in str(e.value)  # a longer run is a resume
    capsys.readouterr()
    metrics = train(build_config({**resume, "force_resume": True}))
    assert "resuming with changed settings: max_steps 2 -> 4, learning_rate 0.001 -> 1e-05" in capsys.readouterr().out
    lrs = {h["step"]: h["lr"] for h in json.loads((run_dir / "loss_history.json").read_text()) if "lr" in h}
    assert lrs == {1: 1e-3, 2: 1e-3, 3: 1e-5, 4: 1e-5}
    text = (run_dir / "config.yaml").read_text()
    assert yaml.safe_load(text)["learning_rate"] == 1e-5 and "#   learning_rate: 0.001 -> 1e-05" in text
    assert metrics["settings_changed"] == [{"step": 2, "changed": {"max_steps": [2, 4], "learning_rate": [1e-3, 1e-5]}}]
    assert json.loads((run_dir / "metrics.json").read_text())["settings_changed"] == metrics["settings_changed"]


def snapshot(run_dir) -> dict:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "change", [{"lora_rank": 8}, {"lora_target_modules": ["q_proj", "v_proj"]}, {"use_dora": True}]
)
def test_a_changed_lora_shape_is_refused_before_anything_is_written(tmp_path, monkeypatch, change):
    """#23 item 14: force_resume with another lora_rank / targets / use_dora rewrote config.yaml, then crashed with a
    size or param-group error, after which the UI's Resume (config.yaml's settings) failed too."""
    cfg = cfg_for(tmp_path, max_steps=2, save_steps=1)
    with stop_at_step(monkeypatch, 1), pytest.raises(StopRequested):  # stopped after step 1: a resumable run
        train(build_config(cfg))
    run_dir = tmp_path / "out" / "run"
    before = snapshot(run_dir)
    resume = {**cfg, "resume_from_checkpoint": "auto", **change}
    key, value = next(iter(change.items()))
    old = cfg.get(key, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                  if key == "lora_target_modules" else False)
    for force in (False, True):
        with pytest.raises(UserError) as e:
            train(build_config({**resume, "force_resume": force}))
        assert str(e.value) == (f"resume_from_checkpoint {run_dir / 'checkpoint-1'} has another LoRA shape ({key}: "
                                f"checkpoint has {old!r}, this run has {value!r}): its adapter and optimizer state fit "
                                "only its own, so not even force_resume can resume it; set them back, or start a new "
                                "run (another run_name, or overwrite_output_dir=true)")
        assert snapshot(run_dir) == before  # config.yaml, the live record, the lock: nothing written
    assert train(build_config({**cfg, "resume_from_checkpoint": "auto"}))["train_steps"] == 2  # the UI's Resume


def test_case4_a_resume_that_trains_nothing_rewrites_nothing(tmp_path):
    """'already finished ... nothing to train', exit 0, and config.yaml showed the unused learning_rate 0.5."""
    cfg = cfg_for(tmp_path, max_steps=2, save_steps=2)
    metrics = train(build_config(cfg))
    run_dir = tmp_path / "out" / "run"
    files = ("config.yaml", "data_report.json", "metrics.json", "loss_history.json")
    before = {n: (run_dir / n).read_bytes() for n in files}
    resume = {**cfg, "resume_from_checkpoint": "auto", "learning_rate": 0.5, "max_dropped_share": 0.5}
    with pytest.raises(UserError, match="learning_rate: checkpoint has 0.001, this run has 0.5"):
        train(build_config(resume))
    assert train(build_config({**resume, "force_resume": True})) == metrics
    assert {n: (run_dir / n).read_bytes() for n in files} == before


def test_case5_a_stop_during_eval_repeats_it_on_resume(tmp_path, monkeypatch):
    """A stop during an eval dropped it: the resumed history lacked it and metrics kept the previous eval_loss."""
    cfg = cfg_for(tmp_path, max_steps=6, save_steps=3, val_size=4, eval_steps=2)
    ref = build_config({**cfg, "run_name": "ref"})
    ref_metrics = train(ref)
    real = train_mod.held_out_loss
    calls = {"n": 0}

    def stopped_in_second_eval(module, loader, device, stop=None, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2 and stop is not None:
            stop.requested = True  # as the signal handler does, while eval runs at step 4
        return real(module, loader, device, stop, *a, **kw)

    monkeypatch.setattr(train_mod, "held_out_loss", stopped_in_second_eval)
    with pytest.raises(StopRequested, match="stopped at step 4"):
        train(build_config(cfg))
    monkeypatch.setattr(train_mod, "held_out_loss", real)
    run_dir = tmp_path / "out" / "run"
    pending = json.loads((run_dir / "checkpoint-4" / "trainer_state.json").read_text()).get("eval_pending")
    metrics = train(build_config({**cfg, "resume_from_checkpoint": "auto"}))
    ref_hist = json.loads((ref.run_dir / "loss_history.json").read_text())
    hist = json.loads((run_dir / "loss_history.json").read_text())
    assert [(h["step"], sorted(h)) for h in hist] == [(h["step"], sorted(h)) for h in ref_hist]
    assert [(4, "eval_loss")] == [(h["step"], "eval_loss") for h in hist if h["step"] == 4 and "eval_loss" in h]
    for a, b in zip(hist, ref_hist):
        for key in ("loss", "eval_loss"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a, b)
    assert metrics["eval_loss"] == pytest.approx(ref_metrics["eval_loss"], rel=1e-6)
    assert max_diff(adapter(run_dir), adapter(ref.run_dir)) <= 1e-6
    assert pending is True


def test_case5_a_stop_on_the_last_step_finishes_the_run(tmp_path, monkeypatch, capsys):
    """A stop on the last step saved a checkpoint and exited 3 instead of finishing."""
    cfg = cfg_for(tmp_path, max_steps=3, save_steps=100, val_size=4, eval_steps=100)
    with stop_at_step(monkeypatch, 3):
        metrics = train(build_config(cfg))
    run_dir = tmp_path / "out" / "run"
    assert metrics["train_steps"] == 3 and metrics["eval_loss"] is not None
    assert json.loads((run_dir / "metrics.json").read_text())["train_steps"] == 3
    assert (run_dir / "lora_adapters" / "adapter_model.safetensors").exists() and names(run_dir) == []
    assert "stop requested on the last step: finishing the run" in capsys.readouterr().out


def test_output_dir_naming_a_file_and_leftovers_of_a_killed_save(tmp_path, capsys):
    """case 9: output_dir naming an existing file was a traceback (FileExistsError). A run killed while saving its
    first checkpoint leaves only a temp directory: auto starts afresh (nothing to resume, nothing lost)."""
    cfg = cfg_for(tmp_path, max_steps=2, save_steps=100)
    (tmp_path / "out").write_text("not a directory")
    with pytest.raises(UserError, match=r"cannot be the run directory, .*out is a file; set output_dir"):
        train(build_config(cfg))
    assert (tmp_path / "out").read_text() == "not a directory"
    (tmp_path / "out").unlink()
    run_dir = tmp_path / "out" / "run"
    (run_dir / ".tmp-checkpoint-2-4242").mkdir(parents=True)
    assert train(build_config({**cfg, "resume_from_checkpoint": "auto"}))["train_steps"] == 2
    assert "no complete checkpoint yet, starting fresh" in capsys.readouterr().out
