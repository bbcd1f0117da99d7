"""Model loading choices: dtype, attention, QLoRA refusal, LoRA wrapping, gradient checkpointing."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from qwen_sft.batching import collate_padding_free
from qwen_sft.config import TrainConfig
from qwen_sft.data.encode import Encoded
from qwen_sft.errors import UserError
from qwen_sft.loss import CausalLMLoss
from qwen_sft.model import load_base_model, pick_attention, pick_dtype, wrap_lora
from tests.close import assert_close
from tests.tiny import tiny_model_dir


def _cfg(**kw):
    base = dict(model_name_or_path=str(tiny_model_dir()), lora_rank=4, lora_alpha=8, lora_dropout=0.0, bf16=True)
    base.update(kw)
    return TrainConfig(**base)


def test_cpu_trains_in_float32_with_sdpa_packed_and_logs_it(caplog):
    cpu = torch.device("cpu")
    assert pick_dtype(True, cpu) == torch.float32
    assert pick_attention(_cfg(), cpu) == "sdpa_packed"
    assert pick_attention(_cfg(attn_implementation="eager"), cpu) == "eager"
    with caplog.at_level(logging.INFO, logger="qwen_sft"):
        model = load_base_model(_cfg(), cpu)
    assert model.dtype == torch.float32 and model.config.use_cache is False
    assert "dtype float32, attention sdpa_packed" in caplog.text


def test_qlora_refused_on_cpu():
    with pytest.raises(UserError, match="quantization_bit: 4-bit QLoRA needs a CUDA GPU"):
        load_base_model(_cfg(quantization_bit=4), torch.device("cpu"))


def test_all_linear_and_trainable_count(caplog):
    with caplog.at_level(logging.INFO, logger="qwen_sft"):
        model = wrap_lora(
            load_base_model(_cfg(lora_target_modules="all-linear"), torch.device("cpu")),
            _cfg(lora_target_modules="all-linear"),
        )
    names = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert "trainable of" in caplog.text


def test_gradient_checkpointing_gives_same_loss_and_grads():
    row = Encoded(list(range(100, 140)), [-100] * 20 + list(range(120, 140)))
    batch = collate_padding_free([row, row])
    results = []
    for gc in (False, True):
        torch.manual_seed(0)
        cfg = _cfg(gradient_checkpointing=gc)
        module = CausalLMLoss(wrap_lora(load_base_model(cfg, torch.device("cpu")), cfg))
        module.train()
        loss = module(**batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}))
    (l0, g0), (l1, g1) = results
    assert_close(l0, l1, "loss")
    assert g0.keys() == g1.keys()
    for n in g0:
        assert_close(g0[n], g1[n], n)


@pytest.mark.slow
def test_missing_model_offline_is_a_clear_error(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "qwen_sft.cli", "inspect", "sft/configs/lora_config.yaml",
                          "model_name_or_path=no-such-org/no-such-model"], env=env, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "no-such-org/no-such-model: not a local directory" in out.stderr and "Traceback" not in out.stderr


def test_load_errors_name_the_problem_and_the_fix(tmp_path):
    from qwen_sft.model import load_causal_lm
    from qwen_sft.data.tokenizer import load_tokenizer

    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError) as e:
        load_causal_lm(str(missing), torch.float32)
    assert str(e.value) == f"{missing}: directory not found; check the path (model_name_or_path, --base_model or MODEL)"
    run = tmp_path / "run"
    (run / "lora_adapters").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no config.json\); it looks like a training run: pass .*run/lora_adapters"):
        load_tokenizer(str(run))
    bin_only = tmp_path / "bin-only"
    bin_only.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (bin_only / name).write_bytes((tiny_model_dir() / name).read_bytes())
    torch.save({}, bin_only / "pytorch_model.bin")
    with pytest.raises(UserError, match="holds only PyTorch .bin weights; qwen-sft loads safetensors only"):
        load_causal_lm(str(bin_only), torch.float32)


def test_unknown_target_module_is_a_user_error():
    cfg = _cfg(lora_target_modules=["qproj"])
    with pytest.raises(UserError, match=r"lora_target_modules: \['qproj'\] does not fit the model .* q_proj"):
        wrap_lora(load_base_model(cfg, torch.device("cpu")), cfg)


def test_a_target_that_matches_no_module_is_refused_beside_ones_that_do():
    """lora_target_modules [q_proj, v_prj] (a typo) trained q_proj alone, and nothing said that v_prj reached no
    module: PEFT refuses only a list of which no name matches."""
    cfg = _cfg(lora_target_modules=["q_proj", "v_prj", "in_proj_qkv"])
    with pytest.raises(UserError) as e:
        wrap_lora(load_base_model(cfg, torch.device("cpu")), cfg)
    assert str(e.value) == ("lora_target_modules: v_prj, in_proj_qkv match no module of the model; its linear "
                            "modules are down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj, or "
                            "use "
                            "all-projections (every projection of the model's family)")
    cfg = _cfg(lora_target_modules=["q_proj", "self_attn.v_proj"])  # PEFT's suffix match: a path ending is a name
    assert {n.rsplit(".", 1)[-1] for n in wrap_lora(load_base_model(cfg, torch.device("cpu")), cfg)
            .base_model.targeted_module_names} == {"q_proj", "v_proj"}


@pytest.mark.slow
def test_a_tokenizer_is_parsed_once_per_content_and_thread_and_again_when_its_files_change(tmp_path):
    import shutil
    import threading

    from qwen_sft.assets import qwen3_tokenizer_dir
    from qwen_sft.data.cache import _fingerprint, tokenizer_fingerprint
    from qwen_sft.data.tokenizer import load_tokenizer

    folder, twin = tmp_path / "tok", tmp_path / "twin"
    shutil.copytree(qwen3_tokenizer_dir(), folder)
    shutil.copytree(folder, twin)
    first = load_tokenizer(str(folder))
    assert tokenizer_fingerprint(first) == _fingerprint(first)
    # The same files, here or in another folder: the parsed tokenizer again (a copy naming its own folder), with
    # the digests computed for the first.
    again, other = load_tokenizer(str(folder)), load_tokenizer(str(twin))
    assert again._tokenizer is first._tokenizer and other._tokenizer is first._tokenizer
    assert (first.name_or_path, other.name_or_path) == (str(folder), str(twin))
    assert other.__dict__["_qwen_sft_digests"] is first.__dict__["_qwen_sft_digests"]

    in_thread = []
    worker = threading.Thread(target=lambda: in_thread.append(load_tokenizer(str(folder))))
    worker.start()
    worker.join()
    assert in_thread[0]._tokenizer is not first._tokenizer

    # A rewritten file is a changed tokenizer: parsed again, with digests of its own.
    config = json.loads((folder / "tokenizer_config.json").read_text())
    changed_text = config["chat_template"] = "{# changed #}" + config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    changed = load_tokenizer(str(folder))
    assert changed._tokenizer is not first._tokenizer and changed.chat_template == changed_text
    assert changed.__dict__["_qwen_sft_digests"] == {}
    assert load_tokenizer(str(twin))._tokenizer is first._tokenizer  # the twin's files did not change


def test_a_tokenizer_load_pauses_the_collector_and_leaves_it_as_it_was():
    import gc

    from qwen_sft.data import tokenizer

    seen = []  # whether the collector was on while transformers' AutoTokenizer (stood in for here) parsed

    class Stand:
        pad_token, eos_token, chat_template = "<p>", "<e>", "t"

    def from_pretrained(name, trust_remote_code):
        seen.append(gc.isenabled())
        if name == "bad":
            raise OSError("unreadable")
        return Stand()

    import transformers

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
        assert gc.isenabled()
        tokenizer._load_tokenizer("x", False)
        with pytest.raises(UserError):
            tokenizer._load_tokenizer("bad", False)
        assert seen == [False, False] and gc.isenabled()  # off while parsing, on again after, even on an error
        gc.disable()
        try:
            tokenizer._load_tokenizer("x", False)
            assert not gc.isenabled()  # a process that turned it off keeps it off
        finally:
            gc.enable()


def test_a_digest_is_computed_once_per_template_special_tokens_and_size():
    from qwen_sft.data.template import tokenizer_digest

    class Tok:  # what tokenizer_digest reads of a tokenizer
        chat_template, special_tokens_map, size = "T", {"eos_token": "<e>"}, 10

        def __len__(self):
            return self.size

    calls = []

    def compute(tok):
        calls.append(1)
        return f"{tok.chat_template}|{tok.special_tokens_map['eos_token']}|{len(tok)}"

    tok = Tok()
    assert tokenizer_digest(tok, "a", compute) == tokenizer_digest(tok, "a", compute) == "T|<e>|10"
    assert len(calls) == 1
    tok.chat_template = "U"
    assert tokenizer_digest(tok, "a", compute) == "U|<e>|10"
    tok.special_tokens_map = {"eos_token": "<f>"}
    assert tokenizer_digest(tok, "a", compute) == "U|<f>|10"
    tok.size = 11
    assert tokenizer_digest(tok, "a", compute) == "U|<f>|11"
    assert tokenizer_digest(tok, "b", compute) == "U|<f>|11" and len(calls) == 5  # another digest's own entry
