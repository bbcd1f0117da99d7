"""Test helpers: a LoRA adapter directory in the trainer's format, on the tiny stand-in model."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch

from .config import ALL_PROJECTIONS


def build_tiny_adapter(base_dir: str | Path, out_dir: str | Path, seed: int = 0, *,
                       target_modules: list[str] | None = None, modules_to_save: list[str] | None = None,
                       ensure_weight_tying: bool = False, enable_thinking: bool = False, scale: float = 0.05,
                       r: int = 4, lora_alpha: float = 8) -> Path:
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
                     ensure_weight_tying=ensure_weight_tying)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*tie_word_embeddings=True.*", category=UserWarning)
        peft_model = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
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
