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
    cfg = load_config(
        _yaml(tmp_path, "lora_rank: 8\n"),
        [
            "lora_rank=16",
            "bf16=false",
            "lora_target_modules=q_proj,v_proj",
            "resume_from_checkpoint=auto",
            "quantization_bit=null",
        ],
    )
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
        assert (
            load_config(None, ["eval_sample_generations=2", f"distributed_strategy={ok}"]).eval_sample_generations == 2
        )
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


# ---------------------------------------------------------------- issue 18: literal overrides, YAML keys, empty paths


@pytest.mark.parametrize("text", ["1.10", "010", "12:30", "on", "null", "x #1", "@exp", "~", "yes", "1e3"])
def test_text_keys_take_the_override_literally(text):
    """case 6: run_name=1.10 went to runs/1.1/, 010 to runs/8/, on to runs/True/, null to runs/None/, x #1 to runs/x/.
    ('12:30', 'x #1' and '~' are no longer run names (#23 item 22): they are checked as output_dir, a text key too.)"""
    from qwen_sft import argcheck

    cfg = load_config(None, [f"output_dir={text}", "run_name=r"])
    assert cfg.output_dir == text and str(cfg.run_dir) == f"{text}/r"
    if argcheck.run_name_problem(text) is None:
        cfg = load_config(None, [f"run_name={text}", "output_dir=runs"])
        assert cfg.run_name == text and str(cfg.run_dir) == f"runs/{text}"
    else:
        assert text in ("12:30", "x #1", "~")


def test_values_are_read_by_the_keys_type():
    cfg = load_config(None, ["max_steps=010", "learning_rate=1e-4", "bf16=no", "packing=1", "quantization_bit=null",
                             "lora_target_modules=[q_proj, v_proj]", "liger_kernel=false", "dataset=a.jsonl,b.jsonl",
                             "resume_from_checkpoint=auto"])
    assert cfg.max_steps == 10 and cfg.learning_rate == 1e-4 and cfg.bf16 is False and cfg.packing is True
    assert cfg.quantization_bit is None and cfg.lora_target_modules == ["q_proj", "v_proj"]
    assert cfg.liger_kernel is False and cfg.dataset == ["a.jsonl", "b.jsonl"] and cfg.resume_from_checkpoint == "auto"
    assert load_config(None, ["liger_kernel=auto"]).liger_kernel == "auto"
    assert load_config(None, ['lora_target_modules=["q_proj","k_proj"]']).lora_target_modules == ["q_proj", "k_proj"]


@pytest.mark.parametrize("item,problem", [
    ("lora_target_modules=[q_proj", "lora_target_modules: expected a list like [a, b] or a,b; the brackets of "
                                    "'[q_proj' do not match"),
    ("max_steps=1e400", "max_steps: expected an integer, got '1e400'"),
    ("seed=99999999999999999999999", "seed: '99999999999999999999999' is out of range"),
    ("bf16=maybe", "bf16: expected true or false, got 'maybe'"),
    ("learning_rate=", "learning_rate: expected a number, got ''"),
    ("run_name=a\udcffb", "run_name: 'a\\udcffb' is not valid Unicode text"),
])
def test_a_value_that_does_not_parse_is_one_line_naming_the_key(item, problem):
    with pytest.raises(ConfigError) as e:
        load_config(None, [item])
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(problem)


@pytest.mark.parametrize(
    "item",
    [
        "dataset=",
        "dataset= ",
        "output_dir=",
        "model_name_or_path=",
        "resume_from_checkpoint=",
        "dataset=[a.jsonl, ' ']",
    ],
)
def test_empty_paths_are_refused(item):
    """case 7: dataset=$UNSET_VAR trained on every data file of the working directory."""
    key = item.split("=")[0]
    with pytest.raises(ConfigError) as e:
        load_config(None, [item])
    assert e.value.problems == [p for p in e.value.problems if p.startswith(f"{key}: empty path")] != []


def test_yaml_text_keys_are_literal_and_keys_must_be_names(tmp_path):
    """case 9: a non-string YAML key (1: 2) was a traceback; values of text keys were YAML-typed (010 -> 8)."""
    cfg = load_config(_yaml(tmp_path, "run_name: 010\nlearning_rate: 1e-4\nbf16: yes\nresume_from_checkpoint:\n"
                                      "lora_target_modules: [q_proj, 010]\n"))
    assert cfg.run_name == "010" and cfg.learning_rate == 1e-4 and cfg.bf16 is True
    assert cfg.resume_from_checkpoint is None and cfg.lora_target_modules == ["q_proj", "010"]
    path = _yaml(tmp_path, "1: 2\nrun_name: a\nrun_name: b\n[x]: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"{path}:1: 1: a config key must be a name like learning_rate",
                                f"{path}:3: run_name: given twice; keep one",
                                f"{path}:4: (a list or mapping): a config key must be a name like learning_rate"]
    with pytest.raises(ConfigError, match="run_name: missing value"):
        load_config(_yaml(tmp_path, "run_name: null\n"))
    with pytest.raises(ConfigError, match="nested deeper than"):
        load_config(_yaml(tmp_path, "a: &a [*a, *a]\n"))
    with pytest.raises(UserError, match="nested too deeply"):
        load_config(_yaml(tmp_path, "a: " + "[" * 50_000))


def test_cli_overrides_never_end_in_a_traceback(tmp_path, capsys, monkeypatch):
    """case 6: run_name=@exp and 'lora_target_modules=[q_proj' ended in a YAML traceback."""
    from qwen_sft import train as train_mod
    from qwen_sft.cli import main

    seen = []
    monkeypatch.setattr(train_mod, "train", lambda cfg, before_training=None: seen.append(cfg))
    assert main(["train", "run_name=@exp", "output_dir=runs"]) == 0
    assert seen[0].run_name == "@exp"
    assert main(["train", "lora_target_modules=[q_proj"]) == 2
    err = capsys.readouterr().err
    assert "lora_target_modules: expected a list" in err and "Traceback" not in err


# ---------------------------------------------------------------- issue 23: run names, names over 255 bytes


@pytest.mark.parametrize("name", ["a?b", "a,b", "a\nb", "a b", "a#1", "a%2F", "-x", "a/./b", "'q'", "x\x00y"])
def test_run_names_that_would_break_links_and_compare_are_refused(name):
    """#23 item 22: a run named with '?', ',' or a newline trained, then its links and Compare in the UI broke."""
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"run_name={name}"])
    assert e.value.problems == [f"run_name: {name!r} may hold only letters, digits and . _ - + = @ (and / between "
                                "folder names), and may not start with '-' or have a '.' or '..' part"]


@pytest.mark.parametrize("name", ["try2", "exp/lr=1e-4", "qwen3-4b_r64.v2", "实验1", "a+b@host"])
def test_ordinary_run_names_are_kept(name):
    assert load_config(None, [f"run_name={name}", "output_dir=o"]).run_name == name


@pytest.mark.parametrize("key", ["run_name", "output_dir", "dataset", "model_name_or_path", "resume_from_checkpoint",
                                 "data_cache_dir"])
def test_a_name_over_255_bytes_in_any_path_key_is_one_line(key):
    """#23 item 15: `train` with such a run_name or output_dir ended in OSError: [Errno 36] File name too long."""
    long = "x" * 256
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}=runs/{long}" if key != "run_name" else f"run_name={long}"])
    assert e.value.problems == [f"{key}: the name {long[:40]}... is 256 bytes; a file or directory name may have "
                                "at most 255"]


# ---------------------------------------------------------------- issue 25: the facts live on the fields


def test_readme_config_table_is_the_generated_one():
    """The README's table is describe() of the fields (regenerate: python -m qwen_sft.config --readme README.md)."""
    from pathlib import Path

    from qwen_sft.config import with_table

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert describe() in readme, "README.md's config table is stale: python -m qwen_sft.config --readme README.md"
    assert with_table(readme) == readme
    assert "| `lora_dropout` | `0.05` | number in [0, 1) | Dropout on the LoRA input. |" in readme
    assert (
        "| `data_format` | `null` | null \\| alpaca \\| messages \\| sharegpt \\| jsonl \\| json \\| csv \\| tsv |"
        in readme
    )
    assert "| `preprocessing_num_workers` | `null` | integer >= 1, or null |" in readme


def test_the_config_module_prints_and_rewrites_the_table(tmp_path, monkeypatch, capsys):
    import runpy
    import sys
    import warnings

    def run(*argv):
        monkeypatch.setattr(sys, "argv", ["qwen_sft.config", *argv])
        with warnings.catch_warnings():  # runpy: qwen_sft.config is in sys.modules already
            warnings.simplefilter("ignore", RuntimeWarning)
            runpy.run_module("qwen_sft.config", run_name="__main__")

    run("--markdown")
    assert capsys.readouterr().out == describe() + "\n"
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n| key | default | meaning |\n|---|---|---|\n| `old` | `1` | gone |\n\nafter\n")
    run("--readme", str(readme))
    assert readme.read_text() == f"# x\n\n{describe()}\n\nafter\n"


@pytest.mark.parametrize(
    "item,problem",
    [
        ("lora_dropout=1", "lora_dropout: must be in [0, 1), got 1.0"),
        ("warmup_ratio=-0.1", "warmup_ratio: must be in [0, 1), got -0.1"),
        ("max_duplicate_share=1.5", "max_duplicate_share: must be in [0, 1], got 1.5"),
        ("num_train_epochs=0", "num_train_epochs: must be in (0, 1e6], got 0.0"),
        ("num_train_epochs=2e6", "num_train_epochs: must be in (0, 1e6], got 2000000.0"),
        ("val_size=-1", "val_size: must be >= 0, got -1.0"),
        ("save_total_limit=0", "save_total_limit: must be > 0, got 0"),
        (
            "preprocessing_num_workers=0",
            "preprocessing_num_workers: must be >= 1 (or null for every available core), got 0",
        ),
        ("dataloader_num_workers=-1", "dataloader_num_workers: must be >= 0, got -1"),  # said no "got" before
        ("lr_scheduler_type=cosin", "lr_scheduler_type: 'cosin' is not one of cosine, linear, constant"),
        ("data_format=xml", "data_format: 'xml' is not one of null, alpaca, messages, sharegpt, jsonl, json, csv, tsv"),
        ("liger_kernel=maybe", "liger_kernel: 'maybe' is not one of auto, true, false"),  # said True, False before
        ("quantization_bit=8", "quantization_bit: 8 is not one of null, 4"),
        (
            "resume_from_checkpoint= ",
            "resume_from_checkpoint: empty path (an unset variable?); name a file or directory, or null for none",
        ),
    ],
)
def test_each_fact_of_a_field_is_one_line_naming_it(item, problem):
    with pytest.raises(ConfigError) as e:
        load_config(None, [item])
    assert e.value.problems == [problem]


def test_epochs_out_of_range_are_ignored_with_max_steps():
    """num_train_epochs is ignored when max_steps > 0 (its help), so its bounds are too."""
    assert load_config(None, ["num_train_epochs=0", "max_steps=5"]).max_steps == 5


def test_every_fact_is_enforced_and_the_defaults_hold_them():
    """validate reads every field's bounds and choices (a new fact needs no new rule), and every default keeps them."""
    import dataclasses

    from qwen_sft.config import FIELDS, TrainConfig, takes_list

    TrainConfig().validate()
    for key, f in FIELDS.items():
        bounds, allowed = f.metadata["bounds"], f.metadata["choices"]
        if bounds is not None:
            outside = bounds.high + 1 if bounds.high is not None else bounds.low - 1
            problems = TrainConfig(**{key: outside}).field_problems()
            assert problems == [f"{key}: must be {bounds}" + (f" (or null {bounds.null})" if bounds.null else "")
                                + f", got {outside}"], key
        if allowed:
            problems = TrainConfig(**{key: "nonsense"}).field_problems()
            assert len(problems) == 1 and problems[0].startswith(f"{key}: 'nonsense' is not one of "), key
            assert problems[0].endswith(" (or a list)") == takes_list(key)
    assert [f.name for f in dataclasses.fields(TrainConfig)] == list(FIELDS)


def test_the_cli_offers_every_data_format():
    from qwen_sft.cli import build_parser
    from qwen_sft.config import choices

    formats = [f for f in choices("data_format") if f is not None]
    assert formats == ["alpaca", "messages", "sharegpt", "jsonl", "json", "csv", "tsv"]
    for fmt in ["auto", "sample", *formats]:
        assert build_parser().parse_args(["prepare", "--format", fmt, "--output", "o.jsonl"]).format == fmt
