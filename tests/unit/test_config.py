"""Config: typed keys, YAML + overrides, one validate that lists every problem."""

import pytest

from qwen_sft.config import describe, load_config, parse_overrides
from qwen_sft.errors import ConfigError, UserError


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_seed_config_loads_with_seed_defaults():
    cfg = load_config("sft/configs/lora_config.yaml")
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout) == (64, 128, 0.05)
    assert cfg.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (cfg.num_train_epochs, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (3, 2, 8)
    assert cfg.learning_rate == 5e-5 and cfg.cutoff_len == 4096 and cfg.bf16 and cfg.gradient_checkpointing
    assert str(cfg.run_dir) == "sft/outputs/training/qwen3-4b-lora"
    for other in ("single_gpu_test", "financial_training"):
        load_config(f"sft/configs/{other}.yaml")


def test_yaml_string_numbers_are_numbers(tmp_path):
    cfg = load_config(_yaml(tmp_path, "learning_rate: 1e-4\nwarmup_ratio: '0.1'\n"))
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float) and cfg.warmup_ratio == 0.1


def test_overrides_win_and_are_typed(tmp_path):
    cfg = load_config(_yaml(tmp_path, "lora_rank: 8\n"), ["lora_rank=16", "bf16=false", "lora_target_modules=q_proj,v_proj",
                                                          "resume_from_checkpoint=auto", "quantization_bit=null"])
    assert cfg.lora_rank == 16 and cfg.bf16 is False and cfg.lora_target_modules == ["q_proj", "v_proj"]
    assert cfg.resume_from_checkpoint == "auto" and cfg.quantization_bit is None
    assert load_config(None, ["lora_target_modules=all-linear"]).lora_target_modules == "all-linear"


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_yaml(tmp_path, "lora_rnak: 8\nleraning_rate: 1e-4\n"))
    msg = str(e.value)
    assert "lora_rnak: unknown key" in msg and "did you mean 'lora_rank'" in msg
    assert "did you mean 'learning_rate'" in msg


def test_validate_collects_every_problem():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["lora_rank=0", "learning_rate=-1", "lr_scheduler_type=cosin", "lora_dropout=1.5",
                           "per_device_train_batch_size=abc"])
    assert e.value.problems == ["per_device_train_batch_size: expected an integer, got 'abc'"]
    with pytest.raises(ConfigError) as e:
        load_config(None, ["lora_rank=0", "learning_rate=-1", "lr_scheduler_type=cosin", "lora_dropout=1.5"])
    keys = [p.split(":")[0] for p in e.value.problems]
    assert keys == ["lora_rank", "learning_rate", "lora_dropout", "lr_scheduler_type"]


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(_yaml(tmp_path, "a: [1,\n"))
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["learning_rate"])


def test_every_key_is_documented():
    table = describe()
    assert table.count("\n| `") >= 45 and "| `lora_rank` | `64` |" in table


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed_zero3"])
def test_sample_generations_refused_with_sharded_weights(strategy):
    with pytest.raises(ConfigError, match=f"eval_sample_generations: .* {strategy} shards; set it to 0"):
        load_config(None, ["eval_sample_generations=2", f"distributed_strategy={strategy}"])
    for ok in ("ddp", "deepspeed_zero2"):
        assert load_config(None, ["eval_sample_generations=2", f"distributed_strategy={ok}"]).eval_sample_generations == 2
    assert load_config(None, [f"distributed_strategy={strategy}"]).eval_sample_generations == 0


def test_non_finite_and_out_of_range_numbers_refused():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["num_train_epochs=inf", "learning_rate=nan", "lora_alpha=0", "weight_decay=-1",
                           "max_grad_norm=-1", "eval_sample_generations=-1"])
    keys = [p.split(":")[0] for p in e.value.problems]
    assert keys == ["num_train_epochs", "learning_rate"]
    assert "finite" in e.value.problems[0]
    with pytest.raises(ConfigError) as e:
        load_config(None, ["lora_alpha=0", "weight_decay=-1", "max_grad_norm=-1", "eval_sample_generations=-1"])
    assert [p.split(":")[0] for p in e.value.problems] == ["lora_alpha", "weight_decay", "max_grad_norm",
                                                            "eval_sample_generations"]
    assert load_config(None, ["cutoff_len=1e3"]).cutoff_len == 1000  # an integer written as YAML reads a float


def test_target_modules_one_name_is_a_list_and_empty_is_refused():
    assert load_config(None, ["lora_target_modules=q_proj"]).lora_target_modules == ["q_proj"]
    with pytest.raises(ConfigError, match="lora_target_modules: empty"):
        load_config(None, ["lora_target_modules=[]"])


@pytest.mark.parametrize("name", ["", ".", "..", "../other", "/abs/run"])
def test_run_name_must_stay_inside_output_dir(name):
    with pytest.raises(ConfigError, match="run_name: .* must name a directory inside output_dir"):
        load_config(None, [f"run_name={name}"])
    assert str(load_config(None, ["run_name=exp/try1", "output_dir=o"]).run_dir) == "o/exp/try1"


def test_override_errors_name_the_override(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_yaml(tmp_path, "lora_rank: 8\n"), ["lr=1e-4"])
    assert e.value.problems == ["lr: unknown key in override lr=...; did you mean 'learning_rate'?"]
    with pytest.raises(ConfigError, match="no key before '='"):
        parse_overrides(["=5"])


def test_config_path_problems_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="is a directory; pass a YAML config file"):
        load_config(tmp_path)
    with pytest.raises(UserError, match=r"not valid YAML: .*\(line 2, column 6\)"):
        load_config(_yaml(tmp_path, "lora_rank: 4\n  bad: : x\n"))
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="not a UTF-8 text file"):
        load_config(tmp_path / "bin.yaml")


def test_cli_train_without_config_takes_overrides_and_directory_config_has_no_traceback(tmp_path, capsys):
    from qwen_sft.cli import main

    # Only overrides: all are read as overrides (here a bad one, so that nothing trains).
    assert main(["train", "lora_rank=0", "run_name=x"]) == 2
    err = capsys.readouterr().err
    assert "lora_rank: must be > 0" in err and "config file not found" not in err
    assert main(["train", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a directory" in err and "Traceback" not in err
