"""Chat-template kinds read off the template, and the thinking modes each kind can be trained and served in."""

import json

import pytest
from transformers import AutoTokenizer

from qwen_sft.assets import qwen3_tokenizer_dir, variant_of
from qwen_sft.cli import main
from qwen_sft.data.template import TemplateError, resolve_thinking, served_thinking, template_rules
from qwen_sft.errors import UserError

VARIANTS = {"hybrid": "hybrid", "instruct-2507": "instruct", "thinking-2507": "thinking"}


@pytest.fixture(scope="module")
def toks():
    return {v: AutoTokenizer.from_pretrained(qwen3_tokenizer_dir(v)) for v in VARIANTS}


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


def test_hub_ids_name_their_variant():
    assert variant_of("Qwen/Qwen3-4B-Instruct-2507") == "instruct-2507"
    assert variant_of("Qwen/Qwen3-30B-A3B-Thinking-2507") == "thinking-2507"
    assert variant_of("Qwen/Qwen3-8B") == variant_of("Qwen/Qwen3-4B-Base") == "hybrid"


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
    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir("instruct-2507"))
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
REASONED = [{"instruction": f"Question {i}?", "output": f"<think>\nWork {i}.\n</think>\n\nAnswer {i}."} for i in range(4)]


def test_check_refuses_thinking_off_for_a_thinking_model(tmp_path, capsys):
    data = _write(tmp_path, PLAIN)
    code = main(["check", str(data), "--tokenizer", str(qwen3_tokenizer_dir("thinking-2507")),
                 "--report", str(tmp_path / "r.json"), "enable_thinking=false"])
    err = capsys.readouterr().err
    assert code == 2 and "always-thinking" in err and "Traceback" not in err


def test_plain_rows_on_a_thinking_model_fail_the_no_reasoning_threshold(tmp_path, capsys):
    data = _write(tmp_path, PLAIN + REASONED[:1])
    code = main(["check", str(data), "--tokenizer", str(qwen3_tokenizer_dir("thinking-2507")),
                 "--report", str(tmp_path / "r.json")])
    out, err = capsys.readouterr()
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 1
    assert (report["template_kind"], report["enable_thinking"], report["rows_without_reasoning"]) == ("thinking", True, 4)
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
