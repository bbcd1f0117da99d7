// A run's "Merge and evaluate" card (on #/run/ID): `qwen-sft merge --validate` and `qwen-sft eval` as jobs,
// the validation report, the eval table (base vs tuned) and the generations side by side. Read from the run
// directory (/api/ops/status), so it shows what was done earlier too.
"use strict";

function runOps(id, container, toolbar) {
  const box = h("div", {class: "card", id: "ops", hidden: true});
  container.append(box);
  // The section is at the foot of a long page: a button at the top of it goes there.
  const jump = h("button", {id: "to-ops", hidden: true, onclick: () => box.scrollIntoView({block: "start"})}, "Merge and evaluate ↓");
  if (toolbar) toolbar.append(jump);
  const dtype = h("select", {id: "merge-dtype"});
  const replace = h("input", {type: "checkbox", id: "merge-replace"});
  const replaceLabel = h("label", {hidden: true}, replace, " replace the merged model (only once the new one passes)");
  const mergeBtn = h("button", {class: "primary", id: "merge"}, "Merge and validate");
  const mergeJob = jobView("merge");
  const validation = h("div", {id: "validation"});
  const evalModel = h("select", {id: "eval-model"}, h("option", {value: "adapter"}, "the adapter (base + LoRA)"));
  const evalData = h("select", {id: "eval-data"});
  const evalWarning = h("div", {class: "banner info", id: "eval-data-warning", hidden: true});
  const evalN = h("input", {type: "text", id: "eval-n", value: "20", size: 4});
  const evalTokens = h("input", {type: "text", id: "eval-max-new-tokens", value: "128", size: 5});
  const evalBtn = h("button", {class: "primary", id: "evaluate"}, "Evaluate");
  const evalJob = jobView("eval");
  const evalResult = h("div", {id: "eval-result"});
  const chatLink = h("a", {class: "button", id: "chat-link"}, "Chat: base vs tuned");
  box.append(
    h("div", {class: "toolbar"}, h("h3", {}, "Merge and evaluate"), h("span", {class: "grow"}), chatLink),
    h("div", {class: "columns"},
      h("div", {class: "grow"},
        h("div", {class: "form-row"}, h("label", {for: "merge-dtype"}, "dtype"), dtype, replaceLabel, mergeBtn),
        mergeJob.el, validation),
      h("div", {class: "grow"},
        h("div", {class: "form-row"}, evalModel, h("label", {for: "eval-data"}, "held-out data"), evalData,
          h("label", {for: "eval-n"}, "rows"), evalN, h("label", {for: "eval-max-new-tokens"}, "max_new_tokens"), evalTokens, evalBtn),
        evalWarning, evalJob.el)),
    evalResult);

  let status = null, waiting = null;
  onLeave(() => clearTimeout(waiting));
  async function load() {
    try {
      status = await api(`/api/ops/status?run=${encodeURIComponent(id)}`);
    } catch (e) { return; }
    box.hidden = !status.adapter;
    jump.hidden = box.hidden;
    if (!status.adapter) { waiting = setTimeout(load, 3000); return; }  // written when the run finishes
    if (!dtype.options.length) {
      dtype.replaceChildren(...status.dtypes.map((t) => h("option", {value: t}, t)));
      const files = (await api("/api/data/files")).files;
      const training = (p) => status.train_data.some((d) => p === d || p.startsWith(d.replace(/\/+$/, "") + "/"));
      const split = status.split ? [h("option", {value: "validation"}, `the run's validation split (${
        status.split.val_rows !== null && status.split.val_rows !== undefined ? `${status.split.val_rows} rows, ` : ""}val_size ${status.split.val_size})`)] : [];
      evalData.replaceChildren(...split, ...files.map((f) => h("option", {value: f.path, dataset: {training: training(f.path) ? "1" : ""}},
        f.path + (training(f.path) ? " (training data)" : ""))));
      // The default: the held-out rows of this run, else a file it did not train on.
      const fresh = files.find((f) => !training(f.path));
      evalData.value = status.split ? "validation" : fresh ? fresh.path : (files[0] ? files[0].path : "");
      warnTraining();
    }
    chatLink.setAttribute("href", `#/chat?left=${encodeURIComponent(status.base || "")}&right=${encodeURIComponent(status.adapter)}`);
    const m = status.merged;
    replaceLabel.hidden = !m.exists;
    if (m.exists && !evalModel.querySelector('option[value="merged"]')) evalModel.append(h("option", {value: "merged"}, `the merged model (${m.path})`));
    const v = m.validation;
    validation.replaceChildren(...(v.lines.length ? [
      h("div", {class: "toolbar"}, h("b", {}, "Validation: merged model vs base + adapter "),
        h("span", {class: `badge ${v.passed ? "status-finished" : v.passed === false ? "status-failed" : ""}`, id: "validation-verdict"},
          v.passed ? "PASSED" : v.passed === false ? "FAILED" : "running"),
        m.exists ? h("code", {}, m.path) : null),
      h("pre", {class: "code", id: "validation-report"}, v.lines.join("\n"))] : []));
    if (status.eval.result) showEval(status.eval.result);
    for (const [kind, view] of [["merge", mergeJob], ["eval", evalJob]]) {
      const job = status.jobs[kind];
      if (job && (job.status === "running" || job.status === "cancelling")) follow(job, view);
      else if (job) view.show(job);
    }
  }
  function follow(job, view) {
    (view === mergeJob ? mergeBtn : evalBtn).disabled = true;
    watchJob(job, view, () => { mergeBtn.disabled = false; evalBtn.disabled = false; load(); });
  }
  function warnTraining() {
    const chosen = evalData.selectedOptions[0];
    evalWarning.hidden = !(chosen && chosen.dataset.training);
    evalWarning.textContent = evalWarning.hidden ? "" : `${chosen.value} is this run's training data: the tuned model has seen `
      + "these rows, so its scores on them show what it memorised, not how it does on new data.";
  }
  evalData.addEventListener("change", warnTraining);
  mergeBtn.addEventListener("click", async () => {
    try { follow(await api("/api/ops/merge", {run: id, dtype: dtype.value, overwrite: replace.checked}), mergeJob); }
    catch (e) { toast(e.message, "bad"); }
  });
  evalBtn.addEventListener("click", async () => {
    try {
      follow(await api("/api/ops/eval", {run: id, model: evalModel.value, data: [evalData.value],
        n: parseInt(evalN.value, 10), max_new_tokens: parseInt(evalTokens.value, 10)}), evalJob);
    } catch (e) { toast(e.message, "bad"); }
  });

  async function showEval(result) {
    const m = result.metrics;
    const rows = (await api(`/api/ops/generations?run=${encodeURIComponent(id)}&count=20`)).rows;
    evalResult.replaceChildren(
      h("h3", {}, `Eval of ${m.model}: ${m.rows} rows of ${m.data.join(", ")}, greedy, thinking ${m.enable_thinking}`),
      h("table", {class: "runs", id: "eval-table"},
        h("thead", {}, h("tr", {}, ["metric", `base (${m.base_model})`, "tuned"].map((t) => h("th", {}, t)))),
        h("tbody", {}, result.table.map((r) => h("tr", {dataset: {key: r.key}}, h("td", {}, h("code", {}, r.key)),
          h("td", {class: "num"}, fmt(r.base)), h("td", {class: "num"}, fmt(r.tuned)))))),
      h("h3", {}, "Generations (base | tuned), as in generations.jsonl"),
      h("table", {class: "runs generations", id: "eval-generations"},
        h("thead", {}, h("tr", {}, ["row", "prompt", "reference", "base", "tuned"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows.map((r) => h("tr", {dataset: {source: r.source}},
          h("td", {class: "sub"}, r.source), h("td", {}, h("pre", {}, r.prompt.map((p) => `${p.role}: ${p.content}`).join("\n"))),
          h("td", {}, shownText(r.reference)),
          h("td", {class: "gen-base"}, shownText(r.base.text)), h("td", {class: "gen-tuned"}, shownText(r.tuned.text)))))));
  }
  load();
}

// A generation as text; one that is empty or only whitespace (a tall blank cell otherwise) says so, visibly.
function shownText(text) {
  text = text === null || text === undefined ? "" : String(text);
  if (text.trim()) return h("pre", {}, text);
  const marks = [...text].map((c) => (c === "\n" ? "↵" : c === "\t" ? "⇥" : "·")).join("");
  return h("pre", {class: "blank-text"}, text ? `(only whitespace, ${text.length} characters: ${marks})` : "(empty)");
}
