"""Test helpers on the tiny stand-in model: a LoRA adapter directory in the trainer's format, and a pair of
identical LoRA training modules to compare fused and unfused forwards (tests and bench/gpu_smoke.py)."""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import torch

from .config import ALL_PROJECTIONS


def build_tiny_adapter(base_dir: str | Path, out_dir: str | Path, seed: int = 0, *,
                       target_modules: list[str] | None = None, modules_to_save: list[str] | None = None,
                       ensure_weight_tying: bool = False, enable_thinking: bool = False, scale: float = 0.05,
                       r: int = 4, lora_alpha: float = 8, use_dora: bool = False, use_rslora: bool = False) -> Path:
    """An adapter directory like the trainer's lora_adapters/: PEFT files, tokenizer files, qwen_sft.json.

    LoRA B matrices (zero at init, which would make the adapter a no-op) and embedding LoRA matrices get
    random values of std `scale`, and modules_to_save copies are perturbed, so the adapter changes outputs.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                     target_modules=list(target_modules or ALL_PROJECTIONS), modules_to_save=modules_to_save,
                     ensure_weight_tying=ensure_weight_tying, use_dora=use_dora, use_rslora=use_rslora)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*tie_word_embeddings=True.*", category=UserWarning)
        peft_model = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            elif "lora_magnitude_vector" in name:  # DoRA: away from the base's column norms it starts at
                p.mul_(1 + torch.randn(p.shape, generator=gen) * scale)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*save_embedding_layers.*", category=UserWarning)
        peft_model.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (base_dir / name).is_file():
            shutil.copyfile(base_dir / name, out_dir / name)
    meta = {"base_model": str(base_dir), "enable_thinking": enable_thinking, "lora_rank": r, "lora_alpha": lora_alpha}
    (out_dir / "qwen_sft.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def lora_loss_pair(model_dir: str | Path, *, dtype=torch.float32, device="cpu", r: int = 4, dropout: float = 0.3,
                   checkpointing: bool = False, chunk_size: int = 512):
    """Two identical LoRA training modules (CausalLMLoss in train mode, LoRA B non-zero so every LoRA weight
    gets a gradient), both running PEFT's and transformers' own forwards: fuse one to compare the two."""
    from transformers import AutoModelForCausalLM

    from .layers import attention
    from .config import TrainConfig
    from .loss import CausalLMLoss
    from .model import wrap_lora

    attention.register()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attention.NAME).to(device)
    cfg = TrainConfig(lora_rank=r, lora_alpha=2 * r, lora_dropout=dropout, gradient_checkpointing=checkpointing,
                      fused_lora=False, fused_norm_mlp=False)
    torch.manual_seed(0)
    model = wrap_lora(model, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    plain = CausalLMLoss(model, chunk_size=chunk_size).train()
    return plain, copy.deepcopy(plain)
