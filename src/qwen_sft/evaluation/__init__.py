"""`qwen-sft eval`: a fine-tuned model on held-out rows against its base (see docs/evaluation.md).

- metrics.py: the text metrics, torch-free: language, reasoning in a reply, ROUGE-L / BLEU, behavior rates;
- passes.py: the model passes: held-out loss, greedy generations, a tuned model and its base one after the
  other (evaluate_model), and the few generations the trainer logs at each evaluation;
- report.py: what an eval holds and the files it writes (generations.jsonl, report.md, metrics.json);
- command.py: the command's arguments, thresholds and run.

Template fidelity (the encoder's tokens against plain inference) is data/fidelity.py, next to data/template.py.
"""
