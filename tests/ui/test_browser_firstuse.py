"""#23's first-time-user pages in headless Chromium (Debian's, driven by Playwright), on the tiny model: the New run
form (the essentials, model and data picked from the workspace, the plan beside the config, the overwrite
confirmation), a failed run (its rows linked, retry with its launch's settings, no empty charts), an invalid row's raw
line, the runs filter and trash, Compare's empty state and differences, the run page's layout and chart axes, merge
and eval's held-out data, the data page's verdict and sizes.

One server for the module, on a workspace with one real run (trained here, 8 steps, a validation split) and runs
made from records. QWEN_SFT_UI_SCREENSHOTS=DIR saves the screenshots of docs/ui.md there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time

import pytest

from qwen_sft import live
from qwen_sft.config import build_config
from qwen_sft.plan import report
from tests.ui.conftest import end_leftover_trainers, UIServer, make_workspace, tiny_config, write_live
from tests.ui.test_browser import status_is
from tests.ui.test_browser_pages import shot

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not

SLOW = 240_000  # ms: a trainer, a model load or an eval on 2 busy cores
ESSENTIAL = [
    "model_name_or_path",
    "dataset",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lora_rank",
    "cutoff_len",
    "per_device_train_batch_size",
    "run_name",
]
BAD_LINES = ['{"instruction": "q", "output": ""}', "not json at all", '{"instruction": "Say hi.", "output": "Hi!"}']
PLAN = {"peak_gib": 9.44, "fits": True, "tokens_per_s": 2345.0, "wall_s": 3725, "steps": 600,
        "breakdown": {"frozen_weights_gib": 7.5, "lora_weights_gib": 0.1, "lora_grads_gib": 0.1,  # the server's keys
                      "optimizer_state_gib": 0.2, "saved_activations_gib": 1.2, "transient_gib": 0.17,
                      "cuda_workspace_margin_gib": 0.17, "worst_layer_transient_gib": 0.1,
                      "loss_chunk_transient_gib": 0.17},
        "breakdown_labels": report.LABELS,  # what the server adds to the plan for the page
        "card": {"name": "RTX 4090", "memory_gib": 24.0}, "suggestions": []}
PLAN_OVER = {
    **PLAN,
    "peak_gib": 13.9,
    "fits": False,
    "card": {"name": "RTX 3090", "memory_gib": 12.0},
    "suggestions": [{"change": "per_device_train_batch_size=1", "peak_gib": 11.2}, "gradient_checkpointing=true"],
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from qwen_sft.train import train

    ws = make_workspace(tmp_path_factory.mktemp("firstuse") / "ws", with_model=True)
    (ws / "data" / "bad.jsonl").write_text("\n".join(BAD_LINES) + "\n")
    (ws / "data" / "other.jsonl").write_text((ws / "data" / "train.jsonl").read_text())
    # The real run: a learning rate that warms up (an lr axis of 1e-4s), a validation split of 4 rows.
    cfg = build_config(tiny_config(run_name="real", max_steps=8, warmup_ratio=0.5, val_size=4, eval_steps=4))
    with contextlib.chdir(ws):
        train(cfg)
    record = json.loads((ws / "runs" / "real" / "live.jsonl").read_text().splitlines()[0])["config"]
    # beta: the same settings but the learning rate, as another version would record them (3 epochs as an int,
    # the thinking mode the first resolved, resumed once); an adapter record, and an eval with blank generations.
    beta = write_live(ws / "runs" / "beta", [
        {"status": "running", "phase": "setup", "config": {**record, "run_name": "beta", "learning_rate": 0.0003,
                                                           "num_train_epochs": int(record["num_train_epochs"]),
                                                           "enable_thinking": False, "resume_from_checkpoint": "auto"}},
        {"status": "finished", "step": 8, "metrics": {"train_steps": 8}}])
    (beta / "lora_adapters").mkdir()
    (beta / "lora_adapters" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "models/tiny",
                                                                            "peft_type": "LORA"}))
    (beta / "eval").mkdir()
    (beta / "eval" / "metrics.json").write_text(
        json.dumps(
            {
                "model": "runs/beta/lora_adapters",
                "base_model": "models/tiny",
                "rows": 2,
                "data": ["data/other.jsonl"],
                "enable_thinking": False,
                "base": {"loss": 9.1},
                "tuned": {"loss": 4.2},
            }
        )
    )
    (beta / "eval" / "generations.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "index": i,
                    "source": f"data/other.jsonl:{i + 1}",
                    "prompt": [{"role": "user", "content": "q"}],
                    "reference": "a",
                    "base": {"text": base},
                    "tuned": {"text": tuned},
                }
            )
            + "\n"
            for i, (base, tuned) in enumerate([("\n\n ", ""), ("x", "y")])
        )
    )
    write_live(ws / "runs" / "gamma", [{"status": "running", "phase": "setup", "config": tiny_config(run_name="gamma")},
                                       {"status": "failed", "error": "something broke"}])
    write_live(
        ws / "runs" / "trashme",
        [
            {"status": "running", "phase": "setup", "config": tiny_config(run_name="trashme")},
            {"status": "finished", "step": 6, "metrics": {"train_steps": 6}},
        ],
    )
    server = UIServer(ws, {"QWEN_SFT_DEBUG_STEP_DELAY": "0.5"})
    yield ws, server
    server.stop()
    end_leftover_trainers(ws)


def until_sent(page, sent: list, ok, timeout_s: float = 10) -> None:
    """Wait until the last request the page sent satisfies ok (the page's answers can come before it is sent)."""
    end = time.time() + timeout_s
    while not (sent and ok(sent[-1])):
        assert time.time() < end, f"no such request; the last one sent: {sent[-1:]}"
        page.wait_for_timeout(50)


def run_rows(page) -> list[str]:
    return page.eval_on_selector_all("#runs-table tbody tr", "els => els.map(e => e.dataset.run)")


# ---------------------------------------------------------------- New run


def test_new_run_shows_the_essentials_picks_from_the_workspace_and_plans(site, page):
    from playwright.sync_api import expect

    ws, server = site
    answer, sent = [PLAN], []

    def plan(route):
        sent.append(json.loads(route.request.post_data))
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answer[0]))

    page.route("**/api/plan", plan)  # the plan's own endpoint is another part's (#24): its answer, fixed here
    page.goto(server.url + "#/new")
    page.wait_for_selector('#config-form[data-loaded="sft/configs/tiny.yaml"]')
    assert page.eval_on_selector_all("#essentials .field", "els => els.map(e => e.dataset.field)") == ESSENTIAL
    for name in ESSENTIAL:
        expect(page.locator(f"#f-{name}")).to_be_visible()
    expect(page.locator("#advanced")).not_to_have_attribute("open", "")
    expect(page.locator("#f-lora_dropout")).to_be_hidden()  # the other 50-odd fields are folded
    expect(page.locator("#advanced > summary")).to_contain_text("Advanced: ")

    # Model and data from what the workspace holds.
    assert page.eval_on_selector_all("#pick-model_name_or_path option", "els => els.map(e => e.value)") == [
        "",
        "models/tiny",
    ]
    assert page.eval_on_selector_all("#pick-dataset option", "els => els.map(e => e.value)") == [
        "", "data/bad.jsonl", "data/other.jsonl", "data/train.jsonl"]
    page.select_option("#pick-dataset", "data/other.jsonl")
    expect(page.locator("#f-dataset")).to_have_value("data/other.jsonl")
    expect(page.locator("#command")).to_have_text("qwen-sft train sft/configs/tiny.yaml dataset=data/other.jsonl")

    # The plan beside the config: the predicted peak against the card, and the time.
    expect(page.locator("#plan-fits")).to_have_text("fits")
    expect(page.locator("#plan-peak")).to_have_text("predicted peak 9.4 GiB")
    expect(page.locator("#plan-card")).to_have_text(" on RTX 4090 (24.0 GiB)")
    expect(page.locator("#plan .progress-text")).to_have_text("9.4 GiB of 24.0 GiB")
    expect(page.locator("#plan-time")).to_have_text("time 1h 2m at about 2345 tokens/s, 600 steps")
    assert sent[-1] == {"base": "sft/configs/tiny.yaml", "values": {"dataset": "data/other.jsonl"}}
    # The breakdown, opened, in words (not the JSON keys).
    page.click("#plan-breakdown > summary")
    rows = page.locator("#plan-breakdown tr")
    expect(rows.first).to_have_text("frozen weights7.5 GiB")
    expect(rows.nth(3)).to_have_text("AdamW state0.2 GiB")
    expect(rows.nth(4).locator("td").first).to_have_attribute("title", "kept from the forward: the checkpointed "
                                                                         "layer inputs")
    expect(page.locator("#plan-breakdown")).not_to_contain_text("_gib")
    shot(page, "new-run-plan")

    # Another card: asked again (debounced), and a run that does not fit says what would.
    answer[0] = PLAN_OVER
    page.fill("#plan-gpu", "rtx3090")
    expect(page.locator("#plan-fits")).to_have_text("does not fit")
    until_sent(page, sent, lambda last: last.get("gpu") == "rtx3090")  # (an earlier request may answer first)
    expect(page.locator("#plan-suggestions li")).to_have_text(["per_device_train_batch_size=1: peak 11.2 GiB",
                                                                "gradient_checkpointing=true"])
    expect(page.locator("#plan .progress-bar")).to_have_class(re.compile(r"\bover\b"))
    # A field change asks again with the new values.
    page.fill("#f-lora_rank", "8")
    page.wait_for_function("() => document.querySelector('#command').textContent.includes('lora_rank=8')")
    expect(page.locator("#plan")).to_have_attribute("data-state", "shown")
    page.wait_for_timeout(1000)  # the plan's debounce
    expect(page.locator("#plan")).to_have_attribute("data-state", "shown")
    until_sent(page, sent, lambda last: last["values"] == {"dataset": "data/other.jsonl", "lora_rank": "8"})

    # An advanced field's error opens the fold; the filter finds a field in it.
    page.fill("#field-filter", "lora_dropout")
    expect(page.locator("#advanced")).to_have_attribute("open", "")
    page.fill("#f-lora_dropout", "2")
    expect(page.locator('.field[data-field="lora_dropout"] .field-errors')).to_contain_text("lora_dropout")


def test_without_the_plan_endpoint_the_panel_is_hidden(site, page):
    from playwright.sync_api import expect

    ws, server = site
    page.route("**/api/plan", lambda route: route.fulfill(status=404, body="not found"))  # a server without the plan
    page.goto(server.url + "#/new")
    page.wait_for_selector('#config-form[data-loaded="sft/configs/tiny.yaml"]')
    expect(page.locator("#plan")).to_have_attribute("data-state", "absent")
    expect(page.locator("#plan")).to_be_hidden()


def test_overwrite_asks_first_then_a_failed_run_links_its_rows_and_retries(site, page):
    from playwright.sync_api import expect

    ws, server = site
    page.goto(server.url + "#/new")
    page.wait_for_selector('#config-form[data-loaded="sft/configs/tiny.yaml"]')
    page.fill("#f-dataset", "data/bad.jsonl")
    page.fill("#f-run_name", "bad")
    page.click("#advanced > summary")
    page.select_option("#f-overwrite_output_dir", "true")
    page.click("#check")
    expect(page.locator("#command")).to_contain_text("overwrite_output_dir=true")
    expect(page.locator("#start")).to_be_enabled()

    # Item 5: the start with overwrite_output_dir asks first; Cancel starts nothing.
    page.click("#start")
    expect(page.locator("#confirm-overwrite")).to_be_visible()
    expect(page.locator("#confirm-overwrite p")).to_have_text(
        "overwrite_output_dir is on. The run starts afresh in runs/bad: whatever an earlier run left there "
        "(checkpoints, "
        "the adapter, a merged model, eval results, logs) is replaced.")
    page.click("#confirm-cancel")
    expect(page.locator("#confirm-overwrite")).to_be_hidden()
    page.wait_for_timeout(500)
    assert not (ws / "runs" / "bad").exists() and "#/new" in page.url
    page.click("#start")
    page.click("#confirm-start")
    page.wait_for_url("**#/run/runs/bad")

    # It fails on the data: each error line links to its row; no empty charts, no promised data report.
    status_is(page, "failed", timeout=SLOW)
    expect(page.locator("#error-line")).to_contain_text("data/bad.jsonl:1: output: empty")
    link = page.locator("#error-line a.row-link")
    expect(link).to_have_text("data/bad.jsonl:1")
    assert link.get_attribute("href") == "#/data/row?file=data%2Fbad.jsonl&where=1"
    page.click("#banner details summary")
    detail_links = page.locator("#error-detail a.row-link")
    expect(detail_links).to_have_text(["data/bad.jsonl:1", "data/bad.jsonl:2"])
    expect(page.locator("#charts")).to_be_hidden()
    expect(page.locator("#no-curves")).to_have_text("No curves: the run ended before its first step.")
    expect(page.locator("#data-report")).to_be_hidden()
    expect(page.locator("#page")).not_to_contain_text("written when the data is loaded")
    expect(page.locator("#new-from")).to_be_hidden()  # no config.yaml was written
    expect(page.locator("#retry")).to_be_visible()
    shot(page, "failed")

    # A row the error names: its raw line as read, not empty cards.
    page.click("#error-detail a.row-link >> nth=1")
    page.wait_for_selector('#page[data-rendered="error"]')
    expect(page.locator("#row-title")).to_have_text("data/bad.jsonl:2")
    expect(page.locator("#row-raw")).to_have_text(BAD_LINES[1])
    expect(page.locator("#row-encoded")).to_be_hidden()
    expect(page.locator("#page h3", has_text="as read")).to_have_text("The line as read (data/bad.jsonl:2)")
    shot(page, "row-invalid")

    # Retry with these settings: the form with the launch's base and changes, though no config.yaml exists.
    page.go_back()
    page.click("#retry")
    page.wait_for_selector('#config-form[data-loaded="sft/configs/tiny.yaml"]')
    expect(page.locator("#retry-note")).to_contain_text("Retrying runs/bad with the settings it was launched with")
    expect(page.locator("#f-dataset")).to_have_value("data/bad.jsonl")
    expect(page.locator("#f-run_name")).to_have_value("bad")
    expect(page.locator("#f-overwrite_output_dir")).to_have_value("true")
    expect(page.locator("#command")).to_have_text(
        "qwen-sft train sft/configs/tiny.yaml dataset=data/bad.jsonl run_name=bad overwrite_output_dir=true")
    launched = json.loads((ws / "runs" / "bad" / "ui_launch.json").read_text())["argv"]
    # the same as launched
    assert launched[-3:] == ["dataset=data/bad.jsonl", "run_name=bad", "overwrite_output_dir=true"]


# ---------------------------------------------------------------- Runs


def test_runs_filter_and_trash_with_undo(site, page):
    from playwright.sync_api import expect

    ws, server = site
    write_live(ws / "runs" / "busy", [{"status": "running", "phase": "setup", "config": tiny_config(run_name="busy"),
                                       "pid": os.getpid(), "pid_start": live.process_start_time(os.getpid()),
                                       "host": os.uname().nodename}])
    page.goto(server.url + "#/runs")
    page.wait_for_selector('#runs-table tr[data-run="runs/trashme"]')
    page.fill("#runs-filter", "gam")
    page.wait_for_function("() => document.querySelectorAll('#runs-table tbody tr').length === 1")
    assert run_rows(page) == ["runs/gamma"]
    page.fill("#runs-filter", "")
    page.select_option("#status-filter", "failed")
    page.wait_for_function("() => [...document.querySelectorAll('#runs-table tbody tr')].every(r => "
                           "r.querySelector('.badge').textContent === 'failed')")
    assert "runs/gamma" in run_rows(page) and "runs/real" not in run_rows(page)
    page.select_option("#status-filter", "")
    page.fill("#runs-filter", "no such run")
    expect(page.locator("#no-match")).to_be_visible()
    page.fill("#runs-filter", "")

    # A running run cannot be moved.
    expect(page.locator('tr[data-run="runs/busy"] button.trash-run')).to_be_disabled()
    # Move to trash: gone from the table, kept in .trash/, Undo brings it back.
    page.click('tr[data-run="runs/trashme"] button.trash-run')
    expect(page.locator('tr[data-run="runs/trashme"]')).to_have_count(0)
    expect(page.locator("#toast")).to_contain_text("runs/trashme moved to .trash/")
    assert not (ws / "runs" / "trashme").exists()
    assert len(list((ws / ".trash").glob("*/trashme/live.jsonl"))) == 1
    expect(page.locator("#trash summary")).to_have_text("Trash (1): runs moved to .trash/ in the workspace")
    shot(page, "runs-trash")
    page.click("#undo")
    expect(page.locator('tr[data-run="runs/trashme"]')).to_have_count(1)
    assert (ws / "runs" / "trashme" / "live.jsonl").is_file()
    expect(page.locator("#trash")).to_be_hidden()
    # Again, and back from the trash list this time.
    page.click('tr[data-run="runs/trashme"] button.trash-run')
    expect(page.locator('tr[data-run="runs/trashme"]')).to_have_count(0)
    page.click("#trash summary")
    page.click("#trash button.restore")
    expect(page.locator('tr[data-run="runs/trashme"]')).to_have_count(1)
    (ws / "runs" / "busy" / "live.jsonl").unlink()


def test_compare_empty_state_and_no_false_differences(site, page):
    from playwright.sync_api import expect

    ws, server = site
    page.goto(server.url + "#/compare")
    expect(page.locator("#compare-empty")).to_have_text(
        "Tick two or more runs above (or in the Runs table) to see their curves overlaid, their results side by side "
        "and the settings on which they differ.")
    expect(page.locator("#compare-body")).to_be_hidden()
    page.locator("#picker label", has_text="real").locator("input").check()
    expect(page.locator("#compare-empty")).to_have_text("Tick one more run above to compare it with real.")
    page.locator("#picker label", has_text="beta").locator("input").check()
    expect(page.locator("#compare-empty")).to_be_hidden()
    # 3 vs 3.0, auto vs the mode it resolved to, a resume's record: none of them is a difference.
    page.wait_for_selector("#config-diff tbody tr[data-key]")
    assert page.eval_on_selector_all("#config-diff tbody tr", "els => els.map(e => e.dataset.key)") == [
        "learning_rate",
        "run_name",
    ]


# ---------------------------------------------------------------- Run page


def test_run_page_layout_axes_and_the_merge_and_eval_section(site, page):
    from playwright.sync_api import expect

    ws, server = site
    page.goto(server.url + "#/run/runs/real")
    expect(page.locator("#data-report")).to_contain_text("rows read")
    page.wait_for_selector('path[data-series="lr"]')

    # The log keeps most of the row beside the data report.
    log_w = page.locator("#log-card").bounding_box()["width"]
    row_w = page.locator("#log-card").locator("xpath=..").bounding_box()["width"]
    assert log_w >= 0.55 * row_w, (log_w, row_w)

    # The lr axis: one number format for every tick, the label clear of them.
    lr = page.locator(".chart-svg").nth(1)
    ticks = lr.locator("text.tick-y").all_text_contents()
    decimals = {len(t.split(".")[1]) if "." in t else 0 for t in ticks}
    assert len(ticks) >= 3 and len(decimals) == 1 and all(re.fullmatch(r"-?\d+(\.\d+)?", t) for t in ticks), ticks
    expect(lr.locator("text.y-label")).to_have_text(re.compile(r"^lr \(×1e-\d\)$"))
    label = lr.locator("text.y-label").bounding_box()
    for i in range(len(ticks)):
        tick = lr.locator("text.tick-y").nth(i).bounding_box()
        assert label["x"] + label["width"] <= tick["x"], (label, tick, ticks[i])

    # Merge and evaluate: a button at the top goes there.
    expect(page.locator("#to-ops")).to_be_visible()
    expect(page.locator("#ops")).not_to_be_in_viewport(ratio=0.5)  # at the foot of the page
    page.click("#to-ops")
    expect(page.locator("#ops")).to_be_in_viewport(ratio=0.9)
    # The held-out data defaults to the run's validation split; its training data is named as such, with a warning.
    expect(page.locator("#eval-data")).to_have_value("validation")
    expect(page.locator("#eval-data option").first).to_have_text("the run's validation split (4 rows, val_size 4)")
    expect(page.locator("#eval-data-warning")).to_be_hidden()
    page.select_option("#eval-data", "data/train.jsonl")
    expect(page.locator("#eval-data-warning")).to_have_text(
        "data/train.jsonl is this run's training data: the tuned model has seen these rows, so its scores on them show "
        "what it memorised, not how it does on new data.")
    page.select_option("#eval-data", "data/other.jsonl")
    expect(page.locator("#eval-data-warning")).to_be_hidden()

    # Blank generations say so.
    page.goto(server.url + "#/run/runs/beta")
    page.wait_for_selector("#eval-generations")
    expect(page.locator("#eval-generations .gen-base pre").first).to_have_text("(only whitespace, 3 characters: ↵↵·)")
    expect(page.locator("#eval-generations .gen-tuned pre").first).to_have_text("(empty)")
    expect(page.locator("#eval-generations .gen-tuned pre").nth(1)).to_have_text("y")


def test_eval_on_the_validation_split_from_the_run_page(site, page):
    from playwright.sync_api import expect

    from qwen_sft.config import load_config
    from qwen_sft.data.dataset import split_indices
    from qwen_sft.data.formats import load_dataset

    ws, server = site
    page.goto(server.url + "#/run/runs/real")
    page.wait_for_selector("#ops:not([hidden])")
    expect(page.locator("#eval-data")).to_have_value("validation")
    page.fill("#eval-n", "2")
    page.fill("#eval-max-new-tokens", "4")
    with page.expect_response("**/api/ops/eval") as started:
        page.click("#evaluate")
    job = started.value.json()
    page.wait_for_selector("#eval-table", timeout=SLOW)
    expect(page.locator("#eval-result h3").first).to_contain_text("2 rows of runs/real/validation_split.jsonl")
    # The file holds exactly the rows training held out (every row of train.jsonl is kept by the tiny model).
    with contextlib.chdir(ws):
        cfg = load_config(ws / "runs" / "real" / "config.yaml")
        rows = load_dataset([cfg.dataset]).conversations
    _, held = split_indices(len(rows), cfg.val_size, cfg.seed)
    written = [json.loads(line) for line in (ws / "runs" / "real" / "validation_split.jsonl").read_text().splitlines()]
    assert [w["messages"] for w in written] == [rows[i].messages for i in held]
    # The job wrote the split (ui/heldout.py), then ran `qwen-sft eval` on it in its place: the CLI is run, not
    # imported from the UI (tests/unit/test_import_graph.py), and the job's status and log are the eval's.
    assert page.request.get(server.url + f"api/jobs/get?id={job['id']}").json()["status"] == "finished"
    metrics = json.loads((ws / "runs" / "real" / "eval" / "metrics.json").read_text())
    assert metrics["data"] == ["runs/real/validation_split.jsonl"] and metrics["rows"] == 2, metrics
    assert metrics["rows_in_data"] == len(held) and metrics["model"] == "runs/real/lora_adapters"
    log = (ws / "runs" / "real" / "eval.log").read_text()
    assert f"validation split of runs/real: {len(held)} rows" in log, log[-2000:]
    assert "report: runs/real/eval/report.md" in log, log[-2000:]


# ---------------------------------------------------------------- Data page


def test_data_page_shows_the_verdict_and_readable_sizes(site, page):
    from playwright.sync_api import expect

    ws, server = site
    page.goto(server.url + "#/data?files=data/bad.jsonl")
    page.wait_for_selector("#data-files label")
    size = (ws / "data" / "train.jsonl").stat().st_size
    assert 100 <= size < 100 * 1024
    expect(page.locator('#data-files label[data-path="data/train.jsonl"] .file-size')).to_have_text(
        f" {size / 1024:.1f} KiB"
    )
    expect(page.locator('#data-files label[data-path="data/bad.jsonl"] .file-size')).to_have_text(
        f" {(ws / 'data' / 'bad.jsonl').stat().st_size} B")  # under 100 bytes: bytes
    for text in page.locator("#data-files .file-size").all_text_contents():
        assert re.fullmatch(r" (\d+ B|\d+(\.\d)? KiB)", text), text
    page.click("#check")
    page.wait_for_selector("#verdict", timeout=SLOW)
    expect(page.locator("#check-job .job-status .badge")).to_have_text("FAIL")
    expect(page.locator("#check-job .job-status .badge")).to_have_class(re.compile(r"status-failed"))
    expect(page.locator("#check-job")).not_to_contain_text("finished")
