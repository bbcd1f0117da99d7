"""The fused LoRA Linear, RMSNorm, SwiGLU and MLP give the loss and gradients of the code they replace (PEFT's
dropout masks and RNG stream included) and keep less for backward."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from qwen_sft.layers import attention
from qwen_sft.batching import collate_padding_free
from qwen_sft.config import TrainConfig
from qwen_sft.data.encode import Encoded
from qwen_sft.layers.fused import (_fused_forward, _mlp_forward, _rms_norm_forward, fuse_lora_layers, fuse_norm_mlp,
                             unfuse_lora_layers, unfuse_norm_mlp)
from qwen_sft.model import wrap_lora
from qwen_sft.testing import lora_loss_pair
from tests.tiny import tiny_model_dir


def _pair(dtype=torch.float32, dropout=0.3, checkpointing=False):
    """(PEFT's forward, fused forward) on identical LoRA models in train mode, B non-zero."""
    plain, fused = lora_loss_pair(tiny_model_dir(), dtype=dtype, dropout=dropout, checkpointing=checkpointing,
                                  chunk_size=7)
    assert fuse_lora_layers(fused) == 2 * 7  # 2 layers x 7 projections
    return plain, fused


def _batch():
    g = torch.Generator().manual_seed(3)
    rows = []
    for n in (9, 17, 5):
        ids = torch.randint(0, 151_000, (n,), generator=g).tolist()
        rows.append(Encoded(ids, [-100] * (n // 2) + ids[n // 2:]))
    b = collate_padding_free(rows)
    return {k: b[k] for k in ("input_ids", "position_ids", "targets")}


def _close(a, b):
    """Equal up to fp32 rounding, relative to the tensor's scale (a wrong dropout mask moves it by O(1))."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(a.abs().max()))


def _run(module, batch, seed=7):
    torch.manual_seed(seed)
    with module.adapter_input_casts_off():
        loss = module(**batch)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
    return loss.detach(), grads, torch.get_rng_state()


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing,dropout", [(False, 0.3), (True, 0.3), (True, 0.0)])
def test_fused_equals_peft_with_dropout(checkpointing, dropout):
    plain, fused = _pair(checkpointing=checkpointing, dropout=dropout)
    batch = _batch()
    loss_a, grads_a, rng_a = _run(plain, batch)
    loss_b, grads_b, rng_b = _run(fused, batch)
    # Dropout 0.3 with a different mask in forward and backward (or a different one than PEFT draws) would
    # move the loss and the LoRA gradients far beyond these tolerances.
    assert torch.allclose(loss_a, loss_b, rtol=1e-6), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == 28
    for name in grads_a:
        assert _close(grads_a[name], grads_b[name]), name
    assert torch.equal(rng_a, rng_b)  # the global RNG stream is PEFT's: resume stays exact


def test_fused_differs_from_another_mask():
    # The comparison above can tell masks apart: a different dropout seed changes loss and gradients.
    plain, fused = _pair()
    batch = _batch()
    loss_a, grads_a, _ = _run(plain, batch, seed=7)
    loss_b, grads_b, _ = _run(fused, batch, seed=8)
    assert not torch.allclose(loss_a, loss_b, rtol=1e-4)


def test_fused_bf16_autocast_matches_peft(monkeypatch):
    plain, fused = _pair(dtype=torch.bfloat16, dropout=0.1)
    assert fused.autocast_dtype == torch.bfloat16
    batch = _batch()
    loss_a, grads_a, _ = _run(plain, batch)
    addmm_dtypes = []
    addmm_ = torch.Tensor.addmm_
    monkeypatch.setattr(
        torch.Tensor, "addmm_", lambda *a, **k: addmm_dtypes.append({t.dtype for t in a[:3]}) or addmm_(*a, **k)
    )
    loss_b, grads_b, _ = _run(fused, batch)
    assert len(addmm_dtypes) == 14 and all(d == {torch.bfloat16} for d in addmm_dtypes)  # the branch runs in bf16
    assert torch.allclose(loss_a, loss_b, rtol=2e-3), (loss_a, loss_b)
    for name in grads_a:
        assert grads_b[name].dtype == torch.float32  # fp32 master gradients, as PEFT's
        cos = torch.nn.functional.cosine_similarity(grads_a[name].flatten(), grads_b[name].flatten(), dim=0)
        assert cos > 0.995, (name, cos)


def test_without_gradient_or_in_eval_the_result_is_peft_s():
    plain, fused = _pair()
    batch = _batch()
    with torch.no_grad():  # no gradient: PEFT's own forward, dropout included
        torch.manual_seed(1)
        a = plain(**batch)
        torch.manual_seed(1)
        b = fused(**batch)
    assert torch.equal(a, b)
    plain.eval(), fused.eval()  # eval with gradient: fused, no dropout
    assert torch.allclose(plain(**batch), fused(**batch), rtol=1e-6)


def _saved_bytes(module, fn) -> int:
    """Bytes of the distinct tensors autograd saves while fn() runs, weights (and views of them) not counted."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_fused_keeps_only_the_input_and_the_rank_wide_activation():
    torch.manual_seed(0)
    n, d_in, d_out, r = 64, 32, 48, 4
    base = torch.nn.Sequential(torch.nn.Linear(d_in, d_out, bias=False))
    plain = get_peft_model(base, LoraConfig(r=r, lora_alpha=8, lora_dropout=0.1, target_modules=["0"])).train()
    fused = copy.deepcopy(plain)
    assert fuse_lora_layers(fused) == 1
    x = torch.randn(n, d_in, requires_grad=True)
    # fused: x and h = dropout(x) @ A^T, fp32. x is one tensor however many projections read it.
    assert _saved_bytes(fused, lambda: fused(x)) == 4 * (n * d_in + n * r)
    # PEFT: h, the dropped-out copy of x and the dropout's scaled mask (fp32 on CPU, bool on CUDA), per
    # projection; the frozen base layer keeps only its weight.
    assert _saved_bytes(plain, lambda: plain(x)) == 4 * (n * r + n * d_in + n * d_in)


def test_dropout_in_row_chunks_matches_the_same_chunked_masks(monkeypatch):
    import qwen_sft.layers.fused

    # 40 rows of 32: 6 calls forward, 6 again backward
    monkeypatch.setattr(qwen_sft.layers.fused, "DROPOUT_CHUNK", 7 * 32 + 5)
    torch.manual_seed(0)
    n, d_in, d_out, r, p = 40, 32, 48, 4, 0.3
    base = torch.nn.Sequential(torch.nn.Linear(d_in, d_out, bias=False))
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=8, lora_dropout=p, target_modules=["0"])).train()
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.lora_B.default.weight.normal_(0, 0.5)
    fuse_lora_layers(model)
    x = torch.randn(n, d_in, requires_grad=True)
    g = torch.randn(n, d_out)

    calls = []
    dropout = torch.native_dropout
    monkeypatch.setattr(torch, "native_dropout", lambda t, *a: calls.append(t.shape[0]) or dropout(t, *a))
    torch.manual_seed(5)
    model(x).backward(g)
    assert calls == [7, 7, 7, 7, 7, 5] * 2  # forward, then backward regenerating the same chunks
    got = [x.grad.clone(), layer.lora_A.default.weight.grad.clone(), layer.lora_B.default.weight.grad.clone()]
    x.grad = None
    model.zero_grad()
    # Reference: plain autograd over the same chunked dropout calls.
    torch.manual_seed(5)
    xd = torch.cat([dropout(c, p, True)[0] for c in x.split(7)])
    a, b = layer.lora_A.default.weight, layer.lora_B.default.weight
    (layer.base_layer(x) + xd @ a.T @ b.T * layer.scaling["default"]).backward(g)
    want = [x.grad, a.grad, b.grad]
    for u, v in zip(got, want):
        assert _close(v, u)


def test_not_fused_for_dora_or_when_switched_off_or_sharded():
    attention.register()

    def n_fused(**kw):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(), dtype=torch.float32)
        model = wrap_lora(model, TrainConfig(lora_rank=4, lora_alpha=8, **kw))
        return sum(getattr(m.forward, "__func__", None) is _fused_forward for m in model.modules())

    assert n_fused() == 14
    assert n_fused(use_dora=True) == 0
    assert n_fused(fused_lora=False) == 0
    assert n_fused(distributed_strategy="deepspeed_zero3") == 0


def test_norm_mlp_fused_by_default_and_only_the_mlp_where_liger_is_applied():
    def n_fused(liger=False, **kw):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(), dtype=torch.float32)
        if liger:
            model._qwen_sft_liger = True  # what apply_liger marks (it needs CUDA)
        model = wrap_lora(model, TrainConfig(lora_rank=4, lora_alpha=8, **kw))
        return sum(getattr(m.forward, "__func__", None) in (_rms_norm_forward, _mlp_forward) for m in model.modules())

    assert n_fused() == 11  # 2 layers x (4 RMSNorm + MLP) + the final norm
    assert n_fused(fused_norm_mlp=False) == 0
    assert n_fused(liger=True) == 2  # liger's RMSNorm kernel; the MLPs stay ours


def test_liger_auto_is_skipped_where_it_cannot_run_and_true_explains_why():
    from qwen_sft.errors import UserError
    from qwen_sft.model import apply_liger

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(), dtype=torch.float32)
    assert apply_liger(model, torch.device("cpu"), required=False) is False
    assert not getattr(model, "_qwen_sft_liger", False)
    with pytest.raises(UserError, match="liger_kernel: true needs a CUDA GPU"):
        apply_liger(model, torch.device("cpu"), required=True)
    # A family whose row names no liger function (an architecture outside the table is refused at load).
    model.config.model_type = "qwen3_5_text"
    assert apply_liger(model, torch.device("cuda"), required=False) is False
    with pytest.raises(UserError, match="liger_kernel: true is not wired for Qwen3.5 dense models here"):
        apply_liger(model, torch.device("cuda"), required=True)


def test_unfuse_restores_peft_forward():
    plain, fused = _pair()
    batch = _batch()
    unfuse_lora_layers(fused)
    assert not any("forward" in vars(m) for m in fused.modules() if "lora" in type(m).__module__)
    loss_a, grads_a, _ = _run(plain, batch)
    loss_b, grads_b, _ = _run(fused, batch)
    assert torch.equal(loss_a, loss_b)  # bit-identical: the same code runs
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)


# ---------------------------------------------------------------- RMSNorm and SwiGLU


def _tiny_layer_modules(dtype):
    from transformers import AutoConfig
    from transformers.models.qwen3.modeling_qwen3 import Qwen3MLP, Qwen3RMSNorm

    config = AutoConfig.from_pretrained(tiny_model_dir())
    torch.manual_seed(0)
    norm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    return norm, Qwen3MLP(config).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_and_swiglu_equal_transformers(dtype):
    norm, mlp = _tiny_layer_modules(dtype)
    norm.weight.requires_grad_(True)  # frozen in LoRA training; checked here too
    ref_norm, ref_mlp = copy.deepcopy(norm), copy.deepcopy(mlp)
    assert fuse_norm_mlp(torch.nn.ModuleList([norm, mlp])) == 2
    x = torch.randn(3, 5, norm.weight.shape[0], dtype=dtype) * 3
    g = torch.randn_like(x)
    outs, grads = [], []
    for n, m in ((ref_norm, ref_mlp), (norm, mlp)):
        xi = x.clone().requires_grad_(True)
        y = m(n(xi))
        y.backward(g)
        outs.append(y.detach())
        grads.append([xi.grad, n.weight.grad] + [p.grad for p in m.parameters()])
    assert torch.equal(outs[0], outs[1])  # forward: the same ops, bit for bit
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for a, b in zip(*grads):
        assert a.dtype == b.dtype and torch.allclose(a, b, **tol), (a - b).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qwen3_5_rms_norm_equals_transformers(dtype):
    """Qwen3.5's RMSNorm scales by 1 + weight (stored zero-centred), in fp32 before the cast."""
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5RMSNorm

    torch.manual_seed(0)
    norm = Qwen3_5RMSNorm(64, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(-0.5, 0.5)
    norm.weight.requires_grad_(True)
    ref = copy.deepcopy(norm)
    assert fuse_norm_mlp(torch.nn.ModuleList([norm])) == 1
    x = torch.randn(3, 5, 64, dtype=dtype) * 3
    g = torch.randn_like(x)
    outs, grads = [], []
    for n in (ref, norm):
        xi = x.clone().requires_grad_(True)
        y = n(xi)
        y.backward(g)
        outs.append(y.detach())
        grads.append([xi.grad, n.weight.grad])
    assert torch.equal(outs[0], outs[1])  # forward: the same ops, bit for bit
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for a, b in zip(*grads):
        assert a.dtype == b.dtype and torch.allclose(a, b, **tol), (a - b).abs().max()
    if dtype == torch.bfloat16:  # what each keeps for backward, the weight frozen as in LoRA training
        x = torch.randn(40, 64, dtype=dtype, requires_grad=True)
        norm.weight.requires_grad_(False)
        ref.weight.requires_grad_(False)
        assert _saved_bytes(norm, lambda: norm(x)) == 2 * 40 * 64 + 4 * 40  # x (the caller's) + rstd
        assert _saved_bytes(ref, lambda: ref(x)) == 4 * 40 * 64 + 4 * 40 + 4 * 64  # x_hat in fp32, rstd, 1 + w


def test_rms_norm_keeps_x_and_rstd_only():
    norm, mlp = _tiny_layer_modules(torch.bfloat16)
    ref_norm, ref_mlp = copy.deepcopy(norm), copy.deepcopy(mlp)
    fuse_norm_mlp(torch.nn.ModuleList([norm, mlp]))
    for p in [*norm.parameters(), *mlp.parameters(), *ref_norm.parameters(), *ref_mlp.parameters()]:
        p.requires_grad_(False)  # frozen, as in LoRA training
    n, hidden, inter = 40, norm.weight.shape[0], mlp.gate_proj.out_features
    x = torch.randn(n, hidden, dtype=torch.bfloat16, requires_grad=True)
    assert _saved_bytes(norm, lambda: norm(x)) == 2 * n * hidden + 4 * n  # x (shared with the caller) + rstd
    assert _saved_bytes(ref_norm, lambda: ref_norm(x)) == 4 * n * hidden + 4 * n  # x's fp32 copy + rstd
    # SwiGLU: gate and up (bf16); autograd's also keeps silu(gate). (Frozen projections keep only their weights.)
    assert _saved_bytes(mlp, lambda: mlp(x)) == 2 * 2 * n * inter
    assert _saved_bytes(ref_mlp, lambda: ref_mlp(x)) == 3 * 2 * n * inter


def test_lora_mlp_keeps_gate_and_up_not_their_product():
    _, fused = _pair(checkpointing=False)
    fuse_norm_mlp(fused)
    mlp = fused.causal_lm().model.layers[0].mlp
    n, hidden, inter, r = 31, mlp.gate_proj.base_layer.in_features, mlp.gate_proj.base_layer.out_features, 4
    x = torch.randn(1, n, hidden, requires_grad=True)
    # gate_proj and up_proj keep x (one tensor) and their h; the MLP keeps gate, up and down's h, in fp32
    assert _saved_bytes(mlp, lambda: mlp(x)) == 4 * (n * hidden + 2 * n * inter + 3 * n * r)


# chunk 7 * 64 + 3: 7-row dropout chunks of the 64-wide inputs across the 31 rows, 1-row ones of the MLP's
# 128-wide product (half a chunk there)
@pytest.mark.parametrize("chunk,dropout", [(None, 0.3), (7 * 64 + 3, 0.3), (None, 0.0)])
def test_model_with_fused_norm_mlp_equals_transformers(monkeypatch, chunk, dropout):
    import qwen_sft.layers.fused

    if chunk:
        monkeypatch.setattr(qwen_sft.layers.fused, "DROPOUT_CHUNK", chunk)
    calls = []
    monkeypatch.setattr(
        qwen_sft.layers.fused._SwiGLUDown,
        "apply",
        lambda *a, _f=qwen_sft.layers.fused._SwiGLUDown.apply: calls.append(1) or _f(*a),
    )
    plain, fused = _pair(checkpointing=True, dropout=dropout)
    # per layer: 4 norms (input, post-attention, q, k) and the MLP; final norm
    assert fuse_norm_mlp(fused) == 2 * 4 + 1 + 2
    batch = _batch()
    loss_a, grads_a, rng_a = _run(plain, batch)
    loss_b, grads_b, rng_b = _run(fused, batch)
    assert len(calls) == 2 * 2  # each layer's MLP (LoRA on down_proj) as one function, forward and recompute
    assert torch.allclose(loss_a, loss_b, rtol=1e-6)
    for name in grads_a:
        assert _close(grads_a[name], grads_b[name]), name
    assert torch.equal(rng_a, rng_b)
    unfuse_norm_mlp(fused)
    assert not any(getattr(m.forward, "__func__", None) in (_rms_norm_forward, _mlp_forward) for m in fused.modules())
