"""`qwen-sft plan`: before a run, its peak GPU memory, its time, and what would make it fit (issue #24)."""
