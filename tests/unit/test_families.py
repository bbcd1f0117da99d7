"""Every row of the model-family table (families.py): packed rows equal their examples run one at a time (loss and
LoRA gradients), in every layer, including layers that carry state along the sequence; the row's targets, fused
kernels and refusal of anything else."""

import json
import logging
import random

import pytest
import torch

from qwen_sft.layers import recurrent
from qwen_sft.batching import collate_padding_free, pack_rows
from qwen_sft.config import TrainConfig
from qwen_sft.data.encode import Encoded
from qwen_sft.errors import UserError
from qwen_sft.families import FAMILIES, family_of, family_of_path, meta_model
from qwen_sft.loss import CausalLMLoss
from qwen_sft.model import load_base_model, lora_layout, wrap_lora
from tests.tiny import standin_dir

ROW = 96  # tokens per packed row
# Each family's row; a family with stateful layers runs its layers' CPU fallback, slow: the whole suite only.
FAMILY_CASES = [pytest.param(f, id=f.name, marks=[pytest.mark.slow] if f.stateful_layers else []) for f in FAMILIES]


def _module(fam, checkpointing: bool, fused: bool = True):
    cfg = TrainConfig(model_name_or_path=str(standin_dir(fam.name, **fam.standin_variants[0])), bf16=False,
                      lora_rank=4, lora_alpha=8, lora_dropout=0.0, gradient_checkpointing=checkpointing,
                      fused_lora=fused, fused_norm_mlp=fused)
    model = load_base_model(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    model = wrap_lora(model, cfg)
    with torch.no_grad():  # non-zero B: every LoRA weight gets a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return CausalLMLoss(model, chunk_size=16)


def _examples(seed: int, vocab: int) -> list[Encoded]:
    """Random prompt / reply lengths: some replies of 1 token, one example as long as the row."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    shapes = [(rng.randint(1, 30), 1) for _ in range(3)] + [(rng.randint(1, 30), rng.randint(1, 30)) for _ in range(5)]
    shapes.append((ROW // 2, ROW - ROW // 2))  # fills a row by itself
    rows = []
    for prompt, reply in shapes:
        ids = torch.randint(0, vocab, (prompt + reply,), generator=g).tolist()
        rows.append(Encoded(ids, [-100] * prompt + ids[prompt:]))
    return rows


def _loss_and_grads(module, batches):
    module.zero_grad()
    total = sum(module(**{k: b[k] for k in ("input_ids", "position_ids", "targets")}) for b in batches)
    total.backward()
    return total.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the reference tensor's scale."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _packed_vs_alone(fam, seed: int, checkpointing: bool):
    module = _module(fam, checkpointing)
    rows = _examples(seed, module.causal_lm().config.vocab_size - 300)
    packs = pack_rows([len(r.input_ids) for r in rows], ROW)
    assert any(len(p) > 2 for p in packs) and any(len(rows[p[0]].input_ids) == ROW for p in packs if len(p) == 1)
    loss_p, grads_p = _loss_and_grads(module, [collate_padding_free([rows[i] for i in p]) for p in packs])
    loss_a, grads_a = _loss_and_grads(module, [collate_padding_free([r]) for r in rows])
    assert grads_p.keys() == grads_a.keys() and grads_p
    return _rel(loss_p, loss_a), max(_rel(grads_p[n], grads_a[n]) for n in grads_a)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("fam", FAMILY_CASES)
def test_packed_rows_equal_examples_one_at_a_time(fam, seed, checkpointing):
    """float32: the packed and the one-at-a-time forward differ only in the order of float additions."""
    loss_diff, grad_diff = _packed_vs_alone(fam, seed, checkpointing)
    assert loss_diff <= 1e-5 and grad_diff <= 1e-5, (loss_diff, grad_diff)


@pytest.mark.slow
@pytest.mark.parametrize("fam", [f for f in FAMILIES if f.stateful_layers], ids=lambda f: f.name)
def test_without_the_reset_packed_rows_leak(fam, monkeypatch):
    """The check above can fail: with the reset off (each stateful layer runs over the whole row, as transformers'
    own forward does), the packed gradients are far from the one-at-a-time ones."""
    def whole_row(self, own, hidden_states, lens, kwargs):
        return own(self, hidden_states, **kwargs)

    monkeypatch.setattr(recurrent, "_apart", whole_row)
    loss_diff, grad_diff = _packed_vs_alone(fam, 0, False)
    # The gradients show it by far (about 0.4 of their scale here); the summed loss of the random stand-in, a few
    # hundred nats per example from its large random logits, moves by a few parts in a million.
    assert grad_diff > 1e-2 and loss_diff > 1e-7, (loss_diff, grad_diff)


@pytest.mark.parametrize("fam", FAMILY_CASES)
def test_a_stateful_family_has_its_reset(fam):
    """A row whose layers carry state cannot join the table without the function that keeps rows apart."""
    if fam.stateful_layers:
        assert fam.keep_rows_apart is not None
    model = load_base_model(TrainConfig(model_name_or_path=str(standin_dir(fam.name, **fam.standin_variants[0])),
                                        bf16=False), torch.device("cpu"))
    stateful = [m for m in model.modules() if type(m).__name__ in fam.stateful_layers]
    assert bool(stateful) == bool(fam.stateful_layers)
    assert recurrent.rows_kept_apart(model) == bool(fam.stateful_layers)


def test_packed_row_through_stateful_layers_without_the_reset_is_refused():
    fam = next(f for f in FAMILIES if f.stateful_layers)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(standin_dir(fam.name, **fam.standin_variants[0]))
    module = CausalLMLoss(model)
    batch = collate_padding_free(_examples(0, 1000)[:2])
    with pytest.raises(ValueError, match="without recurrent.keep_rows_apart: the examples would see each other"):
        module(**{k: batch[k] for k in ("input_ids", "position_ids", "targets")})


@pytest.mark.parametrize("fam", FAMILY_CASES)
def test_fused_kernels_of_each_family_equal_transformers(fam):
    """The row's memory-light kernels (fused LoRA Linear, its RMSNorm and MLP classes) change nothing but memory:
    loss and LoRA gradients of a packed batch equal PEFT's and transformers' own forwards (float32)."""
    from qwen_sft.layers.fused import NORM_FORWARDS, _mlp_forward

    fused, plain = _module(fam, True, fused=True), _module(fam, True, fused=False)
    routed = [type(m).__name__ for m in fused.modules()
              if getattr(vars(m).get("forward"), "__func__", None) in (*NORM_FORWARDS.values(), _mlp_forward)]
    assert fam.mlp_class in routed and fam.norm_class in routed
    rows = _examples(2, fused.causal_lm().config.vocab_size - 300)
    batches = [collate_padding_free([rows[i] for i in p]) for p in pack_rows([len(r.input_ids) for r in rows], ROW)]
    loss_f, grads_f = _loss_and_grads(fused, batches)
    loss_p, grads_p = _loss_and_grads(plain, batches)
    assert grads_f.keys() == grads_p.keys()
    assert _rel(loss_f, loss_p) <= 1e-6 and max(_rel(grads_f[n], grads_p[n]) for n in grads_p) <= 1e-5


# ---------------------------------------------------------------- targets per layer type


def test_qwen3_5_default_targets_cover_every_layer_and_are_logged(caplog):
    fam = next(f for f in FAMILIES if f.name == "Qwen3.5 dense")
    cfg = TrainConfig(model_name_or_path=str(standin_dir(fam.name, **fam.standin_variants[0])), bf16=False)
    with caplog.at_level(logging.INFO, logger="qwen_sft"):
        model = wrap_lora(load_base_model(cfg, torch.device("cpu")), cfg)
    assert lora_layout(model) == {
        "full attention": {"modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers": 1, "of": 1},
        "linear attention": {"modules": ["in_proj_qkv", "in_proj_z", "out_proj"], "layers": 3, "of": 3},
        "MLP": {"modules": ["gate_proj", "up_proj", "down_proj"], "layers": 4, "of": 4}}
    assert ("LoRA per layer type: full attention 1/1 layers: q_proj, k_proj, v_proj, o_proj; linear attention 3/3 "
            "layers: in_proj_qkv, in_proj_z, out_proj; MLP 4/4 layers: gate_proj, up_proj, down_proj") in caplog.text


def test_a_target_in_some_layers_only_says_which(caplog):
    fam = next(f for f in FAMILIES if f.name == "Qwen3.5 dense")
    cfg = TrainConfig(model_name_or_path=str(standin_dir(fam.name, **fam.standin_variants[0])), bf16=False,
                      lora_target_modules=["q_proj", "v_proj", "gate_proj"])
    with caplog.at_level(logging.INFO, logger="qwen_sft"):
        wrap_lora(load_base_model(cfg, torch.device("cpu")), cfg)
    assert "no LoRA in the 3 linear attention layers: lora_target_modules ['q_proj', 'v_proj', 'gate_proj'] names " \
           "no module there" in caplog.text
    assert "q_proj reaches 1 of the 4 layers (the full attention layers only)" in caplog.text
    assert "v_proj reaches 1 of the 4 layers (the full attention layers only)" in caplog.text
    assert "gate_proj reaches" not in caplog.text  # every layer has an MLP


# ---------------------------------------------------------------- what is not in the table


@pytest.mark.parametrize(
    "model_type,arch",
    [("qwen3_moe", "Qwen3MoeForCausalLM"), ("qwen3_next", "Qwen3NextForCausalLM"), ("llama", "LlamaForCausalLM")],
)
def test_unknown_architecture_is_refused_in_one_line(tmp_path, model_type, arch):
    from transformers import AutoConfig

    AutoConfig.for_model(model_type, architectures=[arch]).save_pretrained(tmp_path)
    with pytest.raises(UserError) as e:
        family_of_path(str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (f"{tmp_path}: model_type '{model_type}' ({arch}) is not supported; qwen-sft trains Qwen3 dense "
                   f"(model_type qwen3); Qwen3.5 dense (model_type qwen3_5 / qwen3_5_text). See docs/models.md")


def test_unknown_architecture_is_refused_by_train_before_anything_is_written(tmp_path, capsys):
    """A Qwen3-MoE checkpoint ended in a PEFT traceback after encoding the data; now one line, exit 2, no run dir."""
    from transformers import AutoConfig

    from qwen_sft.cli import main

    moe = tmp_path / "moe"
    AutoConfig.for_model("qwen3_moe", architectures=["Qwen3MoeForCausalLM"]).save_pretrained(moe)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n")
    rc = main(["train", f"model_name_or_path={moe}", f"dataset={data}", f"output_dir={tmp_path / 'out'}", "run_name=r",
               "bf16=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == (f"error: {moe}: model_type 'qwen3_moe' (Qwen3MoeForCausalLM) is not supported; "
                                   "qwen-sft trains Qwen3 dense (model_type qwen3); Qwen3.5 dense (model_type qwen3_5 "
                                   "/ qwen3_5_text). See docs/models.md")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match=r"model_type 'qwen3_moe' \(Qwen3MoeForCausalLM\) is not supported"):
        load_base_model(TrainConfig(model_name_or_path=str(moe), bf16=False), torch.device("cpu"))


@pytest.mark.parametrize("checkpoint", ["Qwen3.5-0.8B", "Qwen3.5-4B", "Qwen3.5-27B", "Qwen3.6-27B", "Qwen3.8-27B"])
def test_published_configs_belong_to_qwen3_5_and_build_on_meta(checkpoint):
    from transformers import AutoConfig

    from qwen_sft.assets import qwen3_5_checkpoint_dir

    config = AutoConfig.from_pretrained(qwen3_5_checkpoint_dir(checkpoint))
    fam = family_of(config)
    assert fam.name == "Qwen3.5 dense" and config.architectures[0] in fam.checkpoint_classes
    model = meta_model(config)
    assert type(model).__name__ == fam.causal_lm and model.lm_head.weight.is_meta
    text = config.get_text_config()
    n_linear = sum(t == "linear_attention" for t in text.layer_types)
    assert sum(type(m).__name__ in fam.stateful_layers for m in model.modules()) == n_linear
    # every LM tensor of the model sits in a published checkpoint under the family's prefix
    if checkpoint == "Qwen3.6-27B":
        index = json.loads((qwen3_5_checkpoint_dir.__globals__["QWEN3_5_DIR"] / checkpoint
                            / "model.safetensors.index.json").read_text())["weight_map"]
        prefix = fam.lm_prefix(config.architectures[0])
        names = {n.replace("model.", prefix, 1) if n.startswith("model.") else n for n, _ in model.named_parameters()}
        assert names <= set(index) and len(names) == len(
            [k for k in index if k.startswith(prefix) or k == "lm_head.weight"]
        )
