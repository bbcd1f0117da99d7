"""The plan as a person reads it: the full text of `qwen-sft plan`, and train's one-line summary."""

from __future__ import annotations

PARTS = [("frozen_weights_gib", "frozen weights", ""), ("lora_weights_gib", "LoRA weights", ""),
         ("lora_grads_gib", "LoRA gradients", ""), ("optimizer_state_gib", "AdamW state", ""),
         ("saved_activations_gib", "saved activations", "kept from the forward: the checkpointed layer inputs"),
         ("transient_gib", "working memory", "made where the peak is"),
         ("cuda_workspace_margin_gib", "CUDA workspace margin", "cuBLAS workspaces, allocator rounding: measured")]
# Every key of a plan's breakdown in words, with why where there is one (the UI's plan panel shows these): PARTS,
# and the two working-memory figures the text prints on one line after them.
LABELS = {key: (label, why) for key, label, why in PARTS} | {
    "worst_layer_transient_gib": ("worst layer's working memory", ""),
    "loss_chunk_transient_gib": ("loss chunk's working memory", "")}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    h, m = divmod(minutes, 60)
    days, h = divmod(h, 24)
    return (f"{days} d " if days else "") + (f"{h} h " if h or days else "") + f"{m} min"


def change_text(change: dict, gpus: int | None = None) -> str:
    text = " ".join(f"{k}={_value(v)}" for k, v in change.items())
    return f"{text} on {gpus} GPUs" if gpus else text


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def fit_text(p: dict) -> str:
    card = p.get("card")
    if card is None:
        return ""
    verdict = {True: "fits", False: "does NOT fit", None: ""}[p["fits"]]
    return f" on {card['name']} ({card['usable_gib']:.1f} GiB usable): {verdict}"


def format_plan(p: dict) -> str:
    m, mb, b = p["model"], p["micro_batch"], p["breakdown"]
    lines = [f"plan: {m['name']} ({m['family']}, {m['layers']} layers; config: {m['config_source']})",
             f"worst micro-batch: {mb['what']}: {mb['tokens']:,} tokens, {mb['trained_tokens']:,} trained"]
    err = f" ± {p['error_gib']:.2f}" if p["error_gib"] else ""
    per = f" per GPU ({p['per_gpu_how']})" if p["gpus"] > 1 else ""
    lines.append(f"peak {'GPU ' if p['device'] == 'cuda' else ''}memory: {p['peak_gib']:.2f} GiB{err}{per}, at the "
                 f"{p['peak_at']}{fit_text(p)}")
    for key, label, why in PARTS:
        if key == "cuda_workspace_margin_gib" and not b[key]:
            continue
        lines.append(f"  {label:<22} {b[key]:7.2f} GiB" + (f"  ({why})" if why else ""))
    lines.append(f"  {'(worst layer / loss chunk working memory:':<22} {b['worst_layer_transient_gib']:.2f} / "
                 f"{b['loss_chunk_transient_gib']:.2f} GiB)")
    if p["tokens_per_s"]:
        lines.append(f"speed: {p['tokens_per_s']:,.0f} tokens/s ({p['tokens_per_s_source']})")
    elif p["tokens_per_s_source"]:
        lines.append(f"speed: {p['tokens_per_s_source']}")
    d = p["data"]
    if p["steps"] is not None and p["train_tokens"] is not None:
        lines.append(f"run: {p['steps']:,} optimizer steps ({p['steps_per_epoch']:,} per epoch), {p['train_tokens']:,} "
                     f"input tokens; wall time {duration(p['wall_s'])}")
    if d["source"]:
        lines.append(f"data: {d['source']} ({d['train_rows']:,} train rows, {d['train_tokens']:,} tokens)")
    else:
        lines.append("data: no data figures (encode it once with `qwen-sft cache build CONFIG` for the steps, the "
                     "wall time and the longest rows)")
    if p["suggestions"]:
        fit = [s for s in p["suggestions"] if s["fits"]]
        lines.append("changes that would make it fit:" if fit else "no change tried makes it fit; the closest:")
        for s in p["suggestions"]:
            peak = "not evaluated" if s["peak_gib"] is None else f"{s['peak_gib']:.2f} GiB"
            mark = "fits" if s["fits"] else "does not fit" if s["fits"] is False else ""
            lines.append(f"  {change_text(s['change'], s.get('gpus')):<62} {peak:>10}  {mark:<12} ({s['why']})")
    for n in p["notes"]:
        lines.append(f"note: {n}")
    lines.append(f"(planned in {p['seconds']:.1f} s: {p['method']})")
    return "\n".join(lines)


def summary_line(p: dict) -> str:
    """One line for the start of a training run."""
    err = f" ± {p['error_gib']:.2f}" if p["error_gib"] else ""
    card = p.get("card")
    where = ""
    if card is not None:
        where = f", {card['usable_gib']:.1f} GiB free on {card['name']}" + {True: ": fits", False: ": does NOT fit",
                                                                           None: ""}[p["fits"]]
    speed = f"; ~{p['tokens_per_s']:,.0f} tokens/s (estimate)" if p["tokens_per_s"] else ""
    wall = f", {duration(p['wall_s'])} for {p['steps']:,} steps" if p["wall_s"] else ""
    return (f"plan: peak {'GPU ' if p['device'] == 'cuda' else ''}memory {p['peak_gib']:.2f} GiB{err}"
            f"{' per GPU' if p['gpus'] > 1 else ''} at the {p['peak_at']}{where}{speed}{wall}")
