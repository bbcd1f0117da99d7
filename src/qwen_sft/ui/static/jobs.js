// Long work the server runs as a job (a data check, a merge, an eval): its progress, log and Cancel, in one widget.
//   const view = jobView("merge");           // view.el goes in the page
//   watchJob(summary, view, (job) => ...);   // follows /api/jobs/get until the job ends, then calls back
"use strict";

function jobView(name) {
  const bar = h("div", {class: "progress-bar"});
  const text = h("span", {class: "progress-text"});
  const status = h("span", {class: "job-status"});
  const cancel = h("button", {class: "danger", id: `${name}-cancel`, hidden: true}, "Cancel");
  const error = h("div", {class: "error-line", id: `${name}-error`, hidden: true});
  const log = h("pre", {class: "code log-small", id: `${name}-log`});
  const el = h("div", {class: "job", id: `${name}-job`, hidden: true},
    h("div", {class: "job-head"}, status, h("div", {class: "progress grow"}, bar, text), cancel),
    error, h("details", {}, h("summary", {}, "log"), log));
  let current = null;
  cancel.addEventListener("click", async () => {
    if (!current) return;
    try { show(await api("/api/jobs/cancel", {id: current.id})); } catch (e) { toast(e.message, "bad"); }
  });
  function show(job) {
    current = job;
    el.hidden = false;
    el.dataset.status = job.status;
    status.replaceChildren(badge(job.status));
    const running = job.status === "running" || job.status === "cancelling";
    cancel.hidden = !running;
    const p = job.progress || {};
    const known = p.total ? p.done / p.total : null;
    bar.classList.toggle("indeterminate", running && known === null);
    bar.style.width = `${(known === null ? 1 : known) * 100}%`;
    text.textContent = `${p.text || ""} · ${duration(job.elapsed_s)}`;
    error.hidden = !job.error;
    error.textContent = job.error || "";
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = (job.log || []).join("\n");
    if (atBottom) log.scrollTop = log.scrollHeight;
  }
  // A job whose result has a verdict of its own (a data check: PASS / FAIL) shows that instead of "finished".
  function verdict(text, state) {
    status.replaceChildren(h("span", {class: `badge status-${state}`, "data-status": state, "data-verdict": text}, text));
  }
  return {el, show, verdict};
}

function watchJob(job, view, done) {
  view.show(job);
  let timer = null, stopped = false;
  const tick = async () => {
    if (stopped) return;
    try {
      job = await api(`/api/jobs/get?id=${encodeURIComponent(job.id)}`);
    } catch (e) {
      view.show(Object.assign({}, job, {status: "failed", error: e.message}));
      return;
    }
    view.show(job);
    if (job.status === "running" || job.status === "cancelling") timer = setTimeout(tick, 700);
    else if (done) done(job);
  };
  if (job.status === "running" || job.status === "cancelling") timer = setTimeout(tick, 500);
  else if (done) done(job);
  onLeave(() => { stopped = true; clearTimeout(timer); });
}
