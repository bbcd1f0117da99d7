"""The model families qwen-sft trains, one row each: everything that differs between architectures lives here.

A row says which checkpoints belong to the family (config.json's model_type), which transformers class is
trained (always the text-only causal LM) and which classes published checkpoints are saved as, where the
language model's tensors sit in such a checkpoint, the default LoRA targets ("all projections") and the layer
type each reaches, which of layers/fused.py's kernels fit its modules, which layers carry state along the sequence
(and the function that keeps packed rows apart in them), and the tiny stand-in that tests, benches and the demo
build. Anything else is refused at load with one line (`family_of`).

Adding a family = one row here + its tiny stand-in (standins.py) + its tests: the tests that iterate FAMILIES
(packed rows vs one at a time, fused vs unfused, train -> merge -> validate -> chat) then cover it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .errors import UserError

ALL_PROJECTIONS_NAME = "all-projections"  # the lora_target_modules value that means the row's lora_targets


@dataclass(frozen=True)
class Family:
    """One supported architecture family."""

    name: str
    """Shown to users: 'Qwen3 dense'."""
    model_types: tuple[str, ...]
    """config.json model_type values of its checkpoints (top level)."""
    causal_lm: str
    """The transformers class trained, evaluated and validated: the text-only causal LM."""
    checkpoint_classes: tuple[str, ...]
    """config.json `architectures` of published checkpoints (and of text-only saves): a merged model keeps its
    base's."""
    lm_prefixes: dict[str, str]
    """Per checkpoint class, where the causal LM's `model.` tensors sit in its files (absent: `model.` itself)."""
    lora_targets: tuple[str, ...]
    """Default LoRA targets (`lora_target_modules: all-projections`): every projection of every layer."""
    layer_types: dict[str, str]
    """Module name inside a decoder layer -> the layer type reported in logs: {'self_attn': 'full attention'}."""
    norm_class: str | None
    """RMSNorm class that fused_norm_mlp may route through its memory-light function, or None: transformers'."""
    norm_kind: str
    """That norm's math (fused.NORM_FORWARDS): 'weight' (weight * x_hat) or 'one_plus_weight' ((1 + weight) * x_hat)."""
    mlp_class: str | None
    """SwiGLU MLP class (gate_proj, up_proj, down_proj, silu) that fused_norm_mlp may route, or None."""
    liger: str | None
    """liger_kernel.transformers function that patches this family, or None: not wired here."""
    stateful_layers: tuple[str, ...] = ()
    """Classes of layers that carry a state along the sequence (a recurrent state, a conv window)."""
    keep_rows_apart: Callable | None = None
    """(model) -> number of layers made to reset their state at each packed example's start. Required when
    stateful_layers is not empty: tests/unit/test_families.py checks packed == one at a time for every row."""
    standin: Callable | None = None
    """(out_dir, seed, **variant) -> Path: the tiny randomly initialised stand-in (standins.py)."""
    standin_variants: tuple[dict, ...] = field(default_factory=tuple)
    """Keyword sets for `standin` that the family tests run over (templates, tied or not, checkpoint class)."""
    checkpoints: tuple[str, ...] = ()
    """Published checkpoints of the family (docs/models.md has the table)."""

    def text_config(self, config):
        """The language model's config: `text_config` of a vision-language config, else the config itself."""
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    def lm_prefix(self, architecture: str | None) -> str:
        return self.lm_prefixes.get(architecture or "", "model.")

    def layer_slot(self, module_name: str) -> tuple[str | None, str | None]:
        """(layer type, layer index) of a module inside a decoder layer: 'model.layers.3.linear_attn.in_proj_qkv'
        -> ('linear attention', '3'); (None, None) outside the decoder layers (embeddings, lm_head)."""
        parts = module_name.split(".")
        for i, part in enumerate(parts[:-2]):
            if part == "layers" and parts[i + 1].isdigit():
                return self.layer_types.get(parts[i + 2]), parts[i + 1]
        return None, None


def _keep_rows_apart_qwen3_5(model) -> int:
    from .layers.recurrent import keep_rows_apart

    return keep_rows_apart(model, ("Qwen3_5GatedDeltaNet",))


def _standin_qwen3(out_dir, seed: int = 0, **variant):
    from .standins import build_tiny_qwen3

    return build_tiny_qwen3(out_dir, seed=seed, **variant)


def _standin_qwen3_5(out_dir, seed: int = 0, **variant):
    from .standins import build_tiny_qwen3_5

    return build_tiny_qwen3_5(out_dir, seed=seed, **variant)


QWEN3 = Family(
    name="Qwen3 dense",
    model_types=("qwen3",),
    causal_lm="Qwen3ForCausalLM",
    checkpoint_classes=("Qwen3ForCausalLM",),
    lm_prefixes={},
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    layer_types={"self_attn": "attention", "mlp": "MLP"},
    norm_class="Qwen3RMSNorm",
    norm_kind="weight",
    mlp_class="Qwen3MLP",
    liger="apply_liger_kernel_to_qwen3",
    standin=_standin_qwen3,
    standin_variants=({"variant": "hybrid"}, {"variant": "hybrid", "tied": False}),
    checkpoints=("Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B",
                 "Qwen3-4B-Instruct-2507", "Qwen3-4B-Thinking-2507"),
)

# Qwen3.5 (and 3.6, 3.8: the same architecture): 3 Gated DeltaNet layers per full-attention layer. in_proj_a and
# in_proj_b (a few numbers per head and token: the decay and write strength of the recurrent state) are not in
# the default targets: measured in docs/models.md ("LoRA targets"), they add 2 x 2 x r x (hidden + heads)
# parameters per layer for no projection of the token's content.
QWEN3_5 = Family(
    name="Qwen3.5 dense",
    model_types=("qwen3_5", "qwen3_5_text"),
    causal_lm="Qwen3_5ForCausalLM",
    checkpoint_classes=("Qwen3_5ForConditionalGeneration", "Qwen3_5ForCausalLM"),
    lm_prefixes={"Qwen3_5ForConditionalGeneration": "model.language_model."},
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "in_proj_qkv", "in_proj_z", "out_proj",
                  "gate_proj", "up_proj", "down_proj"),
    layer_types={"self_attn": "full attention", "linear_attn": "linear attention", "mlp": "MLP"},
    norm_class="Qwen3_5RMSNorm",  # (its linear attention's gated norm, Qwen3_5RMSNormGated, stays transformers')
    norm_kind="one_plus_weight",
    mlp_class="Qwen3_5MLP",
    liger=None,
    stateful_layers=("Qwen3_5GatedDeltaNet",),
    keep_rows_apart=_keep_rows_apart_qwen3_5,
    standin=_standin_qwen3_5,
    standin_variants=({"checkpoint": "Qwen3.5-4B"}, {"checkpoint": "Qwen3.5-4B", "text_only": True}),
    checkpoints=("Qwen3.5-0.8B", "Qwen3.5-2B", "Qwen3.5-4B", "Qwen3.5-9B", "Qwen3.5-27B", "Qwen3.6-27B",
                 "Qwen3.8-27B"),
)

FAMILIES: tuple[Family, ...] = (QWEN3, QWEN3_5)


def supported() -> str:
    return "; ".join(f"{f.name} (model_type {' / '.join(f.model_types)})" for f in FAMILIES)


def family_of(config, where: str = "") -> Family:
    """The family of a transformers config (or a config.json dict); UserError in one line for any other."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    model_type = get("model_type")
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    arch = ", ".join(get("architectures") or []) or "no architectures listed"
    raise UserError(f"{where + ': ' if where else ''}model_type {model_type!r} ({arch}) is not supported; qwen-sft "
                    f"trains {supported()}. See docs/models.md")


def family_of_model(model) -> Family:
    """The family of a loaded (possibly PEFT-wrapped) model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return family_of(base.config)


def family_of_path(name_or_path: str, trust_remote_code: bool = False) -> Family:
    """Read a checkpoint's config only (no weights) and return its family, or refuse it in one line."""
    from transformers import AutoConfig

    from .runfiles import load_hint

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(load_hint(name_or_path, e)) from None
    return family_of(config, name_or_path)


def resolve_targets(family: Family, targets):
    """lora_target_modules as PEFT takes it: all-projections -> the family's list; anything else as given."""
    return list(family.lora_targets) if targets == ALL_PROJECTIONS_NAME else targets


def meta_model(config, **kwargs):
    """The family's causal LM built on the meta device from a config (no memory, no weights): for shape and
    parameter counts (`qwen-sft plan`, bench/memory_model.py) and the streaming merge. kwargs (dtype,
    attn_implementation) as from_config takes them."""
    import torch
    import transformers

    fam = family_of(config)
    cls = getattr(transformers, fam.causal_lm)
    with torch.device("meta"):
        return cls._from_config(fam.text_config(config), **kwargs) if kwargs else cls(fam.text_config(config))
