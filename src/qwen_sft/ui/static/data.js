// The data pages: #/data (files, upload, the check and its report, rows, search) and #/data/row (one row as the
// model sees it: token by token, trained tokens marked, the served prompt of its last reply beside it).
// Every row is read and encoded by the server with the training code; this page only draws what it is given.
"use strict";

const ENCODING_KEYS = ["tokenizer", "cutoff_len", "enable_thinking", "train_on"];

function encodingQuery(settings) {
  return ENCODING_KEYS.filter((k) => settings[k] !== undefined && settings[k] !== "")
    .map((k) => `${k}=${encodeURIComponent(settings[k])}`).join("&");
}

function rowLink(file, settings, where, index) {
  const at = where !== undefined ? `where=${encodeURIComponent(where)}` : `index=${index}`;
  return `#/data/row?file=${encodeURIComponent(file)}&${at}&${encodingQuery(settings)}`;
}

// "data/a.jsonl:12: output: empty" -> ["data/a.jsonl", "12"] when the text starts with one of `files`
// (a JSONL / CSV line, "item N" of a JSON array, "row N" of a Parquet / Arrow file).
function problemPlace(problem, files) {
  const file = files.filter((f) => problem.startsWith(`${f}:`)).sort((a, b) => b.length - a.length)[0];
  if (!file) return null;
  const label = problem.slice(file.length + 1).split(":")[0].trim();
  return /^((item|row) )?\d+$/.test(label) ? [file, label] : null;
}

function selectOf(id, options, value) {
  const el = h("select", {id}, options.map(([v, t]) => h("option", {value: v}, t)));
  if (value !== undefined && value !== null) el.value = String(value);
  return el;
}

// ---------------------------------------------------------------- #/data

async function dataPage(params) {
  const meta = await api("/api/data/files");
  const d = meta.defaults;
  const settings = {tokenizer: params.get("tokenizer") || meta.tokenizers[0].id,
    cutoff_len: params.get("cutoff_len") || String(d.cutoff_len), enable_thinking: params.get("enable_thinking") || "auto",
    train_on: params.get("train_on") || d.train_on};
  const chosen = new Set((params.get("files") || "").split(",").filter(Boolean));
  const fileList = h("div", {id: "data-files", class: "file-list"});
  const tokenizer = selectOf("tokenizer", meta.tokenizers.map((t) => [t.id, t.label]), settings.tokenizer);
  const cutoff = h("input", {type: "text", id: "cutoff_len", value: settings.cutoff_len, size: 7});
  const thinking = selectOf("enable_thinking", meta.choices.enable_thinking.map((v) => [v, v]), settings.enable_thinking);
  const trainOn = selectOf("train_on", meta.choices.train_on.map((v) => [v, v]), settings.train_on);
  const skip = selectOf("skip_invalid", [["false", "false"], ["true", "true"]], String(d.skip_invalid));
  const limits = ["max_dropped_share", "max_truncated_share", "max_duplicate_share", "max_no_reasoning_share"]
    .map((k) => [k, h("input", {type: "text", id: k, value: String(d[k]), size: 5})]);
  const settingsErrors = h("ul", {id: "settings-errors", class: "errors"});
  const checkBtn = h("button", {class: "primary", id: "check"}, "Check");
  const checkJob = jobView("check");
  const results = h("div", {id: "check-results"});
  const uploadFile = h("input", {type: "file", id: "upload-file", accept: meta.suffixes.join(",")});
  const uploadDir = h("input", {type: "text", id: "upload-dir", value: "data", size: 10});
  const uploadBtn = h("button", {id: "upload"}, "Upload");
  const browser = h("div", {class: "card", id: "rows-browser"});

  page().append(
    h("div", {class: "toolbar"}, h("h1", {}, "Data"), h("span", {class: "grow"}),
      h("label", {for: "upload-file"}, "upload into "), uploadDir, uploadFile, uploadBtn),
    h("div", {class: "columns"},
      h("div", {class: "card grow"}, h("h3", {}, "Files in the workspace"), fileList),
      h("div", {class: "card"}, h("h3", {}, "Encode as"),
        h("div", {class: "form-grid"},
          h("label", {for: "tokenizer"}, "tokenizer / template"), tokenizer,
          h("label", {for: "cutoff_len"}, "cutoff_len"), cutoff,
          h("label", {for: "enable_thinking"}, "enable_thinking"), thinking,
          h("label", {for: "train_on"}, "train_on"), trainOn,
          h("label", {for: "skip_invalid"}, "skip_invalid"), skip),
        h("details", {}, h("summary", {}, "thresholds"),
          h("div", {class: "form-grid"}, limits.map(([k, el]) => [h("label", {for: k}, k), el]))),
        settingsErrors, h("div", {class: "actions"}, checkBtn))),
    checkJob.el, results, browser);

  function current() {
    return {tokenizer: tokenizer.value, cutoff_len: cutoff.value.trim(), enable_thinking: thinking.value, train_on: trainOn.value};
  }
  function remember() {  // the address holds the choices: a reload or a link comes back to them
    const q = `files=${[...chosen].map(encodeURIComponent).join(",")}&${encodingQuery(current())}`;
    history.replaceState(null, "", `#/data?${q}`);
  }
  function drawFiles(files) {
    fileList.replaceChildren(...(files.length ? files.map((f) => h("label", {class: "pick-file", dataset: {path: f.path}},
      h("input", {type: "checkbox", checked: chosen.has(f.path), onchange: (e) => {
        if (e.target.checked) chosen.add(f.path); else chosen.delete(f.path);
        remember();
        browse.refill();
      }}), h("code", {}, f.path), h("span", {class: "sub file-size"}, ` ${sizeText(f.bytes)}`)))
      : [h("p", {class: "empty"}, `No data files (${meta.suffixes.join(", ")}) in the workspace yet: upload one.`)]));
  }
  drawFiles(meta.files);
  for (const el of [tokenizer, cutoff, thinking, trainOn]) el.addEventListener("change", () => { remember(); browse.load(); });

  uploadBtn.addEventListener("click", async () => {
    const file = uploadFile.files[0];
    if (!file) return toast("choose a file first", "bad");
    const res = await fetch(`/api/data/upload?dir=${encodeURIComponent(uploadDir.value)}&name=${encodeURIComponent(file.name)}`,
      {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/octet-stream"}, body: file});
    const body = await res.json().catch(() => ({}));
    if (!res.ok) return toast(body.error || `HTTP ${res.status}`, "bad");
    toast(`uploaded ${body.path}`);
    chosen.add(body.path);
    remember();
    drawFiles((await api("/api/data/files")).files);
    browse.refill();
  });

  checkBtn.addEventListener("click", async () => {
    settingsErrors.replaceChildren();
    results.replaceChildren();
    const values = {cutoff_len: cutoff.value.trim(), enable_thinking: thinking.value, train_on: trainOn.value,
      skip_invalid: skip.value};
    for (const [k, el] of limits) values[k] = el.value.trim();
    try {
      const job = await api("/api/data/check", {files: [...chosen], tokenizer: tokenizer.value, values});
      checkBtn.disabled = true;
      watchJob(job, checkJob, (done) => {
        checkBtn.disabled = false;
        if (!done.result) return;
        const r = done.result;
        checkJob.verdict(!r.report ? "unreadable" : (r.failed || []).length ? "FAIL" : "PASS", !r.report || (r.failed || []).length ? "failed" : "finished");
        showReport(r, [...chosen]);
      });
    } catch (e) {
      const lines = Object.values(e.fields || {}).flat();
      settingsErrors.replaceChildren(...(lines.length ? lines : [e.message]).map((t) => h("li", {}, t)));
    }
  });

  function showReport(res, files) {
    const settings = current();
    const link = (text) => {
      const place = problemPlace(text, files);
      return place ? h("a", {class: "problem", href: rowLink(place[0], settings, place[1])}, text) : h("span", {}, text);
    };
    const r = res.report;
    const failed = res.failed || [];
    results.append(h("div", {id: "verdict", class: `banner ${failed.length || !r ? "bad" : "good"}`},
      !r ? "the files cannot be read (see the problems)" : failed.length ? h("ul", {class: "plain"}, failed.map((f) => h("li", {}, `FAIL: ${f}`)))
        : "passes every threshold: this data would train"));
    if (res.problems.length) {
      results.append(h("div", {class: "card"}, h("h3", {}, `Problems (${res.problems.length})`),
        h("ul", {id: "problems", class: "problems"}, res.problems.map((p) => h("li", {}, link(p))))));
    }
    if (!r) return;
    const stat = (label, value, id) => h("div", {class: "stat"}, h("label", {}, label), h("b", {id}, String(value)));
    const pct = (n) => `${n} (${(100 * n / Math.max(r.rows_read, 1)).toFixed(1)}%)`;
    results.append(h("div", {class: "card", id: "report"}, h("h3", {}, "Data report"),
      h("div", {class: "stats"},
        stat("rows read", r.rows_read, "stat-read"), stat("kept", r.rows_kept, "stat-kept"),
        stat("dropped: invalid", pct(r.invalid_rows), "stat-invalid"),
        stat("dropped: nothing trained within cutoff_len", pct(r.dropped_no_trained_tokens), "stat-no-trained"),
        stat("truncated", pct(r.rows_truncated), "stat-truncated"), stat("reply cut", pct(r.rows_reply_cut), "stat-reply-cut"),
        stat("exact duplicates", pct(r.duplicate_rows), "stat-duplicates"),
        stat("trained tokens", `${r.trained_tokens} of ${r.tokens} (${(100 * r.trained_token_share).toFixed(1)}%)`, "stat-trained"),
        stat("template", `${r.template_kind}, thinking ${r.enable_thinking}`, "stat-template")),
      h("h3", {}, `Length (tokens per row) against cutoff_len ${res.histogram.cutoff_len}`), histogramSvg(res.histogram),
      r.dropped_examples.length ? h("div", {}, h("h3", {}, `Dropped: no trained token within cutoff_len (first ${r.dropped_examples.length})`),
        h("ul", {id: "dropped", class: "problems"}, r.dropped_examples.map((p) => h("li", {}, link(p))))) : null,
      h("details", {}, h("summary", {}, "as `qwen-sft check` prints it"), h("pre", {class: "code", id: "report-text"}, res.report_text))));
  }

  const browse = rowsBrowser(browser, () => current(), () => [...chosen], meta.files, params.get("file"));
  remember();
}

// Bars of rows per length bin over [0, top]; top is cutoff_len (its bin holds the truncated rows, marked), or the
// longest row when all are far below it.
function histogramSvg(hist) {
  const W = 640, H = 150, pad = 28, n = hist.counts.length, top = Math.max(...hist.counts, 1);
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H + pad}`, class: "histogram", id: "length-histogram", "data-bins": n});
  const bw = (W - 2 * pad) / n;
  hist.counts.forEach((c, i) => {
    const bh = (H - 10) * c / top;
    const last = i === n - 1 && hist.at_cutoff > 0;
    const rect = svgEl("rect", {x: pad + i * bw + 1, y: H - bh, width: Math.max(bw - 2, 1), height: bh,
      class: last ? "bar cut" : "bar", "data-count": c});
    const t = svgEl("title", {});
    t.textContent = `${i * hist.width + 1}-${Math.min((i + 1) * hist.width, hist.top)} tokens: ${c} rows`
      + (last ? ` (${hist.at_cutoff} cut at cutoff_len)` : "");
    rect.append(t);
    svg.append(rect);
  });
  const x = W - pad, atCutoff = hist.top === hist.cutoff_len;
  if (atCutoff) svg.append(svgEl("line", {x1: x, x2: x, y1: 0, y2: H, class: "cutoff-line"}));
  const right = atCutoff ? `cutoff_len ${hist.cutoff_len}` : `${hist.top} tokens (cutoff_len ${hist.cutoff_len} is further right)`;
  for (const [tx, label, anchor] of [[pad, "0", "start"], [x, right, "end"]]) {
    const t = svgEl("text", {x: tx, y: H + 16, "text-anchor": anchor});
    t.textContent = label;
    svg.append(t);
  }
  return svg;
}

// The rows of one file, a page at a time, with a search; `settings()` gives the encoding choices.
function rowsBrowser(box, settings, chosen, files, initial) {
  const PAGE = 50;
  let file = initial || chosen()[0] || (files[0] && files[0].path), start = 0, total = 0, search = null;
  const fileSel = h("select", {id: "browse-file"});
  const table = h("table", {class: "runs", id: "rows-table"});
  const info = h("span", {class: "sub", id: "rows-info"});
  const prev = h("button", {id: "prev-page"}, "◀"), next = h("button", {id: "next-page"}, "▶");
  const query = h("input", {type: "text", id: "search", placeholder: "search rows for text"});
  const go = h("button", {id: "search-go"}, "Search"), stop = h("button", {id: "search-stop", hidden: true}, "Cancel");
  const found = h("ul", {id: "search-results", class: "problems"});
  const status = h("span", {class: "sub", id: "search-status"});
  box.append(h("div", {class: "toolbar"}, h("h3", {}, "Rows"), fileSel, prev, next, info, h("span", {class: "grow"}), query, go, stop),
    status, found, table);
  prev.addEventListener("click", () => { start = Math.max(0, start - PAGE); load(); });
  next.addEventListener("click", () => { if (start + PAGE < total) { start += PAGE; load(); } });
  fileSel.addEventListener("change", () => { file = fileSel.value; start = 0; endSearch(); found.replaceChildren(); load(); });
  query.addEventListener("keydown", (e) => { if (e.key === "Enter") go.click(); });
  go.addEventListener("click", () => {
    endSearch();
    found.replaceChildren();
    if (!query.value.trim()) return;
    let n = 0;
    search = new EventSource(`/api/data/search?file=${encodeURIComponent(file)}&q=${encodeURIComponent(query.value)}`);
    stop.hidden = false;
    search.addEventListener("found", (e) => {
      for (const [index, where, snip] of JSON.parse(e.data)) {
        n += 1;
        if (n <= 500) found.append(h("li", {}, h("a", {href: rowLink(file, settings(), undefined, index)}, where), " ", h("span", {class: "sub"}, snip)));
      }
    });
    search.addEventListener("progress", (e) => { const p = JSON.parse(e.data); status.textContent = `searching: ${p.scanned} of ${p.total} rows, ${n} found`; });
    search.addEventListener("done", (e) => { const p = JSON.parse(e.data); status.textContent = `${p.matches} row(s) of ${p.total} hold "${query.value}"` + (p.matches > 500 ? " (the first 500 listed)" : ""); endSearch(); });
    search.onerror = () => { status.textContent = "search failed"; endSearch(); };
  });
  stop.addEventListener("click", () => { status.textContent += " (cancelled)"; endSearch(); });
  function endSearch() { if (search) search.close(); search = null; stop.hidden = true; }
  onLeave(endSearch);

  async function load() {
    if (!file) { table.replaceChildren(); info.textContent = ""; return; }
    const s = settings();
    table.dataset.loading = "1";
    let res;
    try {
      res = await api(`/api/data/rows?file=${encodeURIComponent(file)}&start=${start}&count=${PAGE}&${encodingQuery(s)}`);
    } catch (e) {
      table.replaceChildren(h("tr", {}, h("td", {class: "error-line", id: "rows-error"}, e.message)));
      delete table.dataset.loading;
      return;
    }
    total = res.total;
    info.textContent = `rows ${total ? start + 1 : 0}–${Math.min(start + PAGE, total)} of ${total}`;
    table.replaceChildren(h("thead", {}, h("tr", {}, ["row", "format", "first question", "tokens", "trained", "", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, res.rows.map((r) => h("tr", {dataset: {where: r.where}, class: r.ok ? "" : "bad-row"},
        h("td", {}, h("a", {href: rowLink(file, s, undefined, r.index)}, r.where.slice(file.length + 1))),
        h("td", {}, r.format || "–"), h("td", {class: "preview"}, r.ok ? r.preview : h("span", {class: "error-line"}, r.error)),
        h("td", {class: "num"}, r.ok ? r.tokens : "–"), h("td", {class: "num"}, r.ok ? r.trained : "–"),
        h("td", {class: "sub"}, [r.truncated ? "truncated" : "", r.reply_cut ? "reply cut" : "", r.thinking ? "thinking" : ""].filter(Boolean).join(", ")),
        h("td", {}, "")))));
    delete table.dataset.loading;
  }
  function refill() {
    const names = [...new Set([...chosen(), ...files.map((f) => f.path)])];
    fileSel.replaceChildren(...names.map((n) => h("option", {value: n}, n)));
    if (!names.includes(file)) file = names[0];
    if (file) fileSel.value = file;
    load();
  }
  refill();
  return {load, refill};
}

// ---------------------------------------------------------------- #/data/row

async function rowPage(params) {
  delete page().dataset.rendered;  // set again once this row is drawn (tests and screenshots wait for it)
  const file = params.get("file");
  const settings = {};
  for (const k of ENCODING_KEYS) if (params.get(k)) settings[k] = params.get(k);
  const meta = await api("/api/data/files");
  const tokenizer = selectOf("row-tokenizer", meta.tokenizers.map((t) => [t.id, t.label]), settings.tokenizer || meta.tokenizers[0].id);
  const thinking = selectOf("row-thinking", meta.choices.enable_thinking.map((v) => [v, `enable_thinking ${v}`]), settings.enable_thinking || "auto");
  const trainOn = selectOf("row-train-on", meta.choices.train_on.map((v) => [v, `train_on ${v}`]), settings.train_on || "all");
  const cutoff = h("input", {type: "text", id: "row-cutoff", size: 7, value: settings.cutoff_len || String(meta.defaults.cutoff_len)});
  const title = h("h1", {id: "row-title"}, file);
  const prev = h("button", {id: "prev-row"}, "◀ row"), next = h("button", {id: "next-row"}, "row ▶");
  const banner = h("div", {class: "banner bad", id: "row-error", hidden: true});
  const stats = h("div", {class: "stats", id: "row-stats"});
  const tokens = h("div", {class: "tokens", id: "row-tokens"});
  const served = h("div", {class: "tokens", id: "served-tokens"});
  const servedNote = h("p", {class: "sub", id: "served-note"});
  const messages = h("div", {id: "row-messages"});
  const rawHead = h("h3", {}, "The row as read");
  const encodedView = h("div", {id: "row-encoded"},
    h("div", {class: "legend"}, h("span", {class: "tok trained"}, "trained"), h("span", {class: "tok"}, "prompt (not trained)"),
      h("span", {class: "tok added"}, "special token"), h("span", {class: "tok think"}, "think block"),
      h("span", {class: "sub"}, "hover a token for its id")),
    h("div", {class: "columns"},
      h("div", {class: "card grow"}, h("h3", {}, "As trained"), tokens),
      h("div", {class: "card side"}, h("h3", {}, "Served prompt of the last reply"), servedNote, served)));
  const back = h("a", {href: `#/data?files=${encodeURIComponent(file)}&file=${encodeURIComponent(file)}&${encodingQuery(settings)}`}, "← rows");
  page().append(
    h("div", {class: "toolbar"}, back, title, prev, next, h("span", {class: "grow"}), tokenizer, thinking, trainOn,
      h("label", {for: "row-cutoff"}, "cutoff_len"), cutoff),
    banner, stats,
    encodedView,
    h("div", {class: "card"}, rawHead, messages));

  const go = (index) => {  // another row (index), or this one with other settings
    const q = new URLSearchParams({file});
    if (index !== undefined) q.set("index", index);
    else if (params.get("where")) q.set("where", params.get("where"));
    else q.set("index", params.get("index") || "0");
    const s = {tokenizer: tokenizer.value, enable_thinking: thinking.value, train_on: trainOn.value, cutoff_len: cutoff.value.trim()};
    location.hash = `#/data/row?${q.toString()}&${encodingQuery(s)}`;
  };
  for (const el of [tokenizer, thinking, trainOn, cutoff]) el.addEventListener("change", () => go());

  const at = params.get("where") ? `where=${encodeURIComponent(params.get("where"))}` : `index=${params.get("index") || 0}`;
  let row;
  try {
    row = await api(`/api/data/row?file=${encodeURIComponent(file)}&${at}&${encodingQuery(settings)}`);
  } catch (e) {
    banner.hidden = false;
    banner.textContent = e.message;
    page().dataset.rendered = "error";
    return;
  }
  title.textContent = row.where;
  prev.disabled = row.index === 0;
  next.disabled = row.index >= row.total - 1;
  prev.addEventListener("click", () => go(row.index - 1));
  next.addEventListener("click", () => go(row.index + 1));
  if (!row.ok) {  // not trained: its text as read, and what is wrong with it (no empty token cards)
    banner.hidden = false;
    banner.textContent = row.error;
    encodedView.hidden = true;
    rawHead.textContent = `The ${/^\d+$/.test(row.where.slice(file.length + 1)) ? "line" : "row"} as read (${row.where})`;
    messages.replaceChildren(row.raw === undefined || row.raw === null ? h("p", {class: "sub"}, "(not available)")
      : h("pre", {class: "code", id: "row-raw"}, row.raw === "" ? "(empty)" : row.raw));
    page().dataset.rendered = "error";
    return;
  }
  const stat = (label, value) => h("div", {class: "stat"}, h("label", {}, label), h("b", {}, String(value)));
  stats.replaceChildren(stat("tokens", row.tokens.length), stat("trained", row.trained), stat("format", row.format),
    stat("template", row.template_kind), stat("enable_thinking", row.enable_thinking), stat("train_on", row.train_on),
    stat("truncated", row.truncated ? `yes, at ${row.cutoff_len}${row.reply_cut ? " (reply cut)" : ""}` : "no"),
    stat("reasoning dropped", row.reasoning_dropped ? "yes" : "no"), stat("earlier replies in sequences of their own", row.extra_sequences));
  const added = new Set(row.added);
  tokens.replaceChildren(...tokenSpans(row.tokens, added), ...row.more.flatMap((seq, k) => [
    h("div", {class: "seq-break"}, `sequence ${k + 2} of ${row.more.length + 1}: an earlier reply, after its own served prompt`),
    ...tokenSpans(seq, added)]));
  served.replaceChildren(...tokenSpans(row.served.map(([i, t]) => [i, t, 0]), added));
  servedNote.textContent = row.served_is_prefix
    ? `${row.served.length} tokens: the row's first ${row.served.length} tokens are exactly this prompt; the last reply is trained from there.`
    : `${row.served.length} tokens: the row renders differently before its last reply (see the encoder's rule for history turns).`;
  messages.replaceChildren(...row.messages.map((m) => h("div", {class: `msg msg-${m.role}`},
    h("div", {class: "role"}, m.role + (m.weight === 0 ? " (weight 0: not trained)" : "")),
    m.reasoning_content ? h("details", {class: "think"}, h("summary", {}, "reasoning"), h("pre", {}, m.reasoning_content)) : null,
    h("pre", {}, m.content || (m.tool_calls ? JSON.stringify(m.tool_calls, null, 1) : "")))));
  page().dataset.rendered = row.where;
}

// One span per token: data-id, data-trained, its text with line breaks and the think block made visible.
function tokenSpans(list, added) {
  let inThink = false;
  return list.map(([id, text, trained]) => {
    if (text === "<think>") inThink = true;
    const cls = ["tok", trained ? "trained" : "", added.has(id) ? "added" : "", inThink ? "think" : "", text === "" ? "partial" : ""];
    if (text === "</think>") inThink = false;
    const shown = text.replace(/\n/g, "↵\n");
    return h("span", {class: cls.filter(Boolean).join(" "), "data-id": id, "data-trained": trained ? "1" : "0",
      title: `id ${id} · ${trained ? "trained" : "not trained"}${text === "" ? " · part of a character completed by the next token" : ""}`}, shown);
  });
}
