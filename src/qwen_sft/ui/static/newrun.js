// #/new: the start form. The few fields a first run needs come first (model and data picked from the workspace,
// epochs or steps, learning rate, rank, cutoff, batch, run name); TrainConfig's other fields are folded under
// "Advanced", by section. Every change is checked by the CLI's own validation (/api/configs/check); beside the
// resulting config, the plan (/api/plan: predicted peak memory against a card, and the time) when the server has it.
// #/new?base=CONFIG starts from that config; #/new?retry=RUN from the settings a failed run was launched with.
"use strict";

const ESSENTIAL = ["model_name_or_path", "dataset", "num_train_epochs", "max_steps", "learning_rate", "lora_rank",
  "cutoff_len", "per_device_train_batch_size", "run_name"];
// Card names offered for the plan (any name the plan knows may be typed, or a memory size instead).
const PLAN_CARDS = ["rtx3090", "rtx4090", "rtx5090", "l4", "l40s", "t4", "a100-40", "a100-80", "h100", "h200"];
const PLAN_WAIT_MS = 600;

async function newRunPage(params) {
  const retryOf = params.get("retry");
  const [{fields}, {bases}, {models}, dataMeta, retryRun] = await Promise.all([api("/api/configs/schema"),
    api("/api/configs/bases"), api("/api/models/list"), api("/api/data/files"),
    retryOf ? api(`/api/runs/detail?run=${encodeURIComponent(retryOf)}`).catch(() => null) : null]);
  const retry = retryRun && retryRun.retry;
  const initialBase = retry ? retry.base : params.get("base");
  let initial = {};      // the base config's values, as text
  const inputs = {};     // field name -> input element
  let timer = null, lastResult = null;
  const baseSelect = h("select", {id: "base", onchange: () => loadBase(baseSelect.value)},
    bases.map((b) => h("option", {value: b.id}, b.label)));
  const yaml = h("pre", {id: "yaml", class: "code"});
  const command = h("pre", {id: "command", class: "code"});
  const general = h("ul", {id: "general-errors", class: "errors"});
  const startBtn = h("button", {class: "primary", id: "start", onclick: () => start()}, "Start run");
  const confirmBox = h("div", {id: "confirm-overwrite", class: "banner bad", hidden: true});
  // A div, not a <form>: a form element's named controls shadow its own properties (an input named "dataset"!).
  const form = h("div", {id: "config-form", class: "config-form", role: "form"});
  const essentials = h("div", {class: "section card", id: "essentials"}, h("h3", {}, "What a first run needs"));
  const advancedCount = h("span", {class: "sub", id: "advanced-count"});
  const advanced = h("details", {id: "advanced", class: "advanced"},
    h("summary", {}, `Advanced: ${fields.length - ESSENTIAL.length} more fields `, advancedCount));
  const filter = h("input", {type: "text", id: "field-filter", placeholder: "find a field (name or help text)", oninput: () => {
    const q = filter.value.trim().toLowerCase();
    for (const el of form.querySelectorAll(".field")) el.hidden = Boolean(q) && !el.textContent.toLowerCase().includes(q);
    if (q) { advanced.open = true; for (const d of form.querySelectorAll("details.section")) d.open = true; }
  }});

  // Model and data: typed, or picked from what the workspace holds.
  const pickers = {
    model_name_or_path: [["", "workspace models…"]].concat(models.filter((m) => m.kind !== "adapter")
      .map((m) => [m.id, m.label])),
    dataset: [["", "workspace data…"]].concat(dataMeta.files.map((f) => [f.path, `${f.path} (${sizeText(f.bytes)})`])),
  };
  const sections = new Map(), essentialFields = {};
  for (const f of fields) {
    let input;
    if (f.kind === "choice" || f.kind === "bool") {
      input = h("select", {name: f.name, id: `f-${f.name}`}, f.choices.map((c) => h("option", {value: c}, c)));
    } else {
      input = h("input", {name: f.name, id: `f-${f.name}`, type: "text", spellcheck: "false", autocomplete: "off"});
    }
    input.disabled = f.locked;
    input.addEventListener("input", () => { markChanged(); scheduleCheck(); });
    inputs[f.name] = input;
    let control = input;
    if (pickers[f.name]) {
      const pick = h("select", {id: `pick-${f.name}`, class: "pick-from", "aria-label": `pick ${f.name}`},
        pickers[f.name].map(([v, t]) => h("option", {value: v}, t)));
      pick.addEventListener("change", () => {
        if (!pick.value) return;
        input.value = pick.value;
        pick.value = "";
        input.dispatchEvent(new Event("input"));
      });
      control = h("div", {class: "with-pick"}, input, pick);
    }
    const field = h("div", {class: "field", dataset: {field: f.name}},
      h("label", {for: `f-${f.name}`}, f.name), control,
      h("div", {class: "help"}, f.help + (f.locked ? " (locked: start the UI with --allow-remote-code to change it)" : "")),
      h("ul", {class: "errors field-errors"}));
    if (ESSENTIAL.includes(f.name)) { essentialFields[f.name] = field; continue; }
    if (!sections.has(f.section)) sections.set(f.section, h("details", {class: "section", open: true}, h("summary", {}, f.section)));
    sections.get(f.section).append(field);
  }
  essentials.append(...ESSENTIAL.filter((n) => essentialFields[n]).map((n) => essentialFields[n]));
  advanced.append(...sections.values());
  form.append(essentials, advanced);
  const plan = planPanel(() => ({base: baseSelect.value, values: changed()}));
  page().append(
    h("div", {class: "toolbar"}, h("h1", {}, "New run"), filter, h("span", {class: "grow"}),
      h("label", {for: "base"}, "start from "), baseSelect),
    ...(retry ? [h("div", {class: "banner info", id: "retry-note"}, `Retrying ${retryOf} with the settings it was launched with `,
      h("code", {}, retryRun.retry.base), Object.keys(retry.values).length ? ` + ${Object.keys(retry.values).length} changed field(s)` : "",
      ". Fix what made it fail, then start it.")] : []),
    h("div", {class: "columns"},
      h("div", {class: "col-form"}, form),
      h("div", {class: "col-side"},
        h("div", {class: "sticky"}, general, confirmBox,
          h("div", {class: "actions"}, h("button", {id: "check", onclick: () => check()}, "Check"), startBtn),
          plan.el, h("h3", {}, "Command"), command, h("h3", {}, "Resulting config"), yaml))));

  function changed() {
    const out = {};
    for (const [name, input] of Object.entries(inputs)) if (input.value !== initial[name]) out[name] = input.value;
    return out;
  }
  function markChanged() {
    let n = 0;
    for (const [name, input] of Object.entries(inputs)) {
      const isChanged = input.value !== initial[name];
      input.closest(".field").classList.toggle("changed", isChanged);
      if (isChanged && !ESSENTIAL.includes(name)) n += 1;
    }
    advancedCount.textContent = n ? `(${n} changed)` : "";
  }
  function scheduleCheck() { clearTimeout(timer); timer = setTimeout(check, 400); }
  function showResult(result) {
    lastResult = result;
    confirmBox.hidden = true;
    for (const el of form.querySelectorAll(".field")) {
      const errs = (result.errors || {})[el.dataset.field] || [];
      el.classList.toggle("invalid", errs.length > 0);
      if (errs.length) { const d = el.closest("details.section"); if (d) { d.open = true; advanced.open = true; } }
      el.querySelector(".field-errors").replaceChildren(...errs.map((e) => h("li", {}, e)));
    }
    general.replaceChildren(...(result.general || []).map((e) => h("li", {}, e)));
    if (result.command) command.textContent = result.command;
    yaml.textContent = result.yaml || "";
    startBtn.disabled = !result.ok;
    if (result.ok) plan.update(); else plan.invalid();
  }
  let checks = 0, loads = 0;  // answers that come back after a newer request was sent are dropped
  async function check() {
    clearTimeout(timer);
    const mine = ++checks;
    let result;
    try {
      result = await api("/api/configs/check", {base: baseSelect.value, values: changed()});
    } catch (e) { result = {general: [e.message]}; }
    if (mine === checks) showResult(result);
    return result;
  }
  async function loadBase(base, values) {
    const mine = ++loads;
    form.removeAttribute("data-loaded");
    const result = await api("/api/configs/check", {base, values: {}}).catch((e) => ({general: [e.message]}));
    if (mine !== loads) return null;
    initial = result.values || {};
    for (const [name, input] of Object.entries(inputs)) input.value = initial[name] !== undefined ? initial[name] : "";
    const kind = (bases.find((b) => b.id === base) || {}).kind;
    if (values) {  // a retry: the launch's own changes on top of its base
      for (const [name, value] of Object.entries(values)) if (inputs[name]) inputs[name].value = value;
    } else if (kind === "run" && initial.run_name !== undefined) {  // a new run from a run's config: a new name, no resume
      inputs.run_name.value = `${initial.run_name}-2`;
      inputs.resume_from_checkpoint.value = "null";
    }
    markChanged();
    form.dataset.loaded = base;
    return check();
  }
  async function start(confirmed) {
    const overwrite = lastResult && lastResult.values && lastResult.values.overwrite_output_dir === "true";
    if (overwrite && !confirmed) {  // #23 item 5: an earlier run's files in that directory are replaced
      confirmBox.replaceChildren(
        h("p", {}, h("b", {}, "overwrite_output_dir is on. "), "The run starts afresh in ", h("code", {}, lastResult.run_dir || "its run directory"),
          ": whatever an earlier run left there (checkpoints, the adapter, a merged model, eval results, logs) is replaced."),
        h("div", {class: "actions"}, h("button", {class: "danger", id: "confirm-start", onclick: () => start(true)}, "Replace it and start"),
          h("button", {id: "confirm-cancel", onclick: () => { confirmBox.hidden = true; }}, "Cancel")));
      confirmBox.hidden = false;
      return;
    }
    confirmBox.hidden = true;
    startBtn.disabled = true;
    try {
      const res = await api("/api/runs/start", {base: baseSelect.value, values: changed()});
      location.hash = runLink(res.run);
    } catch (e) {
      showResult({errors: e.fields, general: Object.keys(e.fields).length ? [] : [e.message], command: command.textContent,
        yaml: yaml.textContent});
      toast(e.message, "bad");
    }
  }
  if (initialBase && !bases.some((b) => b.id === initialBase)) baseSelect.prepend(h("option", {value: initialBase}, initialBase));
  baseSelect.value = initialBase || (bases[0] && bases[0].id) || "";
  if (baseSelect.value) loadBase(baseSelect.value, retry ? retry.values : null);
}

// The plan beside the resulting config: POST /api/plan with the form's body, a card and/or a memory size; shows the
// predicted peak against the card's memory, the time, the breakdown and the changes that would fit. Hidden for good
// when the server has no plan (404).
// A breakdown key in the words `qwen-sft plan` prints (the server sends them: plan/report.py LABELS), why on hover.
function planPart(p, key) {
  const [label, why] = (p.breakdown_labels || {})[key] || [key.replace(/_gib$/, "").replace(/_/g, " "), ""];
  return h("td", why ? {title: why} : {}, label);
}

function planPanel(body) {
  const gpu = h("input", {type: "text", id: "plan-gpu", list: "plan-cards", size: 10, placeholder: "card"});
  const memory = h("input", {type: "text", id: "plan-memory", size: 5, placeholder: "GiB"});
  const out = h("div", {id: "plan-body"});
  const el = h("div", {class: "card", id: "plan", hidden: true},
    h("div", {class: "toolbar"}, h("h3", {}, "Plan"), h("span", {class: "grow"}), h("label", {for: "plan-gpu"}, "GPU "), gpu,
      h("datalist", {id: "plan-cards"}, PLAN_CARDS.map((c) => h("option", {value: c}))),
      h("label", {for: "plan-memory"}, " or memory "), memory),
    out);
  let available = true, asked = 0, timer = null;
  for (const input of [gpu, memory]) input.addEventListener("input", () => update());

  function update() {
    if (!available) return;
    clearTimeout(timer);
    timer = setTimeout(ask, PLAN_WAIT_MS);
  }
  async function ask() {
    const mine = ++asked;
    const req = body();
    if (gpu.value.trim()) req.gpu = gpu.value.trim();
    else if (memory.value.trim()) req.memory = Number(memory.value.trim());  // a card or its memory, not both
    el.dataset.state = "asking";
    let res;
    try {
      res = await api("/api/plan", req);
    } catch (e) {
      if (mine !== asked) return;
      if (e.status === 404) { available = false; el.hidden = true; el.dataset.state = "absent"; return; }
      el.hidden = false;
      el.dataset.state = "error";
      out.replaceChildren(h("div", {class: "error-line", id: "plan-error"}, e.message));
      return;
    }
    if (mine !== asked) return;
    el.hidden = false;
    show(res);
    el.dataset.state = "shown";
  }
  function show(p) {
    const card = p.card || {};
    const total = card.memory_gib ?? card.memory;
    const share = total ? Math.min(p.peak_gib / total, 1) : 0;
    const bar = h("div", {class: "progress plan-bar"}, h("div", {class: `progress-bar ${p.fits ? "" : "over"}`, dataset: {share: share.toFixed(3)}}),
      h("span", {class: "progress-text"}, total ? `${gib(p.peak_gib)} of ${gib(total)}` : gib(p.peak_gib)));
    const breakdown = Object.entries(p.breakdown || {});
    const suggestions = p.suggestions || [];
    out.replaceChildren(...[
      h("div", {class: "plan-verdict"}, h("span", {class: `badge ${p.fits ? "status-finished" : "status-failed"}`, id: "plan-fits"},
        p.fits ? "fits" : "does not fit"), " ",
        h("span", {id: "plan-peak"}, `predicted peak ${gib(p.peak_gib)}`), card.name ? h("span", {id: "plan-card"}, ` on ${card.label || card.name}${total ? ` (${gib(total)})` : ""}`) : null),
      bar,
      h("div", {class: "plan-time", id: "plan-time"}, `time ${duration(p.wall_s)}`,
        p.tokens_per_s ? ` at about ${fmt(p.tokens_per_s)} tokens/s` : "", p.steps ? `, ${p.steps} steps` : ""),
      breakdown.length ? h("details", {id: "plan-breakdown"}, h("summary", {}, "breakdown"),
        h("table", {class: "plain-table"}, h("tbody", {}, breakdown.map(([k, v]) =>
          h("tr", {}, planPart(p, k), h("td", {class: "num"}, typeof v === "number" ? gib(v) : String(v))))))) : null,
      suggestions.length ? h("div", {}, h("h3", {}, p.fits ? "Other settings" : "Changes that would fit"),
        h("ul", {id: "plan-suggestions", class: "plain"}, suggestions.map((s) => h("li", {}, suggestionText(s))))) : null].filter(Boolean));
    paintBars(out);
  }
  return {el, update, invalid() { clearTimeout(timer); if (!el.hidden) el.dataset.state = "stale"; }};
}

const gib = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} GiB`);

function suggestionText(s) {
  if (typeof s === "string") return s;
  // The server's: {change: {key: value}, gpus?, peak_gib, fits, why}.
  const change = s.change && typeof s.change === "object" ? Object.entries(s.change).map(([k, v]) => `${k}=${v}`)
    .concat(s.gpus ? [`on ${s.gpus} GPUs`] : []).join(" ") : s.change;
  const what = change || s.text || s.description || Object.entries(s.set || s.values || {}).map(([k, v]) => `${k}=${v}`).join(" ") || JSON.stringify(s);
  return s.peak_gib !== undefined ? `${what}: peak ${gib(s.peak_gib)}` : what;
}
