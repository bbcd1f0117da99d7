"""`qwen-sft ui` in headless Chromium (Debian's, driven by Playwright) on the tiny model: what a person sees and clicks.

Runs are slowed by QWEN_SFT_DEBUG_STEP_DELAY so that they can be watched, reloaded and stopped mid-run.
QWEN_SFT_UI_SCREENSHOTS=DIR saves the screenshots of docs/ui.md there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.ui.conftest import end_leftover_trainers, UIServer, make_workspace

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not

SHOTS = os.environ.get("QWEN_SFT_UI_SCREENSHOTS")
RUN_S = 240_000  # ms: the longest wait for a trainer to start and reach a state on 2 busy cores


@pytest.fixture
def ui(tmp_path):
    ws = make_workspace(tmp_path / "ws", with_model=True)
    (ws / "data" / "bad.jsonl").write_text(json.dumps({"instruction": "q", "output": ""}) + "\n")
    server = UIServer(ws, {"QWEN_SFT_DEBUG_STEP_DELAY": "0.5"})
    yield ws, server
    server.stop()
    end_leftover_trainers(ws)



def shot(page, name):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"ui-{name}.png"))


def status_is(page, status, timeout=RUN_S):
    page.wait_for_selector(f'#run-status [data-status="{status}"]', timeout=timeout)


def points(page, series="train loss") -> int:
    return int(page.get_attribute(f'path[data-series="{series}"]', "data-n") or 0)


def wait_points(page, at_least, series="train loss", timeout=RUN_S):
    page.wait_for_function("([s, n]) => { const p = document.querySelector(`path[data-series=\"${s}\"]`);"
                           " return p && Number(p.dataset.n) >= n; }", arg=[series, at_least], timeout=timeout)


def fill_form(page, base, values):
    from playwright.sync_api import expect

    page.wait_for_selector("#config-form[data-loaded]")  # the first base is loaded
    if page.input_value("#base") != base:
        page.select_option("#base", base)
    page.wait_for_selector(f'#config-form[data-loaded="{base}"]')
    for name, value in values.items():
        page.fill(f"#f-{name}", value)
    page.click("#check")
    for name, value in values.items():
        expect(page.locator("#command")).to_contain_text(f" {name}={value}")


def test_start_watch_reload_stop_resume_then_compare(ui, page, browser):
    from playwright.sync_api import expect

    ws, server = ui
    page.goto(server.url + "#/new")
    fill_form(page, "sft/configs/tiny.yaml", {"run_name": "a", "max_steps": "20"})
    expect(page.locator("#start")).to_be_enabled()
    expect(page.locator("#command")).to_have_text("qwen-sft train sft/configs/tiny.yaml max_steps=20 run_name=a")
    shot(page, "new-run")
    page.click("#start")
    page.wait_for_url("**#/run/runs/a")

    # The curve grows while the run goes on.
    wait_points(page, 2)
    seen = points(page)
    wait_points(page, seen + 1)
    status_is(page, "running", timeout=1000)
    assert page.text_content("#run-title") == "a"

    # A reload reattaches to the same run, curve and all.
    before = points(page)
    page.reload()
    status_is(page, "running", timeout=10_000)
    wait_points(page, before)
    shot(page, "watch")

    # Stop: the trainer saves a checkpoint at the next step boundary, the page names it.
    page.click("#stop")
    status_is(page, "stopped")
    expect(page.locator("#checkpoint-line")).to_contain_text("runs/a/checkpoint-")
    stopped_at = points(page)
    assert 2 <= stopped_at < 20
    expect(page.locator("#checkpoints")).to_contain_text(f"runs/a/checkpoint-{stopped_at}")
    expect(page.locator("#stop")).to_be_hidden()

    # Meanwhile, a second run from this run's config (another learning rate), in another tab.
    other = browser.new_page(viewport={"width": 1400, "height": 900})
    other.goto(server.url + "#/run/runs/a")
    other.click("#new-from")
    other.wait_for_selector('#config-form[data-loaded="runs/a/config.yaml"]')
    expect(other.locator("#f-run_name")).to_have_value("a-2")
    other.fill("#f-learning_rate", "0.0003")
    other.fill("#f-max_steps", "6")
    expect(other.locator("#command")).to_contain_text("run_name=a-2")
    other.click("#start")
    other.wait_for_url("**#/run/runs/a-2")

    # Resume: one click, it continues from the checkpoint and finishes.
    page.click("#resume")
    status_is(page, "finished")
    assert points(page) == 20  # every step once: the resumed session continues the curve
    expect(page.locator("#log")).to_contain_text(f"resumed from runs/a/checkpoint-{stopped_at} at step {stopped_at}")
    status_is(other, "finished")
    other.close()

    # The chart's smoothing slider and hover read-out.
    page.fill("#smoothing", "0")
    assert page.locator(".chart-raw").count() == 0  # no smoothing: only the raw lines
    page.fill("#smoothing", "0.9")
    assert page.locator(".chart-raw").count() == 2  # smoothed loss and tokens/s, each over its faint raw line
    page.locator(".chart-svg").first.hover()  # the loss chart
    expect(page.locator(".chart-tip").first).to_contain_text("train loss: ")

    # Compare the two, as a person does: tick them in the runs table.
    page.goto(server.url + "#/runs")
    for run in ("runs/a", "runs/a-2"):
        row = page.locator(f'tr[data-run="{run}"]')
        expect(row.locator(".badge")).to_have_text("finished")
        row.locator("input[type=checkbox]").check()
    shot(page, "runs")
    page.click("#compare-selected")
    page.wait_for_selector('path[data-series="a-2"]')
    assert points(page, "a") == 20 and points(page, "a-2") == 6
    expect(page.locator('#config-diff tr[data-key="learning_rate"]')).to_contain_text("0.0003")
    expect(page.locator('#config-diff tr[data-key="max_steps"]')).to_contain_text("20")
    assert page.locator('#config-diff tr[data-key="lora_rank"]').count() == 0  # the same in both: not a difference
    page.select_option("#metric", "eval_loss")
    wait_points(page, 1, series="a-2")
    page.select_option("#metric", "loss")
    shot(page, "compare")


def test_form_refusals_and_a_failed_run_shows_its_error(ui, page):
    from playwright.sync_api import expect

    ws, server = ui
    page.goto(server.url + "#/new")
    fill_form(page, "sft/configs/tiny.yaml", {"dataset": "/etc/passwd", "lora_rank": "0"})
    expect(page.locator('.field[data-field="lora_rank"] .field-errors')).to_have_text("lora_rank: must be > 0, got 0")
    expect(page.locator("#start")).to_be_disabled()
    page.fill("#f-lora_rank", "4")
    page.click("#check")
    expect(page.locator('.field[data-field="dataset"] .field-errors')).to_contain_text("outside the workspace")
    expect(page.locator("#start")).to_be_disabled()
    expect(page.locator("#f-trust_remote_code")).to_be_disabled()

    page.fill("#f-dataset", "data/bad.jsonl")
    page.fill("#f-run_name", "bad")
    page.click("#check")
    expect(page.locator("#start")).to_be_enabled()
    page.click("#start")
    page.wait_for_url("**#/run/runs/bad")
    status_is(page, "failed")
    expect(page.locator("#error-line")).to_have_text("data/bad.jsonl:1: output: empty")  # as the config names it
    expect(page.locator("#banner")).not_to_contain_text("null")
    expect(page.locator("#new-from")).to_be_hidden()  # it failed before writing its config.yaml
    expect(page.locator("#resume")).to_be_hidden()  # and has no checkpoint
    expect(page.locator("#retry")).to_be_visible()  # but it may be retried with its launch's settings


def test_chart_axes_for_flat_tiny_and_huge_ranges(ui, page):
    """Any values a run may log draw a bounded set of ticks (a flat or nearly flat series once looped for ever)."""
    ws, server = ui
    page.goto(server.url + "#/runs")
    page.wait_for_selector("#runs-table")
    # [51.2, 51.20000000000001]: one tokens/s point and its smoothed value, 1 ulp apart: the old loop never ended
    cases = [[51.2, 51.20000000000001], [1, 1], [0.0009999999999999998, 0.001], [0.001, 0.001 + 1e-18],
             [30.5, 30.5000000001], [0, 0], [-2, -2], [1e-7, 3e-7], [1e9, 1e9 + 1], [29.8, 31.6]]
    for lo, hi in cases:
        ticks = page.evaluate("([lo, hi]) => window.niceTicks(lo, hi, 4, false)", [lo, hi])
        assert 2 <= len(ticks["ticks"]) <= 8, (lo, hi, ticks)
        assert ticks["lo"] <= lo and ticks["hi"] >= hi
    steps = page.evaluate("() => window.niceTicks(1, 1, 6, true).ticks")
    assert steps == [0, 1, 2]
    page.evaluate("""() => { const box = document.createElement('div'); document.body.append(box);
        new LineChart(box).set([{name: 'flat', points: [[1, 5e-4], [2, 5e-4 + 1e-19], [3, 5e-4]]}]); }""")
    assert page.locator('path[data-series="flat"]').get_attribute("data-n") == "3"
