"""Atomic checkpoints: incomplete ones are never picked, a full disk leaves earlier ones intact."""

import errno

import pytest
import torch

from qwen_sft import checkpoint as ckpt
from qwen_sft.errors import UserError


def _save(run_dir, step, keep=5):
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return ckpt.save_checkpoint(run_dir, step, {"w": p.detach() * step}, opt, sched, {"step": step},
                                {"dataset_hash": "abc"}, keep)


def test_auto_picks_latest_complete_and_ignores_partial(tmp_path):
    _save(tmp_path, 2)
    _save(tmp_path, 4)
    (tmp_path / "checkpoint-9").mkdir()  # killed mid-save: no COMPLETE marker
    (tmp_path / ".tmp-checkpoint-6-123").mkdir()
    assert ckpt.resolve_resume("auto", tmp_path).name == "checkpoint-4"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    with pytest.raises(UserError, match="not a complete checkpoint"):
        ckpt.resolve_resume(str(tmp_path / "checkpoint-9"), tmp_path)
    assert ckpt.resolve_resume("auto", tmp_path / "nothing-here") is None


def test_rotation_keeps_newest(tmp_path):
    for s in (1, 2, 3, 4):
        _save(tmp_path, s, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-4"]


def test_full_disk_names_path_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    first = _save(tmp_path, 2)
    before = {f.name: f.read_bytes() for f in first.iterdir()}

    def no_space(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "_write_json", no_space)
    with pytest.raises(UserError) as e:
        _save(tmp_path, 4)
    msg = str(e.value)
    assert str(tmp_path / "checkpoint-4") in msg and "no space left on device" in msg
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-2"]  # no temp dir left behind
    assert {f.name: f.read_bytes() for f in first.iterdir()} == before
    assert ckpt.resolve_resume("auto", tmp_path) == first


def test_checkpoint_state_loads_with_weights_only(tmp_path):
    path = _save(tmp_path, 3)
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([p], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    adapter, state = ckpt.load_checkpoint(path, opt, sched)
    record = ckpt.read_run_record(path)
    # One AdamW step of lr 0.1 from ones (weight decay 0.01) gives 1 - 0.1 - 0.001; saved times step 3.
    assert torch.allclose(adapter["w"], torch.full((3,), 3 * (1 - 0.1 - 0.001)), atol=1e-6)
    assert state == {"step": 3} and record == {"dataset_hash": "abc"}
    assert opt.state_dict()["param_groups"][0]["lr"] == 0.1  # restored from the checkpoint


def test_record_diff_names_each_changed_field():
    old = {"dataset_hash": "a", "cutoff_len": 512, "lora": {"r": 8}, "base_model": "m"}
    new = {"dataset_hash": "b", "cutoff_len": 512, "lora": {"r": 16}, "base_model": "m"}
    diff = ckpt.record_diff(old, new)
    assert any(d.startswith("dataset_hash: checkpoint has 'a', this run has 'b'") for d in diff)
    assert any(d.startswith("lora:") for d in diff)
    assert not any(d.startswith("cutoff_len") or d.startswith("base_model") for d in diff)


def test_a_checkpoint_with_the_earlier_default_targets_resumes_under_all_projections(tmp_path):
    """The default lora_target_modules became the word all-projections (#22); runs before that recorded the list
    itself. A checkpoint of such a run, resumed with an unchanged config, was refused: by the run record ('lora:
    checkpoint has {... targets: [q_proj, ...]}') and by check_lora_shape, even with force_resume, though the same
    modules train. Records now hold the modules, and both sides are compared as modules."""
    import json

    from qwen_sft.config import ALL_PROJECTIONS, TrainConfig
    from qwen_sft.data.tokenizer import load_tokenizer
    from tests.tiny import tiny_model_dir

    model = str(tiny_model_dir())
    tok = load_tokenizer(model)
    earlier = ckpt.run_record(TrainConfig(model_name_or_path=model, lora_target_modules=list(ALL_PROJECTIONS)), [], tok)
    now_cfg = TrainConfig(model_name_or_path=model)
    now = ckpt.run_record(now_cfg, [], tok)
    assert now_cfg.lora_target_modules == "all-projections" and now["lora"]["targets"] == list(ALL_PROJECTIONS)
    assert ckpt.record_diff(earlier, now) == []
    for recorded in (list(ALL_PROJECTIONS), "all-projections"):  # before #22; between #22 and this fix
        path = _save(tmp_path / str(len(recorded)), 1)
        (path / "run_record.json").write_text(json.dumps({**earlier, "lora": {**earlier["lora"], "targets": recorded}}))
        ckpt.check_lora_shape(path, now_cfg)  # not refused
        with pytest.raises(UserError, match=r"lora_target_modules: checkpoint has \['q_proj', 'k_proj', 'v_proj', "
                                            r"'o_proj', 'gate_proj', 'up_proj', 'down_proj'\], this run has "
                                            r"\['q_proj'\]"):
            ckpt.check_lora_shape(path, TrainConfig(model_name_or_path=model, lora_target_modules=["q_proj"]))
