"""The seed's command lines still work, as the seed documents them (thin shims over the package)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cli import run_script
from tests.tiny import tiny_model_dir

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not

REPO = Path(__file__).resolve().parents[2]


def run(cmd, cwd, **env):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, PYTHON=sys.executable, HF_HUB_OFFLINE="1", **env))


def test_start_training_then_merge_scripts(tmp_path, capsys):
    """The shell scripts as processes (merge_lora.sh runs merge_lora.py as one); the Python scripts' runs in this
    process (run_script: each is also run as a process, with --help or a refused config, below and in test_merge)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = [{"instruction": f"Give fact {i}.", "input": "", "output": f"Fact {i} is {i * 3}."} for i in range(8)]
    (data_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"model_name_or_path": str(tiny_model_dir()), "lora_rank": 4, "lora_alpha": 8, "max_steps": 2,
           "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "bf16": False,
           "gradient_checkpointing": False, "report_to": "none", "run_name": "seed", "save_steps": 10}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))

    out = run(["bash", str(REPO / "sft/scripts/start_training.sh"), "cfg.yaml", "data", "outs"], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    adapter = tmp_path / "outs" / "seed" / "lora_adapters"
    assert (adapter / "adapter_model.safetensors").exists()

    merged = tmp_path / "merged"
    out = run(["bash", str(REPO / "sft/scripts/merge_lora.sh"), str(tiny_model_dir()), str(adapter), str(merged),
               "float32", "true"], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (merged / "model.safetensors").exists() and (merged / "config.json").is_file()
    assert f"merged model: {merged}" in out.stdout and "validation PASSED" in out.stdout

    out = run_script(capsys, REPO / "sft/scripts/quick_merge.py", adapter, "-o", "quick", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads((tmp_path / "quick" / "config.json").read_text())["architectures"] == ["Qwen3ForCausalLM"]

    out = run_script(capsys, REPO / "sft/scripts/train_lora.py", "--config", "cfg.yaml", "dataset=data",
                     "output_dir=outs2", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "outs2" / "seed" / "metrics.json").exists()


def test_train_lora_takes_config_in_any_position_and_form(tmp_path):
    # A missing config file: the shim must hand it to `train` as the config (not an unknown argument).
    for args in (["--config=none.yaml"], ["lora_rank=8", "--config", "none.yaml"]):
        out = run([sys.executable, str(REPO / "sft/scripts/train_lora.py"), *args], tmp_path)
        assert out.returncode == 2 and out.stderr.strip() == "error: none.yaml: config file not found", out.stderr
