"""Chat-template kinds read off the template, and the thinking modes each kind can be trained and served in."""

import json

import pytest
from transformers import AutoTokenizer

from qwen_sft.data.tokenizer import load_tokenizer

from qwen_sft.assets import qwen3_tokenizer_dir
from qwen_sft.cli import main
from qwen_sft.data.template import TemplateError, resolve_thinking, served_thinking, template_rules
from qwen_sft.errors import UserError

VARIANTS = {"hybrid": "hybrid", "instruct-2507": "instruct", "thinking-2507": "thinking"}


@pytest.fixture(scope="module")
def toks():
    return {v: load_tokenizer(str(qwen3_tokenizer_dir(v))) for v in VARIANTS}


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_kind_header_end_and_prompts_are_read_off_the_template(toks, variant):
    rules = template_rules(toks[variant])
    assert rules.kind == VARIANTS[variant]
    assert (rules.header, rules.end) == ("<|im_start|>assistant\n", "<|im_end|>")
    want = {"hybrid": ("<|im_start|>assistant\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
            "instruct-2507": ("<|im_start|>assistant\n",) * 2,
            "thinking-2507": ("<|im_start|>assistant\n<think>\n",) * 2}[variant]
    assert (rules.generation_prompt(True), rules.generation_prompt(False)) == want
    assert rules.opened_think(rules.default_thinking) == ("<think>\n" if variant == "thinking-2507" else "")


def test_bundled_variants_are_the_reference_templates_byte_for_byte(toks):
    from qwen_sft.assets import ASSET_DIR

    for variant in ("instruct-2507", "thinking-2507"):
        assert toks[variant].chat_template == (ASSET_DIR / f"{variant}.chat_template.jinja").read_text()
    assert "enable_thinking" in toks["hybrid"].chat_template


def test_only_hub_ids_whose_files_are_bundled_have_a_stand_in():
    from qwen_sft.assets import bundled_tokenizer_dir, qwen3_5_checkpoint_dir

    assert bundled_tokenizer_dir("Qwen/Qwen3-4B-Instruct-2507") == qwen3_tokenizer_dir("instruct-2507")
    assert bundled_tokenizer_dir("qwen/qwen3-4b-thinking-2507") == qwen3_tokenizer_dir("thinking-2507")
    assert bundled_tokenizer_dir("Qwen/Qwen3-8B") == bundled_tokenizer_dir("Qwen/Qwen3-0.6B") == qwen3_tokenizer_dir()
    assert bundled_tokenizer_dir("Qwen/Qwen3.5-2B") == qwen3_5_checkpoint_dir("Qwen3.5-2B")
    assert bundled_tokenizer_dir("Qwen/Qwen3.8-27B") == qwen3_5_checkpoint_dir("Qwen3.8-27B")
    # Other templates (or not known to be these): no stand-in.
    for hub_id in ("Qwen/Qwen3-Next-80B-A3B-Thinking", "Qwen/Qwen3-Coder-30B-A3B-Instruct", "Qwen/Qwen3-4B-Base",
                   "Qwen/Qwen3-30B-A3B-Thinking-2507", "Qwen/Qwen3-8B-FP8", "Qwen/Qwen3.5-397B-A17B", "me/Qwen3-4B"):
        assert bundled_tokenizer_dir(hub_id) is None, hub_id


def test_check_with_an_uncached_hub_id_claims_only_what_is_known(tmp_path, capsys, monkeypatch):
    # Before: any Qwen/Qwen3* id not in the cache was checked with the bundled hybrid (or 2507) template and
    # "(the same as that model's)", false for Next-Thinking, Coder or Instruct: other masks and thresholds.
    import qwen_sft.data.tokenizer as tokenizer

    monkeypatch.setattr(tokenizer, "_in_hf_cache", lambda repo_id: False)
    data = _write(tmp_path, PLAIN)
    (tmp_path / "c.yaml").write_text(f"dataset: {data}\n")
    for hub_id in ("Qwen/Qwen3-Next-80B-A3B-Thinking", "Qwen/Qwen3-Coder-30B-A3B-Instruct"):
        for args in (["check", str(data), "--tokenizer", hub_id, "--report", str(tmp_path / "r.json")],
                     ["inspect", str(tmp_path / "c.yaml"), "--tokenizer", hub_id],
                     ["cache", "build", str(tmp_path / "c.yaml"), f"model_name_or_path={hub_id}"]):
            assert main(args) == 2
            err = capsys.readouterr().err
            assert f"{hub_id}: not in the local cache, and its chat template is not bundled with qwen-sft" in err
            assert "pass --tokenizer DIR" in err and "the same as" not in err and "Traceback" not in err
    assert main(["check", str(data), "--tokenizer", "Qwen/Qwen3.5-4B", "--report", str(tmp_path / "r.json"),
                 "enable_thinking=false"]) == 0
    err = capsys.readouterr().err
    assert (
        "note: Qwen/Qwen3.5-4B is not in the local cache; using the bundled copy of its tokenizer and chat template"
        in err
    )
    assert json.loads((tmp_path / "r.json").read_text())["template_kind"] == "hybrid"


@pytest.mark.parametrize("variant,setting,resolved", [
    ("hybrid", "auto", False), ("hybrid", True, True), ("hybrid", False, False),
    ("instruct-2507", "auto", False), ("instruct-2507", False, False),
    ("thinking-2507", "auto", True), ("thinking-2507", True, True)])
def test_modes_a_model_can_be_served_in(toks, variant, setting, resolved):
    assert resolve_thinking(setting, template_rules(toks[variant]), "M") is resolved


@pytest.mark.parametrize("variant,setting,words", [
    ("thinking-2507", False, ["enable_thinking: false", "always-thinking (Thinking-2507 kind", "auto (or true)"]),
    ("instruct-2507", True, ["enable_thinking: true", "never-thinking (Instruct-2507 kind", "auto (or false)"])])
def test_a_mode_the_model_cannot_be_served_in_is_refused(toks, variant, setting, words):
    with pytest.raises(UserError) as info:
        resolve_thinking(setting, template_rules(toks[variant]), "Qwen/Qwen3-4B-X")
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_served_mode_is_the_trained_one_else_the_templates(toks):
    assert served_thinking(toks["thinking-2507"], {}) is True
    assert served_thinking(toks["hybrid"], {}) is False
    assert served_thinking(toks["hybrid"], {"enable_thinking": True}) is True
    assert served_thinking(toks["hybrid"], {"enable_thinking": True}, override=False) is False
    with pytest.raises(UserError, match="always-thinking"):
        served_thinking(toks["thinking-2507"], {"enable_thinking": False})


def test_a_template_without_a_generation_prompt_is_refused(toks):
    tok = load_tokenizer(str(qwen3_tokenizer_dir("instruct-2507")))
    tok.chat_template = tok.chat_template.replace("{{- '<|im_start|>assistant\\n' }}", "")
    with pytest.raises(TemplateError, match="writes no generation prompt"):
        template_rules(tok, "mine")
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}" \
                        "{% if add_generation_prompt %}assistant: {% endif %}"
    with pytest.raises(TemplateError, match="does not close an assistant turn with a special token"):
        template_rules(tok, "mine")


def _write(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


PLAIN = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(4)]
REASONED = [
    {"instruction": f"Question {i}?", "output": f"<think>\nWork {i}.\n</think>\n\nAnswer {i}."} for i in range(4)
]


def test_check_refuses_thinking_off_for_a_thinking_model(tmp_path, capsys):
    data = _write(tmp_path, PLAIN)
    code = main(["check", str(data), "--tokenizer", str(qwen3_tokenizer_dir("thinking-2507")),
                 "--report", str(tmp_path / "r.json"), "enable_thinking=false"])
    err = capsys.readouterr().err
    assert code == 2 and "always-thinking" in err and "Traceback" not in err


@pytest.mark.slow
def test_plain_rows_on_a_thinking_model_fail_the_no_reasoning_threshold(tmp_path, capsys):
    data = _write(tmp_path, PLAIN + REASONED[:1])
    code = main(["check", str(data), "--tokenizer", str(qwen3_tokenizer_dir("thinking-2507")),
                 "--report", str(tmp_path / "r.json")])
    out, err = capsys.readouterr()
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 1
    assert (report["template_kind"], report["enable_thinking"], report["rows_without_reasoning"]) == (
        "thinking",
        True,
        4,
    )
    assert "4 of 5 rows without reasoning in thinking mode" in err and "max_no_reasoning_share" in err
    assert "learns to answer them with an empty think block" in out
    # the same rows pass when that is what the user wants
    assert main(["check", str(data), "--tokenizer", str(qwen3_tokenizer_dir("thinking-2507")),
                 "--report", str(tmp_path / "r.json"), "max_no_reasoning_share=0.9"]) == 0


def test_reasoning_on_an_instruct_model_is_counted_as_not_rendered(tmp_path, capsys):
    data = _write(tmp_path, REASONED)
    assert main(["check", str(data), "--tokenizer", str(qwen3_tokenizer_dir("instruct-2507")),
                 "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["template_kind"], report["reasoning_dropped_rows"], report["thinking_rows"]) == ("instruct", 4, 0)
    assert "4 row(s) have reasoning the model will not see or learn" in capsys.readouterr().out


# ---------------------------------------------------------------- Qwen3.5 / 3.6 / 3.8 (#22 item 5)

THINKS_BY_DEFAULT = {"Qwen3.5-0.8B": False, "Qwen3.5-2B": False, "Qwen3.5-4B": True, "Qwen3.5-9B": True,
                     "Qwen3.5-27B": True, "Qwen3.6-27B": True, "Qwen3.8-27B": True}
OPTIONS = {
    "Qwen3.5-4B": set(),
    "Qwen3.6-27B": {"preserve_thinking"},
    "Qwen3.8-27B": {"preserve_thinking", "reasoning_effort"},
}


@pytest.fixture(scope="module")
def toks35():
    from qwen_sft.assets import qwen3_5_checkpoint_dir

    return {c: load_tokenizer(str(qwen3_5_checkpoint_dir(c))) for c in THINKS_BY_DEFAULT}


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", THINKS_BY_DEFAULT)
def test_qwen3_5_kind_and_auto_is_the_checkpoints_own_default(toks35, checkpoint):
    rules = template_rules(toks35[checkpoint])
    own = THINKS_BY_DEFAULT[checkpoint]
    assert (rules.kind, rules.header, rules.end) == ("hybrid", "<|im_start|>assistant\n", "<|im_end|>")
    assert (rules.generation_prompt(True), rules.generation_prompt(False)) == (
        "<|im_start|>assistant\n<think>\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert rules.thinks_by_default is own
    assert resolve_thinking("auto", rules, checkpoint) is own and served_thinking(toks35[checkpoint], {}) is own
    assert ("thinks by default" if own else "does not think by default") in rules.describe()
    assert resolve_thinking(not own, rules, checkpoint) is (not own)  # both modes can be served
    # Qwen3's original hybrid template also thinks unless told not to, but leaves the <think> to the model: auto
    # stays off there (a documented choice, README "What is trained").


def test_qwen3_hybrid_auto_stays_off(toks):
    rules = template_rules(toks["hybrid"])
    assert rules.thinks_by_default is True and rules.default_thinking is False


@pytest.mark.parametrize("checkpoint", OPTIONS)
def test_template_options_are_read_off_the_template(toks35, checkpoint):
    assert set(template_rules(toks35[checkpoint]).options) == OPTIONS[checkpoint]
    assert template_rules(toks35[checkpoint]).renders_tools and template_rules(toks35[checkpoint]).renders_tool_calls


def test_template_kwargs_is_the_one_mapping_of_settings():
    from qwen_sft.config import TrainConfig
    from qwen_sft.data.template import template_kwargs

    assert template_kwargs(True, TrainConfig()) == {"enable_thinking": True}  # null: the template's own default
    assert template_kwargs(False, TrainConfig(reasoning_effort="low", preserve_thinking=False)) == \
        {"enable_thinking": False, "preserve_thinking": False, "reasoning_effort": "low"}
    assert template_kwargs(True, {"reasoning_effort": "medium", "base_model": "x"}) == \
        {"enable_thinking": True, "reasoning_effort": "medium"}  # a saved model's qwen_sft.json


@pytest.mark.parametrize("checkpoint,options,thinking,message", [
    ("Qwen3.5-4B", {"preserve_thinking": True}, True,
     "preserve_thinking: True, but Qwen/Qwen3.5-4B's chat template has no preserve_thinking option (it would be "
     "ignored); remove it (Qwen3.6 and 3.8 templates read preserve_thinking, Qwen3.8 reasoning_effort)"),
    ("Qwen3.6-27B", {"reasoning_effort": "low"}, True,
     "reasoning_effort: 'low', but Qwen/Qwen3.6-27B's chat template has no reasoning_effort option (it would be "
     "ignored); remove it (Qwen3.6 and 3.8 templates read preserve_thinking, Qwen3.8 reasoning_effort)"),
    # Checked in every mode the template serves: thinking off ignores the value, but it is still unknown.
    *[("Qwen3.8-27B", {"reasoning_effort": "max"}, thinking,
       "reasoning_effort: 'max' is refused by Qwen/Qwen3.8-27B's chat template: Unexpected reasoning effort max. "
       "Supported types are xhigh (default), medium, and low.") for thinking in (True, False)],
])
def test_an_option_the_template_does_not_know_is_refused_in_one_line(toks35, checkpoint, options, thinking, message):
    from qwen_sft.data.template import check_options

    with pytest.raises(UserError) as info:
        check_options(options, toks35[checkpoint], thinking, f"Qwen/{checkpoint}")
    assert str(info.value) == message


def test_known_options_pass_and_reach_the_rendering(toks35):
    from qwen_sft.data.encode import EncodeOptions, encode, inference_prompt_ids
    from qwen_sft.data.formats import parse_row
    from qwen_sft.data.template import check_options

    tok = toks35["Qwen3.8-27B"]
    assert check_options({"reasoning_effort": "low", "preserve_thinking": False}, tok, True, "m") == \
        {"reasoning_effort": "low", "preserve_thinking": False}
    conv = parse_row({"instruction": "q", "output": "a"}, None)
    low = tok.decode(inference_prompt_ids(conv, tok, True, {"reasoning_effort": "low"}))
    assert "Reasoning effort is set to low." in low and "xhigh" not in low
    assert "Reasoning effort is set to xhigh." in tok.decode(inference_prompt_ids(conv, tok, True))
    e = encode(conv, tok, EncodeOptions(enable_thinking=True, reasoning_effort="low"))
    assert tok.decode(e.input_ids).startswith(low)
    # Qwen3.6 keeps an earlier reply's reasoning with preserve_thinking: the row renders each reply as served,
    # one sequence; by default it drops it, and the earlier reply needs a sequence of its own.
    row = parse_row({"messages": [{"role": "user", "content": "q1"},
                                  {"role": "assistant", "content": "a1", "reasoning_content": "r1"},
                                  {"role": "user", "content": "q2"},
                                  {"role": "assistant", "content": "a2", "reasoning_content": "r2"}]}, None)
    tok = toks35["Qwen3.6-27B"]
    kept = encode(row, tok, EncodeOptions(enable_thinking=True, preserve_thinking=True))
    dropped = encode(row, tok, EncodeOptions(enable_thinking=True))
    assert "r1" in tok.decode(kept.input_ids) and kept.more == []
    assert (
        "r1" not in tok.decode(dropped.input_ids)
        and len(dropped.more) == 1
        and "r1" in tok.decode(dropped.more[0].input_ids)
    )


def test_check_resolves_auto_to_the_qwen3_5_checkpoints_default(tmp_path, capsys):
    from qwen_sft.assets import qwen3_5_checkpoint_dir

    data = _write(tmp_path, REASONED)
    for checkpoint, own in (("Qwen3.5-4B", True), ("Qwen3.5-0.8B", False)):
        assert main(["check", str(data), "--tokenizer", str(qwen3_5_checkpoint_dir(checkpoint)),
                     "--report", str(tmp_path / "r.json"), "--overwrite"]) == 0
        report = json.loads((tmp_path / "r.json").read_text())
        assert (report["template_kind"], report["enable_thinking"]) == ("hybrid", own)
        assert report["thinking_rows" if own else "reasoning_dropped_rows"] == 4


def test_check_refuses_an_option_the_template_does_not_know(tmp_path, capsys):
    from qwen_sft.assets import qwen3_5_checkpoint_dir

    data = _write(tmp_path, PLAIN)
    code = main(["check", str(data), "--tokenizer", str(qwen3_5_checkpoint_dir("Qwen3.8-27B")),
                 "--report", str(tmp_path / "r.json"), "reasoning_effort=max"])
    err = capsys.readouterr().err
    assert code == 2 and "reasoning_effort: 'max' is refused by" in err and "Traceback" not in err


# ---------------------------------------------------------------- a template that ignores tools (#23 item 12)

PLAIN_CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
TOOL_SCHEMA = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.slow
def test_a_template_that_ignores_tools_refuses_tool_rows_at_file_line(toks, tmp_path, capsys):
    # Before: the tools vanished from the prompt and the call was trained as an empty reply, without a word.
    tok = load_tokenizer(str(qwen3_tokenizer_dir("instruct-2507")))
    tok.chat_template = PLAIN_CHATML
    tok.save_pretrained(tmp_path / "tok")
    rules = template_rules(AutoTokenizer.from_pretrained(tmp_path / "tok"))
    assert (rules.renders_tools, rules.renders_tool_calls) == (False, False)
    data = _write(
        tmp_path,
        [
            PLAIN[0],
            {
                "tools": [TOOL_SCHEMA],
                "messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Sunny."}],
            },
            {
                "messages": [
                    {"role": "user", "content": "Weather?"},
                    {"role": "assistant", "content": "", "tool_calls": [CALL]},
                    {"role": "tool", "content": "21"},
                    {"role": "assistant", "content": "21 C."},
                ]
            },
        ],
    )
    code = main(["check", str(data), "--tokenizer", str(tmp_path / "tok"), "--report", str(tmp_path / "r.json"),
                 "preprocessing_num_workers=1"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert f"{data}:2: (template): tools: the chat template does not render `tools` (they would vanish from the " \
           "prompt); use a template that renders them, or remove them from the row" in out + err
    assert f"{data}:3: (template): tool_calls: the chat template does not render an assistant turn's `tool_calls` " \
           "(the call would be trained as an empty reply); use a template that renders them" in out + err
    # The bundled templates render both.
    for variant in VARIANTS:
        rules = template_rules(toks[variant])
        assert (rules.renders_tools, rules.renders_tool_calls) == (True, True)
