"""Learning a prompt: the loop (setup -> step -> evaluate-and-keep -> finish), its config dataclasses,
optimizers and recipes, checkpoints, batching, init strategies, LM adaptation and ensemble training."""
