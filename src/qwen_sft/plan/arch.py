"""Which model a config trains, read from its config.json only (no weights): the one family-specific part of plan.

The family is its row in the family table (families.py: family_of refuses any other architecture in one line) and
the model is that row's causal LM built on the meta device with fewer layers (families.meta_model); the config
comes from the model directory, the Hugging Face cache, or the configs bundled with the package (Qwen3's
published sizes below, Qwen3.5's config files in assets/qwen3_5/).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import families
from ..errors import UserError
from ..families import Family

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
    """A model architecture: its family's row (families.py), its (text) config and where that came from."""

    family: str  # the row's first model_type: qwen3, qwen3_5
    name: str  # as the user named it
    config: dict  # the text model's config.json values
    source: str  # where the config was read

    @property
    def row(self) -> Family:
        return families.family_of({"model_type": self.family})

    @property
    def layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def period(self) -> int:
        """Layers in one repeat of the layer pattern (each repeat is the same code on the same shapes): the
        shortest repeat of config.layer_types (Qwen3.5: 3 linear-attention layers, then a full-attention one)."""
        types = list(self.config.get("layer_types") or [])[:self.layers]
        return next((p for p in range(1, len(types) + 1) if all(t == types[i % p] for i, t in enumerate(types))), 1)

    def build(self, layers: int, dtype, attn: str):
        """The family's causal LM with `layers` layers (a whole number of periods) on the meta device
        (families.meta_model), its stateful layers set up as load_base_model sets them up."""
        from transformers import AutoConfig

        values = {k: v for k, v in self.config.items() if k not in ("torch_dtype", "dtype")}
        values.update(num_hidden_layers=layers, use_cache=False)
        if "layer_types" in values:
            values["layer_types"] = list(values["layer_types"])[:layers]
        if "max_window_layers" in values:
            values["max_window_layers"] = layers
        model = families.meta_model(AutoConfig.for_model(**values), dtype=dtype, attn_implementation=attn)
        if self.row.keep_rows_apart is not None:
            self.row.keep_rows_apart(model)
        return model

    def cuda_kernels(self) -> list:
        """(module, attribute, stand-in) for the family's own CUDA kernels (kernels.py), besides the common ones."""
        from .kernels import family_kernels

        return family_kernels(self.row)


def family_of(config: dict) -> tuple[str, dict]:
    """(family key, text config) of a config.json, through the family table; UserError in one line for a model
    without a row there."""
    row = families.family_of(config)
    text = dict(config.get("text_config") or config)
    text.setdefault("tie_word_embeddings", config.get("tie_word_embeddings", False))
    text.setdefault("model_type", row.model_types[-1])
    return row.model_types[0], text


# ---------------------------------------------------------------- where the config comes from


def bundled(name: str) -> tuple[dict, str] | None:
    """The bundled config of a published Qwen3 / Qwen3.5 checkpoint named by its hub id, or None."""
    m = QWEN3_ID.match(name.strip())
    if m and m.group(1).upper() in QWEN3_SIZES:
        config = json.loads((ASSETS / "qwen3" / "config.json").read_text())
        config.update(
            QWEN3_SIZES[m.group(1).upper()], max_window_layers=QWEN3_SIZES[m.group(1).upper()]["num_hidden_layers"]
        )
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
