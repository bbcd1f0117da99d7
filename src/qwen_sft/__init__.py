"""qwen-sft: LoRA fine-tuning for Qwen3 chat models."""

__version__ = "0.1.0"
