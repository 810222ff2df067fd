"""Tiny random models built from a config, with a real BPE tokenizer trained in memory, and a tiny data set.

They run the same code paths as the real models (Llama, Gemma-3, T5) in milliseconds, so most tests use them.
Plain functions rather than fixtures: tests build fresh ones (other seeds, dtypes, BOS rules), and the
subprocess scripts of the resume and DDP tests import them too; `conftest.fm` is the common default.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from softprompt.model.frozen import FrozenModel

# A data dir in the benchmark's layout with made-up rows: SST-2/{train,dev}.tsv (80 / 24 sentences, balanced,
# about a third long enough for min_input_tokens tests) and MR/test.csv (the MR validation split, 12 rows).
# For tests that need the format, not the real numbers.
TINY_DATA = Path(__file__).resolve().parent / "data"

CORPUS = [
    "the movie was great and the actors were wonderful",
    "a terrible film , boring and far too long",
    "premise : a man is walking . hypothesis : someone moves",
    "question : is the sky blue ? passage : the sky is blue on a clear day",
    "positive negative entailment not_entailment true false yes no",
    "sentence : it is a fine day for a walk in the park\nanswer",
] * 4


def tiny_tokenizer(add_bos: bool = False, add_eos: bool = False, vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with <pad>, <s>, </s>; optionally adds BOS first / EOS last."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    single = " ".join((["<s>"] if add_bos else []) + ["$A"] + (["</s>"] if add_eos else []))
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def tiny_causal(add_bos: bool = True, seed: int = 0, dtype: torch.dtype = torch.float32) -> FrozenModel:
    """A 2-layer Llama (H=32, V=320) with a BOS-adding tokenizer by default."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(add_bos=add_bos)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False, initializer_range=0.2,
    )
    model = LlamaForCausalLM(config).to(dtype)
    return FrozenModel(model, tokenizer, name=f"tiny-llama-{seed}")


def tiny_gemma3(seed: int = 0, sliding_window: int = 4) -> FrozenModel:
    """A 4-layer Gemma-3 (H=32, one KV head, √H-scaled embeddings) whose sliding window is shorter than a
    prompt, so its sliding-window cache layers are exercised; BOS-adding tokenizer."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(add_bos=True)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=sliding_window,
        max_position_embeddings=256, layer_types=["sliding_attention", "full_attention"] * 2,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return FrozenModel(Gemma3ForCausalLM(config), tokenizer, name=f"tiny-gemma3-{seed}")


def tiny_seq2seq(seed: int = 0) -> FrozenModel:
    """A 2-layer T5 (d_model=32) whose tokenizer appends EOS, as T5's does."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(add_eos=True)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0, initializer_factor=1.5,
    )
    return FrozenModel(T5ForConditionalGeneration(config), tokenizer, name=f"tiny-t5-{seed}", is_seq2seq=True)
