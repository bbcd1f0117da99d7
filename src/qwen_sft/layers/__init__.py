"""What runs inside the decoder layers of a training step in place of transformers' and PEFT's own code:
attention.py (sdpa_packed: one causal SDPA call per example of a padding-free row), recurrent.py (the
linear-attention state reset at each packed example) and fused.py (LoRA Linear, RMSNorm and SwiGLU as
autograd functions that keep less for backward). model.py installs them; each is tested equal to the code
it replaces."""
