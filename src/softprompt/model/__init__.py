"""The frozen base model and what sits in front of it: loading (HF id/path, GGUF, the embedded default,
cached as safetensors), the `FrozenModel` wrapper, the `SoftPrompt` file, attaching prompt rows to embedded
inputs, and the attention kernels used in training."""
