"""Which model a config trains, read from its config.json only (no weights): the one family-specific part of plan.

A family is how its model is built from a config on the meta device with fewer layers (FAMILIES); the config
comes from the model directory, the Hugging Face cache, or the configs bundled with the package (Qwen3's
published sizes below, Qwen3.5's config files in assets/qwen3_5/). When the family table (families.py) lands,
`resolve` and FAMILIES are the place to point at it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

ASSETS = Path(__file__).resolve().parents[1] / "assets"

# The published Qwen3 dense configs (Qwen/Qwen3-*/config.json on the Hub): the sizes that differ from Qwen3-4B's
# config.json, which the package ships (assets/qwen3/config.json). The -Base and 2507 checkpoints share their size's.
QWEN3_SIZES = {
    "0.6B": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, tie_word_embeddings=True),
    "1.7B": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, tie_word_embeddings=True),
    "4B": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=True),
    "8B": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=False),
    "14B": dict(hidden_size=5120, intermediate_size=17408, num_hidden_layers=40, num_attention_heads=40,
                num_key_value_heads=8, tie_word_embeddings=False),
    "32B": dict(hidden_size=5120, intermediate_size=25600, num_hidden_layers=64, num_attention_heads=64,
                num_key_value_heads=8, tie_word_embeddings=False),
}
QWEN3_ID = re.compile(r"^(?:qwen/)?qwen3-([0-9.]+b)(?:-base|-instruct-2507|-thinking-2507)?$", re.I)
QWEN35_ID = re.compile(r"^(?:qwen/)?(qwen3\.[568]-[0-9.]+b)(?:-base)?$", re.I)


@dataclass
class Arch:
    """A model architecture: its family, its (text) config and where that came from."""

    family: str  # a key of FAMILIES
    name: str  # as the user named it
    config: dict  # the text model's config.json values
    source: str  # where the config was read

    @property
    def layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def period(self) -> int:
        """Layers in one repeat of the layer pattern (each repeat is the same code on the same shapes)."""
        return FAMILIES[self.family].period(self.config)

    def build(self, layers: int, dtype, attn: str):
        """The causal LM with `layers` layers (a whole number of periods) on the meta device."""
        return FAMILIES[self.family].build(self.config, layers, dtype, attn)

    def cuda_kernels(self) -> list:
        """(module, attribute, stand-in) for the family's own CUDA kernels (kernels.py), besides the common ones."""
        return FAMILIES[self.family].cuda_kernels()


# ---------------------------------------------------------------- families


class Qwen3:
    """Qwen3 dense: every decoder layer alike."""

    @staticmethod
    def period(config: dict) -> int:
        return 1

    @staticmethod
    def cuda_kernels() -> list:
        return []

    @staticmethod
    def build(config: dict, layers: int, dtype, attn: str):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        values = {k: v for k, v in config.items() if k not in ("torch_dtype", "dtype", "layer_types")}
        values.update(num_hidden_layers=layers, max_window_layers=layers, use_cache=False)
        hf = AutoConfig.for_model(**values)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf, dtype=dtype, attn_implementation=attn)


class Qwen35:
    """Qwen3.5 / 3.6 / 3.8 dense text model: Gated DeltaNet layers with a full-attention layer every
    full_attention_interval layers (transformers' Qwen3_5ForCausalLM, its torch path for the DeltaNet)."""

    @staticmethod
    def period(config: dict) -> int:
        return int(config.get("full_attention_interval") or 1)

    @staticmethod
    def cuda_kernels() -> list:
        from transformers.models.qwen3_5 import modeling_qwen3_5

        from .kernels import fla_like_chunk_gated_delta_rule

        return [(modeling_qwen3_5, "torch_chunk_gated_delta_rule", fla_like_chunk_gated_delta_rule)]

    @staticmethod
    def build(config: dict, layers: int, dtype, attn: str):
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.models.qwen3_5 import Qwen3_5TextConfig

        values = {k: v for k, v in config.items() if k not in ("torch_dtype", "dtype")}
        values.update(num_hidden_layers=layers, layer_types=list(config["layer_types"])[:layers], use_cache=False)
        hf = Qwen3_5TextConfig(**values)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf, dtype=dtype, attn_implementation=attn)


FAMILIES = {"qwen3": Qwen3, "qwen3_5": Qwen35}


def family_of(config: dict) -> tuple[str, dict]:
    """(family, text config) of a config.json; UserError for a model plan does not know."""
    kind = config.get("model_type")
    if kind == "qwen3":
        return "qwen3", config
    if kind in ("qwen3_5", "qwen3_5_text"):
        text = dict(config.get("text_config") or config)
        text.setdefault("tie_word_embeddings", config.get("tie_word_embeddings", False))
        return "qwen3_5", text
    raise UserError(f"model_type {kind!r}: plan knows the Qwen3 and Qwen3.5 dense models (qwen3, qwen3_5)")


# ---------------------------------------------------------------- where the config comes from


def bundled(name: str) -> tuple[dict, str] | None:
    """The bundled config of a published Qwen3 / Qwen3.5 checkpoint named by its hub id, or None."""
    m = QWEN3_ID.match(name.strip())
    if m and m.group(1).upper() in QWEN3_SIZES:
        config = json.loads((ASSETS / "qwen3" / "config.json").read_text())
        config.update(QWEN3_SIZES[m.group(1).upper()], max_window_layers=QWEN3_SIZES[m.group(1).upper()]["num_hidden_layers"])
        return config, f"bundled table of the published Qwen3-{m.group(1).upper()} config"
    m = QWEN35_ID.match(name.strip())
    if m:
        for d in (ASSETS / "qwen3_5").iterdir():
            if d.name.lower() == m.group(1).lower() and (d / "config.json").is_file():
                return json.loads((d / "config.json").read_text()), f"bundled {d.name} config.json"
    return None


def resolve(name_or_path: str) -> Arch:
    """The architecture `model_name_or_path` names: a model directory, a hub id in the local Hugging Face cache,
    or a published Qwen3 / Qwen3.5 checkpoint (bundled configs); no weights are read."""
    path = Path(name_or_path).expanduser()
    config, source = None, None
    if (path / "config.json").is_file():
        config, source = _read(path / "config.json"), f"{path / 'config.json'}"
    else:
        found = bundled(name_or_path)
        if found is None:
            cached = _hub_cache(name_or_path)
            if cached is not None:
                found = _read(Path(cached)), f"{cached} (Hugging Face cache)"
        if found is not None:
            config, source = found
    if config is None:
        raise UserError(f"model_name_or_path: {name_or_path}: no config.json there, none in the Hugging Face cache, "
                        "and not a published Qwen3 / Qwen3.5 model plan knows; download its config "
                        f"(hf download {name_or_path} config.json) or point at a model directory")
    return from_config(config, name_or_path, source)


def from_config(config: dict, name: str, source: str) -> Arch:
    """The architecture of config.json values (a whole config, or a text model's)."""
    family, text = family_of(config)
    return Arch(family, name, text, source)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the model config: {e}") from None


def _hub_cache(repo_id: str) -> str | None:
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an odd id or cache: not found
        return None
    return found if isinstance(found, str) else None
