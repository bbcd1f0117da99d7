"""Load the base model, pick dtype and attention, wrap with LoRA; load saved adapters and
merged models; build the tiny stand-in."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from .layers import attention
from .config import SHARDED_STRATEGIES
from .errors import UserError
from .families import ALL_PROJECTIONS_NAME, family_of_model, family_of_path, resolve_targets
from .layers.fused import fuse_lora_layers, fuse_norm_mlp
from .runfiles import load_hint as _load_hint

log = logging.getLogger("qwen_sft")


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def pick_dtype(want_bf16: bool, device: torch.device) -> torch.dtype:
    # bf16 matmuls are ~30x slower than fp32 on CPUs without AMX / AVX512-BF16: train in fp32 there.
    if want_bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if want_bf16:
        log.info("bf16 requested but not supported on %s: training in float32", device.type)
    return torch.float32


def pick_attention(cfg, device: torch.device) -> str:
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    if cfg.flash_attention and device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return attention.NAME


def apply_liger(model, device: torch.device, required: bool = True, swiglu: bool = True) -> bool:
    """liger-kernel's fused RMSNorm, RoPE and (with swiglu) SwiGLU on a model of a family that names liger's
    function for it (families.py), in place (not its loss: ours is kept).

    required (liger_kernel: true): a clear error where it cannot run. Not required (auto): used on CUDA when
    importable, else skipped. Returns whether it was applied. liger patches transformers' module functions of
    that family for the whole process, not only this model.
    """
    fam = family_of_model(model)
    why, apply = None, None
    if device.type != "cuda":
        why = "needs a CUDA GPU (its kernels are Triton)"
    elif fam.liger is None:
        why = f"is not wired for {fam.name} models here"
    else:
        try:
            import liger_kernel.transformers as liger

            apply = getattr(liger, fam.liger)
        except (ImportError, AttributeError) as e:
            why = f"needs the liger-kernel package: pip install liger-kernel, or the .[gpu] extra ({e})"
    if why:
        if required:
            raise UserError(f"liger_kernel: true {why}; set liger_kernel: auto or false")
        if device.type == "cuda":
            log.info("liger-kernel not used (liger_kernel: auto): it %s", why)
        return False
    apply(rope=True, rms_norm=True, swiglu=swiglu, cross_entropy=False, fused_linear_cross_entropy=False, model=model)
    model._qwen_sft_liger = True  # read by wrap_lora: liger's RMSNorm replaces fused_norm_mlp's
    log.info("liger-kernel: fused RMSNorm, RoPE%s (liger_kernel: %s)", " and SwiGLU" if swiglu else "",
             "true" if required else "auto")
    return True


def load_base_model(cfg, device: torch.device):
    from transformers import AutoModelForCausalLM

    dtype = pick_dtype(cfg.bf16, device)
    attn = pick_attention(cfg, device)
    attention.register()
    kwargs = dict(dtype=dtype, attn_implementation=attn, trust_remote_code=cfg.trust_remote_code, use_safetensors=True)
    if cfg.quantization_bit:
        kwargs["quantization_config"] = _bnb_config(dtype, device)
    # The config alone first: an architecture without a row in families.py is refused before any weight loads.
    fam = family_of_path(cfg.model_name_or_path, cfg.trust_remote_code)
    try:
        # The text-only causal LM, also from a vision-language checkpoint (Qwen3.5 as published): the vision
        # tower and the MTP head stay on disk, untouched; merge copies them over byte for byte.
        model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(_load_hint(cfg.model_name_or_path, e)) from None
    # A KV cache in a training forward breaks per-example attention of padding-free batches.
    model.config.use_cache = False
    if fam.keep_rows_apart is not None:
        fam.keep_rows_apart(model)  # padding-free rows: no state crosses an example boundary
    if cfg.liger_kernel:  # true or "auto"
        # With fused_norm_mlp the MLP is ours (it keeps less: see layers/fused.py), RMSNorm and RoPE liger's.
        apply_liger(model, device, required=cfg.liger_kernel is True, swiglu=not cfg.fused_norm_mlp)
    log.info(
        "model %s: dtype %s, attention %s, device %s",
        cfg.model_name_or_path,
        str(dtype).replace("torch.", ""),
        attn,
        device,
    )
    return model


def _bnb_config(dtype, device):
    if device.type != "cuda":
        raise UserError("quantization_bit: 4-bit QLoRA needs a CUDA GPU (bitsandbytes); set quantization_bit: null on "
                        "CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("quantization_bit: 4 needs bitsandbytes: pip install 'qwen-sft[gpu]'") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def lora_config(cfg, targets=None):
    """targets: the modules PEFT adapts (families.resolve_targets of cfg.lora_target_modules); None: as the config
    names them."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules if targets is None else targets,
                      use_rslora=cfg.use_rslora, use_dora=cfg.use_dora, bias="none", task_type="CAUSAL_LM")


def wrap_lora(model, cfg):
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.quantization_bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    liger = getattr(model, "_qwen_sft_liger", False)
    fam = family_of_model(model)
    targets = resolve_targets(fam, cfg.lora_target_modules)
    names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    try:
        model = get_peft_model(model, lora_config(cfg, targets))
    except ValueError as e:  # peft's NoMatchingPeftModuleError: no module of that name in the model
        if "target module" not in str(e).lower():
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"lora_target_modules: {cfg.lora_target_modules} does not fit the model ({first}); "
                        f"its linear modules are {', '.join(names)}, or use all-linear") from None
    if isinstance(targets, list):  # PEFT refuses a list none of whose names match; one that matches nothing is a typo
        adapted = model.base_model.targeted_module_names
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in adapted)]
        if missing:
            raise UserError(f"lora_target_modules: {', '.join(missing)} {'matches' if len(missing) == 1 else 'match'} "
                            f"no module of the model; its linear modules are {', '.join(names)}, or use "
                            f"{ALL_PROJECTIONS_NAME} (every projection of the model's family)")
    # Sharded engines gather each LoRA weight in its submodule's forward hook, which the fused branch skips.
    if cfg.fused_lora and cfg.distributed_strategy not in SHARDED_STRATEGIES:
        fuse_lora_layers(model)
    if cfg.fused_norm_mlp:
        fuse_norm_mlp(model, rms_norm=not liger)  # liger's RMSNorm kernel, where it is in use
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing needs no requires_grad on the inputs, so a frozen embedding is fine.
        enable = getattr(model, "activation_checkpointing_enable", None)  # the transformers >= 5.x name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA r=%d alpha=%s on %s: %s trainable of %s parameters (%.2f%%)", cfg.lora_rank, cfg.lora_alpha,
             cfg.lora_target_modules, f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    for line in lora_coverage(model, fam, cfg.lora_target_modules):
        log.info("%s", line)
    return model


def lora_layout(model, fam=None) -> dict[str, dict]:
    """What LoRA reaches, per layer type in the family's order (families.Family.layer_types):
    {'linear attention': {'modules': ['in_proj_qkv', ...], 'layers': 3, 'of': 3}}: the adapted module names, how
    many layers of that type have one, how many layers of that type the model has. LoRA modules outside the
    decoder layers (lm_head, embed_tokens) come under 'outside the layers'."""
    from peft.tuners.lora import LoraLayer

    fam = fam or family_of_model(model)
    layout = {kind: {"modules": set(), "layers": set(), "of": set()} for kind in fam.layer_types.values()}
    for name, module in model.named_modules():
        kind, index = fam.layer_slot(name)
        if kind is not None:
            layout.setdefault(kind, {"modules": set(), "layers": set(), "of": set()})["of"].add(index)
        if isinstance(module, LoraLayer):
            entry = layout.setdefault(kind or "outside the layers", {"modules": set(), "layers": set(), "of": set()})
            entry["modules"].add(name.rsplit(".", 1)[-1])
            entry["layers"].add(index)
    order = {name: i for i, name in enumerate(fam.lora_targets)}  # the family's order, then by name
    return {k: {"modules": sorted(v["modules"], key=lambda n: (order.get(n, len(order)), n)),
                "layers": len(v["layers"] - {None}), "of": len(v["of"])}
            for k, v in layout.items() if v["of"] or v["modules"]}


def lora_coverage(model, fam, requested) -> list[str]:
    """Log lines: per layer type, the modules LoRA reaches in how many of its layers; the layer types it misses;
    each requested module name that exists only in some of the decoder layers, with the layers it reaches."""
    from peft.tuners.lora import LoraLayer

    layout = lora_layout(model, fam)
    lines = ["LoRA per layer type: " + "; ".join(
        f"{k} {v['layers']}/{v['of']} layers: {', '.join(v['modules'])}" if v["of"] else f"{k}: "
                                                                                         f"{', '.join(v['modules'])}"
        for k, v in layout.items() if v["modules"])]
    for k, v in layout.items():
        if not v["modules"]:
            lines.append(f"no LoRA in the {v['of']} {k} layers: lora_target_modules {requested} names no module there")
    if not isinstance(requested, list):  # all-projections / all-linear: the lines above say it all
        return lines
    total = len({fam.layer_slot(n)[1] for n, _ in model.named_modules()} - {None})
    by_name: dict[str, set] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            by_name.setdefault(name.rsplit(".", 1)[-1], set()).add(fam.layer_slot(name))
    for name in requested:
        slots = by_name.get(name, set())
        kinds = sorted({k for k, _ in slots if k})
        if kinds and len({i for _, i in slots}) < total:
            lines.append(f"{name} reaches {len({i for _, i in slots})} of the {total} layers (the "
                         f"{' and '.join(kinds)} "
                         f"layers only)")
    return lines


# ---------------------------------------------------------------- saved adapters and merged models

def load_causal_lm(name_or_path: str, dtype: torch.dtype | str):
    """A saved causal LM for merging, validation, evaluation or chat: safetensors only, no remote code."""
    from transformers import AutoModelForCausalLM

    family_of_path(name_or_path)  # an architecture without a row in families.py: one line, before the weights
    try:
        # A vision-language checkpoint loads as its text-only causal LM (families.Family.causal_lm).
        return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, use_safetensors=True,
                                                    trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise UserError(_load_hint(name_or_path, e)) from None


def load_peft(base, adapter_dir: str | Path, *, meta: bool = False):
    """base + the saved LoRA adapter, unmerged and frozen.

    Every saved adapter weight must land in the model and every LoRA weight of the model must come from the
    file: PEFT only warns about LoRA weights the file lacks (they keep their init, B = 0: no update there)
    and silently drops saved weights that match no module (an adapter trained on a deeper model, or one
    with other module names), which would merge, and validate against the same load, as a partial adapter.

    meta: base is on the meta device (families.meta_model): the adapter's own weights are real (float32, CPU),
    the base's stay meta; the streaming merge puts one base tensor at a time in (merge.py).
    """
    from peft import PeftConfig, PeftModel
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    def refuse(why: str):
        return UserError(f"{adapter_dir}: the adapter does not fit the base model ({base.config._name_or_path}): {why}")

    try:
        with warnings.catch_warnings():
            # PEFT warns that adapters on tied embeddings complicate merging; merge() handles exactly that.
            warnings.filterwarnings("ignore", message=r".*tie_word_embeddings=True.*", category=UserWarning)
            # Missing LoRA weights are counted below and refused with the names.
            warnings.filterwarnings("ignore", message=r"Found missing adapter keys.*", category=UserWarning)
            saved = load_peft_weights(str(adapter_dir), device="cpu")
            if meta:  # PeftModel.from_pretrained would leave the adapter's weights on the meta device too
                model = PeftModel(base, PeftConfig.from_pretrained(str(adapter_dir)))
                _materialize_adapter(model, set(saved))
            else:
                model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
            # PeftModel.from_pretrained keeps its load result to itself: load the same weights once more
            # (no change to any value) to learn which ones did not fit.
            fit = set_peft_model_state_dict(model, saved, adapter_name="default")
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise refuse(first) from None
    unexpected = list(fit.unexpected_keys)
    missing = [k.replace(".default", "") for k in fit.missing_keys if "lora_" in k and ".default" in k]
    if unexpected:
        raise refuse(f"{len(unexpected)} saved weight(s) match no module of the base, e.g. {unexpected[0]}")
    if missing:
        raise refuse(f"{len(missing)} LoRA weight(s) of the base are not in the adapter, e.g. {missing[0]}")
    return model


def _materialize_adapter(model, saved: set[str]) -> None:
    """Empty float32 CPU tensors for the adapter's parameters of a PEFT model built on a meta base (LoRA A / B,
    DoRA magnitudes, embedding LoRA, modules_to_save copies, and base weights the adapter file carries itself, as
    PEFT saves an adapted embedding layer), filled by loading the adapter's file."""
    for module_name, module in model.named_modules():
        for name, p in list(module._parameters.items()):
            full = f"{module_name}.{name}"
            if p is not None and p.is_meta and ("lora_" in full or ".modules_to_save." in full or full in saved):
                module._parameters[name] = torch.nn.Parameter(torch.empty(p.shape, dtype=torch.float32),
                                                              requires_grad=False)


# ---------------------------------------------------------------- tiny stand-in

# The Qwen3 stand-in under its earlier name (tests, benches); every family's is in standins.py.
from .standins import TINY_EMBED_STD, TINY_SIZES, build_tiny_qwen3 as build_tiny_model  # noqa: E402,F401
