// #/chat?left=MODEL&right=MODEL: two models side by side on the same prompts (say base vs tuned), streaming.
// Each model runs in a worker process the server starts and ends (/api/chat/load); a reply streams as
// server-sent events read from the answer to a POST. Thinking is shown folded; sampling starts from the model's
// generation_config.
"use strict";

async function chatPage(params) {
  const [{models}, state] = await Promise.all([api("/api/models/list"), api("/api/chat/state")]);
  const options = [["", "(none)"]].concat(models.map((m) => [m.id, `${m.label} [${m.kind}]`]));
  const firstAdapter = models.find((m) => m.kind === "adapter");
  const loaded = state.panes.map((p) => p.model);
  const pick = (side, fallback) => params.get(side) || (loaded.length === 2 ? loaded[side === "left" ? 0 : 1] : fallback) || "";
  const sides = {
    left: {select: selectOf("left-model", options, pick("left", firstAdapter && firstAdapter.base)), history: []},
    right: {select: selectOf("right-model", options, pick("right", firstAdapter && firstAdapter.id)), history: []},
  };
  const loadBtn = h("button", {class: "primary", id: "load"}, "Load");
  const unloadBtn = h("button", {id: "unload"}, "Unload (free memory)");
  const system = h("textarea", {id: "system", rows: 2, placeholder: "system prompt (optional)"});
  const thinking = selectOf("thinking", [["", "thinking: as trained"], ["true", "thinking on"], ["false", "thinking off"]], "");
  const greedy = h("input", {type: "checkbox", id: "greedy"});
  const num = (id, size) => h("input", {type: "text", id, size: size || 5});
  const temperature = num("temperature"), topP = num("top_p"), topK = num("top_k"), maxNew = num("max_new_tokens", 6);
  maxNew.value = "512";
  const source = h("span", {class: "sub", id: "sampling-source"});
  const prompt = h("textarea", {id: "prompt", rows: 3, placeholder: "ask both models the same thing (Enter sends, Shift+Enter: new line)"});
  const sendBtn = h("button", {class: "primary", id: "send"}, "Send");
  const stopBtn = h("button", {id: "stop-gen", hidden: true}, "Stop");
  const clearBtn = h("button", {id: "clear"}, "Clear");
  for (const [side, s] of Object.entries(sides)) {
    s.status = h("div", {class: "pane-status", id: `${side}-status`});
    s.log = h("div", {class: "chat-log", id: `${side}-chat`});
  }
  page().append(
    h("div", {class: "toolbar"}, h("h1", {}, "Chat"), h("span", {class: "grow"}), loadBtn, unloadBtn),
    h("div", {class: "card"}, h("div", {class: "chat-settings"}, system,
      h("div", {class: "form-row"}, thinking, h("label", {}, greedy, " greedy"),
        h("label", {for: "temperature"}, "temperature"), temperature, h("label", {for: "top_p"}, "top_p"), topP,
        h("label", {for: "top_k"}, "top_k"), topK, h("label", {for: "max_new_tokens"}, "max_new_tokens"), maxNew, source))),
    h("div", {class: "panes"}, ["left", "right"].map((side) => h("div", {class: "card pane", id: `${side}-pane`},
      h("div", {class: "pane-head"}, sides[side].select), sides[side].status, sides[side].log))),
    h("div", {class: "composer"}, prompt, h("div", {class: "actions"}, sendBtn, stopBtn, clearBtn)));

  let prefilled = false, timer = null;
  const active = new Set();
  onLeave(() => clearTimeout(timer));

  function showState(st) {
    const byKey = Object.fromEntries(st.workers.map((w) => [w.key, w]));
    let loading = false;
    for (const [side, s] of Object.entries(sides)) {
      const pane = st.panes.find((p) => p.model === s.select.value);
      const w = pane && byKey[pane.worker];
      s.ready = Boolean(w && w.state === "ready");
      loading = loading || Boolean(w && w.state === "loading");
      s.status.dataset.state = !s.select.value ? "none" : w ? w.state : "not loaded";
      if (!s.select.value) { s.status.textContent = ""; continue; }
      if (!w) { s.status.textContent = "not loaded: press Load"; continue; }
      const how = pane.adapter === false ? " (the adapter's worker, adapter disabled)" : "";
      s.status.replaceChildren(badge(w.state), " ",
        w.state === "ready" ? `${w.info.template_kind} template, thinking ${w.info.enable_thinking ? "on" : "off"} as trained, ${w.info.dtype} on ${w.info.device}${how}` : "",
        w.error ? h("div", {class: "error-line"}, w.error) : "");
    }
    const ref = (sides.right.ready && byKey[st.panes.find((p) => p.model === sides.right.select.value).worker])
      || (sides.left.ready && byKey[st.panes.find((p) => p.model === sides.left.select.value).worker]);
    if (ref && !prefilled) {  // the model's own sampling defaults (its generation_config.json)
      const g = ref.info.sampling;
      greedy.checked = !g.do_sample;
      temperature.value = g.temperature ?? "";
      topP.value = g.top_p ?? "";
      topK.value = g.top_k ?? "";
      source.textContent = `from ${ref.key}'s generation_config`;
      prefilled = true;
    }
    if (loading) timer = setTimeout(refresh, 600);
  }
  async function refresh() { showState(await api("/api/chat/state")); }

  loadBtn.addEventListener("click", async () => {
    const names = ["left", "right"].map((s) => sides[s].select.value).filter(Boolean);
    if (!names.length) return toast("choose a model", "bad");
    history.replaceState(null, "", `#/chat?left=${encodeURIComponent(sides.left.select.value)}&right=${encodeURIComponent(sides.right.select.value)}`);
    prefilled = false;
    try { showState(await api("/api/chat/load", {panes: names})); } catch (e) { toast(e.message, "bad"); }
  });
  unloadBtn.addEventListener("click", async () => { await api("/api/chat/unload", {}); refresh(); });
  clearBtn.addEventListener("click", () => { for (const s of Object.values(sides)) { s.history = []; s.log.replaceChildren(); } });
  prompt.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); sendBtn.click(); } });
  stopBtn.addEventListener("click", () => { for (const id of active) api("/api/chat/stop", {id}).catch(() => {}); });

  sendBtn.addEventListener("click", async () => {
    const text = prompt.value;
    const panes = Object.entries(sides).filter(([, s]) => s.select.value && s.ready);
    if (!text.trim() || !panes.length) return toast(panes.length ? "type a prompt" : "load the models first", "bad");
    prompt.value = "";
    sendBtn.disabled = true;
    stopBtn.hidden = false;
    // A number as typed; anything else is sent as the text, for the server to refuse by name (not dropped).
    const numberOr = (el) => { const t = el.value.trim(); return t === "" ? null : (Number.isFinite(Number(t)) ? Number(t) : t); };
    const body = {system: system.value, enable_thinking: thinking.value === "" ? null : thinking.value === "true",
      max_new_tokens: numberOr(maxNew),
      sampling: {do_sample: !greedy.checked, temperature: numberOr(temperature), top_p: numberOr(topP), top_k: numberOr(topK)}};
    // Left pane first: each request is sent once the one before has its place in the queue (its start event), so
    // that one model process serving both answers them in the order the page shows, whatever the network does.
    const replies = [];
    for (const [side, s] of panes) {
      let started;
      const placed = new Promise((resolve) => { started = resolve; });
      replies.push(ask(side, s, text, body, started));
      await placed;
    }
    await Promise.all(replies);
    sendBtn.disabled = false;
    stopBtn.hidden = true;
  });

  async function ask(side, s, text, body, started) {
    s.history.push({role: "user", content: text});
    s.log.append(h("div", {class: "msg msg-user"}, h("pre", {}, text)));
    const reply = replyView(side, s.history.filter((m) => m.role === "user").length);  // #right-reply-1, -2, ... per turn
    s.log.append(reply.el);
    let id = null;
    try {
      await streamPost("/api/chat/generate", Object.assign({model: s.select.value, messages: s.history}, body), (event, data) => {
        if (event === "start") { id = data.id; active.add(id); reply.wait(data.ahead, side === "left" ? "right" : "left"); started(); }
        if (event === "text") reply.add(data.text);
        if (event === "done") {
          reply.finish(data);
          s.history.push({role: "assistant", content: splitThink(data.text).answer.trim()});
        }
        if (event === "error") { reply.fail(data.message); refresh(); }
      });
    } catch (e) { reply.fail(e.message); }
    started();  // refused or failed before its start: the next pane goes on
    if (id) active.delete(id);
    if (s.history[s.history.length - 1].role === "user") s.history.pop();  // no answer: the turn is not kept
    s.log.scrollTop = s.log.scrollHeight;
  }

  showState(state);
}

function splitThink(text) {
  const open = text.indexOf("<think>");
  if (open === -1) return {reasoning: null, answer: text, closed: true};
  const close = text.indexOf("</think>", open);
  return {reasoning: text.slice(open + 7, close === -1 ? undefined : close).replace(/^\n+|\n+$/g, ""),
    answer: close === -1 ? "" : text.slice(close + 8).replace(/^\n+/, ""), closed: close !== -1};
}

// An assistant message that grows as text arrives: thinking folded in <details>, the answer below.
function replyView(side, n) {
  let text = "";
  const summary = h("summary", {}, "thinking…");
  const reasoning = h("pre", {class: "reasoning"});
  const think = h("details", {class: "think", hidden: true}, summary, reasoning);
  const answer = h("pre", {class: "answer"});
  const foot = h("div", {class: "sub reply-foot"});
  const waiting = h("div", {class: "waiting", hidden: true});
  const el = h("div", {class: "msg msg-assistant streaming", id: `${side}-reply-${n}`}, waiting, think, answer, foot);
  let since = 0, ticker = null, ahead = 0, other = "";
  // Until its first token: what it waits for (the other pane's reply, when one worker serves both), and how long.
  function showWait() {
    const s = Math.round((Date.now() - since) / 1000);
    waiting.textContent = ahead > 0
      ? `waiting: the same model process is answering the ${other} pane first (one reply at a time; on a CPU that can take a minute or more) · ${s} s`
      : `generating: no token yet · ${s} s`;
  }
  let waited = 0;  // seconds it waited for the other pane's reply (said in its foot)
  function endWait() {
    if (ticker && ahead > 0) waited = Math.round((Date.now() - since) / 1000);
    clearInterval(ticker); ticker = null; waiting.hidden = true; el.removeAttribute("data-waiting");
  }
  function draw() {
    const t = splitThink(text);
    think.hidden = t.reasoning === null;
    reasoning.textContent = t.reasoning || "";
    summary.textContent = t.closed ? `thinking (${(t.reasoning || "").split(/\s+/).filter(Boolean).length} words)` : "thinking…";
    // A reply of whitespace only (a random model's newlines) would be a tall blank box: say so instead.
    const blank = t.answer.length > 0 && !t.answer.trim();
    answer.textContent = blank ? `(${t.answer.length} whitespace characters)` : t.answer;
    answer.classList.toggle("sub", blank);
  }
  return {el,
    wait(n, otherSide) {
      ahead = n || 0;
      other = otherSide;
      since = Date.now();
      waiting.hidden = false;
      el.dataset.waiting = ahead > 0 ? "queued" : "first-token";
      showWait();
      ticker = setInterval(showWait, 1000);
      onLeave(() => clearInterval(ticker));
    },
    add(piece) { if (ticker) endWait(); text += piece; draw(); },
    finish(data) {
      endWait();
      text = data.text;
      draw();
      el.classList.remove("streaming");
      el.dataset.done = "1";
      foot.textContent = `${data.new_tokens} tokens, ${data.cancelled ? "stopped by you" : data.stopped ? "ended its turn" : "cut at max_new_tokens"}`
        + (ahead > 0 ? `; waited ${waited} s for the ${other} pane's reply first` : "");
    },
    fail(message) {
      endWait();
      el.classList.remove("streaming");
      el.dataset.done = "error";
      foot.replaceChildren(h("span", {class: "error-line reply-error"}, message));
    }};
}

// POST a JSON body, read the answer as server-sent events: onEvent(name, data) per event.
async function streamPost(url, body, onEvent) {
  const res = await fetch(url, {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body)});
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => ({})));
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}
