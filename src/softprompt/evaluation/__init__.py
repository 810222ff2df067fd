"""Measuring prompts: `evaluate` (rank classification or generation against a task's metric), the
prompt-design baselines, ensemble votes, and nearest-token interpretation."""
