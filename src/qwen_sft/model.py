"""Load the base model and tokenizer, pick dtype and attention, wrap with LoRA; load saved adapters and
merged models; build the tiny stand-in."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import warnings
from pathlib import Path

import torch

from . import attention
from .config import SHARDED_STRATEGIES
from .errors import UserError
from .fused import fuse_lora_layers, fuse_norm_mlp
from .runfiles import (  # noqa: F401 - moved to runfiles.py (torch-free); kept importable from here for callers
    ADAPTER_TOKENIZER_FILES, adapter_base_model, is_adapter_dir, read_adapter, read_run_meta, tokenizer_dir)
from .runfiles import load_hint as _load_hint

log = logging.getLogger("qwen_sft")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(_load_hint(name_or_path, e)) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise UserError(f"{name_or_path}: the tokenizer has no chat template; use a Qwen3 chat model or its tokenizer")
    return tok


def named_tokenizer(name: str | None):
    """The named tokenizer; the bundled Qwen3 one when none is named, or when a Qwen3 hub id is not
    available locally (every Qwen3 chat model ships the same tokenizer; the chat template is the hybrid one,
    or the Instruct-2507 / Thinking-2507 one when the id names that family). `check`, `inspect`, `cache build`
    and the UI's data pages load theirs here."""
    from .assets import qwen3_tokenizer_dir, variant_of

    if name and (Path(name).exists() or not name.startswith("Qwen/Qwen3") or _in_hf_cache(name)):
        return load_tokenizer(name)
    variant = variant_of(name or "")
    if name:
        print(f"note: {name} is not in the local cache; using the bundled Qwen3 tokenizer with the {variant} chat "
              "template (the same as that model's)", file=sys.stderr)
    return load_tokenizer(str(qwen3_tokenizer_dir(variant)))


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "tokenizer_config.json"), str)


def save_tokenizer(tok, out: Path) -> None:
    """The tokenizer and chat template, readable by transformers 5 and 4 (vLLM on either)."""
    tok.save_pretrained(out)
    # transformers 5 puts the template in chat_template.jinja only; also keep it in tokenizer_config.json
    # (identical text) for readers that predate the .jinja file.
    tc_file = out / "tokenizer_config.json"
    tc = json.loads(tc_file.read_text())
    if isinstance(tok.chat_template, str) and not tc.get("chat_template"):
        tc["chat_template"] = tok.chat_template
    # transformers 5 writes the special-token list as extra_special_tokens; transformers 4 (vLLM on it) reads
    # that key as a {name: token} dict and fails with "'list' object has no attribute 'keys'". Under its
    # transformers-4 name, additional_special_tokens (as Qwen3's published tokenizer_config.json has it), both
    # versions load the same tokens.
    extra = tc.get("extra_special_tokens")
    if isinstance(extra, list) and "additional_special_tokens" not in tc:
        tc["additional_special_tokens"] = tc.pop("extra_special_tokens")
    tc_file.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")


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
    """liger-kernel's fused RMSNorm, RoPE and (with swiglu) SwiGLU on a Qwen3 model, in place (not its loss:
    ours is kept).

    required (liger_kernel: true): a clear error where it cannot run. Not required (auto): used on CUDA when
    importable, else skipped. Returns whether it was applied. liger patches transformers' Qwen3 module
    functions for the whole process, not only this model.
    """
    why = None
    if device.type != "cuda":
        why = "needs a CUDA GPU (its kernels are Triton)"
    elif model.config.model_type != "qwen3":
        why = f"is wired for Qwen3 models, not {model.config.model_type!r}"
    else:
        try:
            from liger_kernel.transformers import apply_liger_kernel_to_qwen3
        except ImportError as e:
            why = f"needs the liger-kernel package: pip install liger-kernel, or the .[gpu] extra ({e})"
    if why:
        if required:
            raise UserError(f"liger_kernel: true {why}; set liger_kernel: auto or false")
        if device.type == "cuda":
            log.info("liger-kernel not used (liger_kernel: auto): it %s", why)
        return False
    apply_liger_kernel_to_qwen3(rope=True, rms_norm=True, swiglu=swiglu, cross_entropy=False,
                                fused_linear_cross_entropy=False, model=model)
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
    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(_load_hint(cfg.model_name_or_path, e)) from None
    # A KV cache in a training forward breaks per-example attention of padding-free batches.
    model.config.use_cache = False
    if cfg.liger_kernel:  # true or "auto"
        # With fused_norm_mlp the MLP is ours (it keeps less: see fused.py), RMSNorm and RoPE liger's.
        apply_liger(model, device, required=cfg.liger_kernel is True, swiglu=not cfg.fused_norm_mlp)
    log.info("model %s: dtype %s, attention %s, device %s", cfg.model_name_or_path, str(dtype).replace("torch.", ""), attn, device)
    return model


def _bnb_config(dtype, device):
    if device.type != "cuda":
        raise UserError("quantization_bit: 4-bit QLoRA needs a CUDA GPU (bitsandbytes); set quantization_bit: null on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("quantization_bit: 4 needs bitsandbytes: pip install 'qwen-sft[gpu]'") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, use_rslora=cfg.use_rslora, use_dora=cfg.use_dora,
                      bias="none", task_type="CAUSAL_LM")


def wrap_lora(model, cfg):
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.quantization_bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    liger = getattr(model, "_qwen_sft_liger", False)
    try:
        model = get_peft_model(model, lora_config(cfg))
    except ValueError as e:  # peft's NoMatchingPeftModuleError: no module of that name in the model
        if "target module" not in str(e).lower():
            raise
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"lora_target_modules: {cfg.lora_target_modules} does not fit the model ({first}); "
                        f"its linear modules are {', '.join(names)}, or use all-linear") from None
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
    return model


# ---------------------------------------------------------------- saved adapters and merged models

def load_causal_lm(name_or_path: str, dtype: torch.dtype | str):
    """A saved causal LM for merging, validation, evaluation or chat: safetensors only, no remote code."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, use_safetensors=True,
                                                    trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise UserError(_load_hint(name_or_path, e)) from None


def load_peft(base, adapter_dir: str | Path):
    """base + the saved LoRA adapter, unmerged and frozen.

    Every saved adapter weight must land in the model and every LoRA weight of the model must come from the
    file: PEFT only warns about LoRA weights the file lacks (they keep their init, B = 0: no update there)
    and silently drops saved weights that match no module (an adapter trained on a deeper model, or one
    with other module names), which would merge, and validate against the same load, as a partial adapter.
    """
    from peft import PeftModel
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    def refuse(why: str):
        return UserError(f"{adapter_dir}: the adapter does not fit the base model ({base.config._name_or_path}): {why}")

    try:
        with warnings.catch_warnings():
            # PEFT warns that adapters on tied embeddings complicate merging; merge() handles exactly that.
            warnings.filterwarnings("ignore", message=r".*tie_word_embeddings=True.*", category=UserWarning)
            # Missing LoRA weights are counted below and refused with the names.
            warnings.filterwarnings("ignore", message=r"Found missing adapter keys.*", category=UserWarning)
            model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
            # PeftModel.from_pretrained keeps its load result to itself: load the same weights once more
            # (no change to any value) to learn which ones did not fit.
            fit = set_peft_model_state_dict(model, load_peft_weights(str(adapter_dir), device="cpu"),
                                            adapter_name="default")
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


# ---------------------------------------------------------------- tiny stand-in

TINY_SIZES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=4096)
# Qwen3-4B initialises embeddings with std 0.02. With tied embeddings and RMS-normed hidden states of
# width 64, that caps every logit near 64 * 0.02 * ... ~ 1, so a tiny model cannot become confident and
# its loss stalls near ln(vocab). A larger embedding scale lets the demo's loss visibly fall.
TINY_EMBED_STD = 0.5


def build_tiny_model(out_dir: str | Path, seed: int = 0, variant: str = "hybrid", tied: bool = True) -> Path:
    """A randomly initialised Qwen3-architecture model (real vocab, tiny sizes) + the real tokenizer.

    variant: hybrid | instruct-2507 | thinking-2507 (the chat template, config values and sampling defaults of
    that checkpoint family: assets.VARIANTS). tied: embeddings shared with the lm_head, as Qwen3-0.6B/1.7B/4B
    (and the 4B-2507 models) ship; False: a separate lm_head, as Qwen3-8B/14B/32B ship."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .assets import qwen3_tokenizer_dir

    out_dir = Path(out_dir)
    ref = qwen3_tokenizer_dir(variant)
    base = json.loads((ref / "config.json").read_text())
    base.update(TINY_SIZES, max_window_layers=TINY_SIZES["num_hidden_layers"], torch_dtype="float32",
                tie_word_embeddings=tied)
    config = AutoConfig.for_model(**base)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, TINY_EMBED_STD)
        if not tied:  # the same logit scale as the tied stand-in (see TINY_EMBED_STD)
            model.get_output_embeddings().weight.normal_(0.0, TINY_EMBED_STD)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(ref / name, out_dir / name)
    return out_dir
