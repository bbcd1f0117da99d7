"""evaluation/ and data/fidelity.py: metrics and rates on hand-made inputs, template fidelity, held-out loss, the
training hook."""

import json
import math
import shutil

import pytest
import torch

from qwen_sft.data.formats import parse_row
from qwen_sft.errors import UserError
from qwen_sft.data.fidelity import TemplateFidelityError, assert_template_fidelity, check_template_fidelity
from qwen_sft.evaluation.command import check_thresholds, parse_thresholds
from qwen_sft.evaluation.metrics import (
    CJK_SHARE_THRESHOLD, Generation, behavior_rates, bleu_tokenize, cjk_share, corpus_bleu, detect_language,
    missing_reasoning, mixed_script_tokens, rouge_l, split_reasoning, unexpected_reasoning)
from qwen_sft.evaluation.passes import evaluate_model, heldout_loss, log_sample_generations
from qwen_sft.evaluation.report import fenced
from qwen_sft.testing import build_tiny_adapter
from tests.tiny import tiny_model_dir


def conv(user, reply, reasoning=None, system=None, source=""):
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    if reasoning:
        messages[-1]["reasoning_content"] = reasoning
    c = parse_row({"messages": messages}, None)
    c.source = source
    return c


ROWS = [
    conv("What is 2+2?", "4", system="Be brief.", source="d.jsonl:1"),
    conv("中国的首都是哪里？", "中国的首都是北京。", reasoning="用户问首都。", source="d.jsonl:2"),
    parse_row(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
            ]
        },
        None,
    ),
]


# ---------------------------------------------------------------- reference metrics


def test_mixed_script_tokens_split_cjk_per_character_and_other_text_per_word():
    assert mixed_script_tokens("Hello, World! 你好世界。用Python的pandas库") == [
        "hello", "world", "你", "好", "世", "界", "用", "python", "的", "pandas", "库"]
    assert mixed_script_tokens("今日は") == ["今", "日", "は"]  # kana too
    assert mixed_script_tokens("...!") == []


def test_rouge_l_exact_values():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("北京是首都", "北京是首都") == 1.0
    # LCS "the cat on the mat": 5 of 6 tokens on both sides -> F = 5/6
    assert rouge_l("the cat is on the mat", "the cat sat on the mat") == pytest.approx(5 / 6, abs=1e-12)
    # LCS 2: precision 2/2, recall 2/6 -> F = 2PR/(P+R) = 0.5
    assert rouge_l("The cat!", "the cat sat on the mat") == pytest.approx(0.5, abs=1e-12)
    # per character: LCS 今天天气 = 4 of 6 on both sides -> F = 2/3
    assert rouge_l("今天天气很好", "今天天气不错") == pytest.approx(2 / 3, abs=1e-12)
    assert rouge_l("hello", "你好") == 0.0 and rouge_l("", "你好") == 0.0


def test_rouge_score_default_tokenizer_would_drop_chinese():
    from rouge_score import rouge_scorer

    assert rouge_scorer.RougeScorer(["rougeL"]).score("今天天气不错", "今天天气不错")["rougeL"].fmeasure == 0.0
    assert rouge_l("今天天气不错", "今天天气不错") == 1.0


def test_bleu_exact_values_and_tokenize_choice():
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == (pytest.approx(100.0), "13a")
    # n-gram precisions 6/7, 4/6, 3/5, 2/4; the hypothesis is longer than the reference: no brevity penalty
    score, tok = corpus_bleu(["the cat sat on the red mat"], ["the cat sat on the mat"])
    assert tok == "13a" and score == pytest.approx(100 * (6 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25, abs=1e-9)
    # zh: per character; precisions 4/6, 3/5, 2/4, 1/3
    score, tok = corpus_bleu(["今天天气很好"], ["今天天气不错"])
    assert tok == "zh" and score == pytest.approx(100 * (1 / 15) ** 0.25, abs=1e-9)
    assert bleu_tokenize(["hello there", "你好"]) == "zh" and bleu_tokenize(["hello there"]) == "13a"
    # zh leaves non-CJK text as 13a does: a mixed corpus gets one consistent score
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

    s = "Hello, world! It's 3.5 dollars (approx.) -- ok?"
    assert TokenizerZh()(s) == Tokenizer13a()(s)


# ---------------------------------------------------------------- language, reasoning, rates


@pytest.mark.parametrize("text, share, lang", [
    ("中国的首都是北京。", 1.0, "cjk"),
    ("The capital is Paris.", 0.0, "other"),
    ("请用 Python 写一个 function", 5 / 7, "cjk"),  # 5 CJK characters, 2 words
    ("The word 你好 means hello", 2 / 6, "other"),  # 2 CJK characters, 4 words
    ("你好 hi", 2 / 3, "cjk"),
    ("你 hi", 0.5, "cjk"),  # exactly the threshold
    ("```python\nprint('hello world')\n```\n这是代码", 1.0, "cjk"),  # code is not counted
    ("Привет, мир", 0.0, "other"),
    ("こんにちは", 1.0, "cjk"),
    ("42 + 7 = 49", None, None),
    ("", None, None),
])
def test_language_detector(text, share, lang):
    assert CJK_SHARE_THRESHOLD == 0.5
    assert cjk_share(text) == (pytest.approx(share) if share is not None else None)
    assert detect_language(text) == lang


@pytest.mark.parametrize("text, reasoning, answer", [
    ("<think>\nhmm\n</think>\n\nParis.", "hmm", "Paris."),
    ("<think>\n\n</think>\n\nParis.", "", "Paris."),
    ("Paris.", None, "Paris."),
    ("<think>\nstill thinking", "still thinking", ""),  # cut by the token budget
    ("Paris.<think>x</think>", "x", "Paris."),
])
def test_split_reasoning(text, reasoning, answer):
    assert split_reasoning(text) == (reasoning, answer)


@pytest.mark.parametrize("text, thinking, expects, unexpected, missing", [
    # non-thinking mode: any opened <think> or non-empty block is a leak
    ("Paris.", False, False, False, None),
    ("<think>\nLet me think.\n</think>\n\nParis.", False, False, True, None),
    ("<think>\n\n</think>\n\nParis.", False, False, True, None),  # starts with <think>
    ("Paris. <think>oops</think>", False, False, True, None),
    ("Paris.", False, True, False, None),  # the row's reasoning is dropped in non-thinking mode
    # thinking mode, row without reasoning: the trained empty block is fine, a non-empty one is a leak
    ("<think>\n\n</think>\n\nParis.", True, False, False, None),
    ("<think>\nhmm\n</think>\n\nParis.", True, False, True, None),
    # thinking mode, row with reasoning: reasoning must be there
    ("<think>\nhmm\n</think>\n\nParis.", True, True, None, False),
    ("<think>\n\n</think>\n\nParis.", True, True, None, True),
    ("Paris.", True, True, None, True),
])
def test_reasoning_leak_and_missing(text, thinking, expects, unexpected, missing):
    assert unexpected_reasoning(text, thinking, expects) is unexpected
    assert missing_reasoning(text, thinking, expects) is missing


def _g(text, stopped):
    return Generation(text, [1] * 3, stopped)


def test_behavior_rates_non_thinking():
    rows = [
        conv("What is 2+2?", "4"),
        conv("中国的首都是哪里？", "北京。", reasoning="想一想"),
        conv("Name a colour.", "Blue."),
        conv("1+1", "2"),
    ]
    gens = [_g("Four.", True), _g("北京。", True), _g("<think>\nhmm\n</think>\n\n蓝色。", False), _g("2", False)]
    rates = behavior_rates(gens, rows, enable_thinking=False)
    assert (rates["stop_rate"].hits, rates["stop_rate"].total) == (2, 4) and rates["stop_rate"].value == 0.5
    assert (rates["unexpected_reasoning"].hits, rates["unexpected_reasoning"].total) == (1, 4)
    assert rates["missing_reasoning"].value is None and str(rates["missing_reasoning"]) == "n/a"
    # row 4: neither "1+1" nor "2" has letters -> not counted; row 3: English prompt, Chinese answer
    assert (rates["language_match"].hits, rates["language_match"].total) == (2, 3)
    assert str(rates["stop_rate"]) == "0.500 (2/4)"


def test_the_metrics_are_the_keys_the_ui_shows():
    # runfiles.EVAL_KEYS (what the UI's eval table lists, read without torch) is the report's own list, in order.
    from qwen_sft.evaluation.metrics import LossResult
    from qwen_sft.evaluation.report import score
    from qwen_sft.runfiles import EVAL_KEYS

    m = score("tuned", "m", LossResult(2.0, 4, 1), [_g("Four.", True)], [conv("What is 2+2?", "4")], False)
    assert list(m.values()) == list(EVAL_KEYS)


def test_behavior_rates_thinking():
    rows = [
        conv("Why?", "Because.", reasoning="think"),
        conv("Why not?", "Fine."),
        conv("How?", "Like so.", reasoning="r"),
    ]
    gens = [_g("<think>\nok\n</think>\n\nBecause.", True), _g("<think>\n\n</think>\n\nFine.", True),
            _g("<think>\n\n</think>\n\nLike so.", True)]
    rates = behavior_rates(gens, rows, enable_thinking=True)
    assert rates["stop_rate"].value == 1.0
    assert (rates["unexpected_reasoning"].hits, rates["unexpected_reasoning"].total) == (0, 1)
    assert (rates["missing_reasoning"].hits, rates["missing_reasoning"].total) == (1, 2)


def test_thresholds():
    t = parse_thresholds(["stop_rate=0.9", "language_match=0.95"], ["unexpected_reasoning=0.05"])
    assert t == {"stop_rate": 0.9, "language_match": 0.95, "unexpected_reasoning": 0.05}
    failures, notes = check_thresholds({"stop_rate": 0.5, "language_match": 1.0, "unexpected_reasoning": None}, t)
    assert failures == ["stop_rate 0.5 < 0.9 (--fail_below)"] and len(notes) == 1 and "unexpected_reasoning" in notes[0]
    assert check_thresholds({"unexpected_reasoning": 0.1}, t)[0] == ["unexpected_reasoning 0.1 > 0.05 (--fail_above)"]
    with pytest.raises(UserError, match="use --fail_above"):
        parse_thresholds(["unexpected_reasoning=0.1"], [])
    with pytest.raises(UserError, match="unknown"):
        parse_thresholds(["stop=0.1"], [])
    with pytest.raises(UserError, match="not a number"):
        parse_thresholds(["stop_rate=high"], [])


def test_fence_outgrows_backticks_in_the_text():
    assert fenced("a ```python``` b").startswith("````text\n")
    assert fenced("") == "```text\n(empty)\n```"


# ---------------------------------------------------------------- template fidelity

THINK_BLOCK = "{{- '<think>\\n\\n</think>\\n\\n' }}"
GEN_HEADER = "{{- '<|im_start|>assistant\\n' }}"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return build_tiny_adapter(tiny_model_dir(), tmp_path_factory.mktemp("run") / "lora_adapters", seed=3, scale=0.5)


@pytest.fixture(scope="module")
def merged(adapter, tmp_path_factory):
    from qwen_sft.merge import merge

    return merge(None, adapter, tmp_path_factory.mktemp("merged") / "m32", dtype="float32")


def _edit_template(src, dst, old, new):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "tokenizer_config.json").read_text())
    assert old in cfg["chat_template"]
    cfg["chat_template"] = cfg["chat_template"].replace(old, new)
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    jinja = dst / "chat_template.jinja"
    if jinja.is_file():
        jinja.write_text(jinja.read_text().replace(old, new))
    return dst


@pytest.mark.slow
def test_fidelity_passes_for_the_adapter_and_the_merged_dir(adapter, merged):
    assert (merged / "chat_template.jinja").is_file()  # the merged dir's own saved tokenizer is what is checked
    assert check_template_fidelity(adapter, ROWS) == []
    assert check_template_fidelity(merged, ROWS) == []
    assert check_template_fidelity(adapter, ROWS, enable_thinking=False) == []


@pytest.mark.slow
def test_fidelity_catches_a_template_without_the_empty_think_block(adapter, merged, tmp_path):
    # Without the empty think block of thinking-off prompts the template reads as always-thinking: a model
    # trained with enable_thinking false cannot be served by it.
    for src in (adapter, merged):
        broken = _edit_template(src, tmp_path / src.name, THINK_BLOCK, "")
        problems = check_template_fidelity(broken, ROWS[:1])
        assert len(problems) == 1, problems
        assert "enable_thinking: false, but" in problems[0] and "always-thinking (Thinking-2507 kind" in problems[0]
        with pytest.raises(TemplateFidelityError, match=r"template fidelity check failed(.|\n)*always-thinking"):
            assert_template_fidelity(broken, ROWS[:1])


def test_fidelity_catches_a_changed_header(adapter, tmp_path):
    # A generation prompt with one more newline than the rendered replies: no row's last reply follows it.
    broken = _edit_template(adapter, tmp_path / "b", GEN_HEADER, "{{- '<|im_start|>assistant\\n\\n' }}")
    problems = check_template_fidelity(broken, ROWS)
    assert len(problems) == len(ROWS), problems
    assert problems[0].startswith("row 1 (d.jsonl:1) 'What is 2+2?': the encoder cannot split this row: "), problems
    assert all("renders the last reply unlike the prompt a server builds for it" in p for p in problems)


def test_fidelity_catches_template_copies_that_differ(merged, tmp_path):
    d = shutil.copytree(merged, tmp_path / "m")
    (d / "chat_template.jinja").write_text((d / "chat_template.jinja").read_text().replace(THINK_BLOCK, ""))
    problems = check_template_fidelity(d, ROWS[:1])
    assert "chat_template.jinja and the chat_template in tokenizer_config.json differ" in problems[0]
    assert any("always-thinking" in p for p in problems)  # transformers 5 uses the .jinja copy


@pytest.mark.slow
def test_fidelity_mode_comes_from_qwen_sft_json(adapter, tmp_path):
    thinking = shutil.copytree(adapter, tmp_path / "lora_adapters")  # an adapter trained in thinking mode
    meta = json.loads((thinking / "qwen_sft.json").read_text())
    (thinking / "qwen_sft.json").write_text(json.dumps(dict(meta, enable_thinking=True)))
    # the rows checked in the mode the adapter was trained in: fine (the reasoning row trains its think block)
    assert check_template_fidelity(thinking, ROWS) == []
    assert check_template_fidelity(thinking, ROWS, enable_thinking=True) == []
    problems = check_template_fidelity(thinking, ROWS, enable_thinking=False)
    assert len(problems) == 1 and "trained with enable_thinking=True" in problems[0] and "qwen_sft.json" in problems[0]
    with pytest.raises(UserError, match="enable_thinking=True"):
        assert_template_fidelity(thinking, ROWS, enable_thinking=False)


# ---------------------------------------------------------------- loss, generations, the report


def test_heldout_loss_is_the_summed_trained_token_cross_entropy(adapter):
    from qwen_sft.batching import collate_padding_free, num_targets
    from qwen_sft.data.encode import EncodeOptions, encode
    from qwen_sft.generate import load_for_chat
    from qwen_sft.loss import full_logits_loss

    model, tok, _ = load_for_chat(adapter, device="cpu")
    res = heldout_loss(model, tok, ROWS, enable_thinking=False)
    total, count = 0.0, 0
    with torch.no_grad():
        for c in ROWS:
            first = encode(c, tok, EncodeOptions())
            for enc in [first] + first.more:  # the row's sequences, as training sees them (data/encode.py)
                batch = collate_padding_free([enc])
                logits = model(input_ids=batch["input_ids"]).logits
                total += float(full_logits_loss(logits, batch["targets"]))
                count += num_targets(enc)
    assert res.tokens == count == 2 + 6 + 5  # '4' + <|im_end|>, ..., 'Blue.' + <|im_end|> and 'b' + <|im_end|>
    assert res.loss == pytest.approx(total / count, rel=1e-5) and res.perplexity == pytest.approx(math.exp(res.loss))


@pytest.mark.slow
def test_adapter_and_merged_dirs_evaluate_alike(adapter, merged):
    a = evaluate_model(adapter, ROWS, max_new_tokens=6, device="cpu")  # base: the adapter disabled
    m = evaluate_model(merged, ROWS, max_new_tokens=6, device="cpu")  # base: loaded from qwen_sft.json
    assert a.base.path == m.base.path == str(tiny_model_dir())
    assert a.tuned.loss.loss == pytest.approx(m.tuned.loss.loss, rel=1e-4)
    assert a.base.loss.loss == pytest.approx(m.base.loss.loss, rel=1e-6)
    assert a.tuned.loss.loss != pytest.approx(a.base.loss.loss, rel=1e-3)
    assert [g.token_ids for g in a.tuned.generations] == [g.token_ids for g in m.tuned.generations]
    assert [g.token_ids for g in a.base.generations] == [g.token_ids for g in m.base.generations]
    assert all(len(g.token_ids) == 6 and not g.stopped for g in a.tuned.generations)
    md = a.markdown()
    assert "| stop_rate | 0.000 (0/3) | 0.000 (0/3) |  |" in md and "### 2. d.jsonl:2" in md
    rows = list(a.rows())
    assert rows[1]["prompt_language"] == "cjk" and rows[1]["reference"] == "中国的首都是北京。"
    assert rows[0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert rows[0]["tuned"]["text"] == a.tuned.generations[0].text


# ---------------------------------------------------------------- the training hook


def test_log_sample_generations_writes_a_tensorboard_text_entry(adapter, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from qwen_sft.generate import load_for_chat
    from qwen_sft.loss import CausalLMLoss

    model, tok, _ = load_for_chat(adapter, device="cpu")
    model.train()
    writer = SummaryWriter(str(tmp_path / "tb"))
    gens = log_sample_generations(CausalLMLoss(model), tok, ROWS[:2], writer, step=7, enable_thinking=False,
                                  max_new_tokens=4)
    writer.close()
    assert model.training  # put back in train mode
    assert len(gens) == 2 and all(len(g.token_ids) == 4 for g in gens)
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    tag = "eval/samples/text_summary"
    assert tag in acc.Tags()["tensors"]
    (event,) = acc.Tensors(tag)
    text = event.tensor_proto.string_val[0].decode()
    assert event.step == 7 and "中国的首都是哪里？" in text and "中国的首都是北京。" in text and gens[1].text in text


def test_eval_out_never_replaces_files_it_did_not_write(tmp_path):
    from qwen_sft.evaluation.report import check_out_dir

    check_out_dir(tmp_path / "new")  # absent: fine
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"train_runtime": 1.0}))  # a training run's metrics
    with pytest.raises(UserError, match="already holds metrics.json that eval did not write"):
        check_out_dir(run)
    earlier = tmp_path / "eval"
    earlier.mkdir()
    (earlier / "metrics.json").write_text(json.dumps({"model": "m", "base_model": "b", "tuned": {}, "base": {}}))
    (earlier / "report.md").write_text("old")
    check_out_dir(earlier)  # an earlier eval report is replaced
