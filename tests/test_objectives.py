"""The paper's objective study for span-corruption seq2seq checkpoints, on a tiny random T5 with sentinels:
`--target-sentinel` (targets start with <extra_id_0>) and `lm-adapt` (prefix-LM training of all weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import CORPUS, tiny_causal, tiny_seq2seq, tiny_tokenizer
from transformers import T5Config, T5ForConditionalGeneration
from typer.testing import CliRunner

from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import SoftPrompt
from softprompt.scoring import encode_pair, score_choices
from softprompt.scoring.objectives import (
    SENTINEL,
    ObjectiveError,
    sentinel_id,
    strip_sentinels,
    target_prefix,
)
from softprompt.training.config import TrainConfig
from softprompt.training.lm_adapt import LMAdaptError, lm_adapt, prefix_lm_loss, read_texts
from softprompt.training.loop import encode_rows, train
from softprompt.training.rundir import RunDir

TEXTS = sorted(set(CORPUS))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and leaves the other core to the rest of the machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_t5_sentinels(seed: int = 0) -> FrozenModel:
    """tests/tiny.py's T5, with T5's sentinel tokens <extra_id_0..2> added as special tokens."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(add_eos=True)
    tokenizer.add_special_tokens({"additional_special_tokens": [f"<extra_id_{i}>" for i in range(3)]})
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0, initializer_factor=1.5,
    )
    return FrozenModel(T5ForConditionalGeneration(config), tokenizer, name=f"tiny-t5-sentinel-{seed}", is_seq2seq=True)


def sentiment_task(tmp_path: Path) -> Path:
    """A task file (no shared data needed): 16 train / 8 validation rows, label words positive/negative."""
    rows = [("the movie was great and the actors were wonderful", "pos"),
            ("a terrible film that was boring and far too long", "neg")]
    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "".join(f"{t} {i},{label}\n" for i in range(8) for t, label in rows))
    spec = tmp_path / "sentiment.yaml"
    spec.write_text(
        "name: tiny_sentiment\n"
        "data: {train: data.csv, validation: data.csv}\n"
        "input_template: 'sentence : {text}'\n"
        "label_field: label\n"
        "labels: {pos: positive, neg: negative}\n"
    )
    return spec


# --- target sentinel ---------------------------------------------------------------------------------

def test_sentinel_target_encoding_starts_with_the_sentinel_id():
    fm = tiny_t5_sentinels()
    sid = sentinel_id(fm)
    assert sid == fm.tokenizer.convert_tokens_to_ids(SENTINEL)
    assert target_prefix(fm) + "positive" == "<extra_id_0> positive"  # as training builds its targets
    enc = encode_pair(fm, "sentence : a fine day", target_prefix(fm) + "positive")
    plain = encode_pair(fm, "sentence : a fine day", " positive")
    assert enc.target_ids[0] == sid and enc.target_ids[1:] == plain.target_ids  # sentinel, label, EOS
    assert enc.target_ids[-1] == fm.tokenizer.eos_token_id

    class Ex:
        input_text, target_text, choices, label = "sentence : a fine day", "positive", ["negative", "positive"], 1

    cfg = TrainConfig(task="sst2", target_sentinel=True, loss="rank")
    row = encode_rows(fm, [Ex()], cfg, eos=True)[0]
    assert row.gold.target_ids[0] == sid and all(c.target_ids[0] == sid for c in row.choices)
    assert encode_rows(fm, [Ex()], TrainConfig(task="sst2"), eos=True)[0].gold.target_ids[0] != sid


def test_strip_sentinels():
    assert strip_sentinels("<extra_id_0> positive") == "positive"
    assert strip_sentinels(" <extra_id_0> not_entailment <extra_id_1> more") == "not_entailment"
    assert strip_sentinels("positive") == "positive"


def test_target_sentinel_is_refused_where_it_cannot_apply():
    with pytest.raises(ObjectiveError, match="needs the sentinel token '<extra_id_0>'"):
        target_prefix(tiny_seq2seq())  # a seq2seq model whose tokenizer has no sentinels
    with pytest.raises(ObjectiveError, match="decoder-only LM and needs neither"):
        target_prefix(tiny_causal())
    assert target_prefix(tiny_causal(), enabled=False) == ""


def test_training_with_target_sentinel_records_it_and_evaluates_in_the_same_format(tmp_path):
    from softprompt.evaluation.evaluate import evaluate
    from softprompt.tasks import load_task_file

    fm = tiny_t5_sentinels()
    spec = sentiment_task(tmp_path)
    cfg = TrainConfig(task_file=str(spec), prompt_length=4, batch_size=4, steps=3, eval_every=3, eval_limit=8,
                      init="random-uniform", optimizer="adamw", lr=0.05, target_sentinel=True,
                      out=str(tmp_path / "run"), seed=1, threads=1)
    result = train(cfg, fm=fm, progress=False)
    assert result.steps_done == 3 and result.best_metric is not None
    prompt = SoftPrompt.load(RunDir(tmp_path / "run").best_prompt, model=fm)
    assert prompt.metadata["target_prefix"] == "<extra_id_0> "
    assert prompt.metadata["train_config"]["target_sentinel"] is True

    # Evaluation reads the format from the prompt file: label words are scored after the sentinel.
    task = load_task_file(spec)
    examples = task.examples("validation", limit=4)
    scored = evaluate(fm, task, examples, prompt=prompt, progress=False)
    inputs = [ex.input_text for ex in examples]
    words = task.label_words
    want = score_choices(fm, inputs, [[f"<extra_id_0> {w}" for w in words]] * 4, prompts=prompt)
    plain = score_choices(fm, inputs, [words] * 4, prompts=prompt)
    torch.testing.assert_close(torch.tensor(scored.scores), torch.tensor(want), atol=1e-4, rtol=0)
    assert not torch.allclose(torch.tensor(scored.scores), torch.tensor(plain), atol=1e-2)
    generated = evaluate(fm, task, examples, prompt=prompt, mode="generate", progress=False)
    assert not any("extra_id" in p for p in generated.predictions)


def test_target_sentinel_on_a_decoder_only_model_is_refused(tmp_path):
    cfg = TrainConfig(task_file=str(sentiment_task(tmp_path)), prompt_length=4, batch_size=4, steps=1,
                      target_sentinel=True, out=str(tmp_path / "run"))
    with pytest.raises(ObjectiveError, match="decoder-only"):
        train(cfg, fm=tiny_causal(), progress=False)


# --- LM adaptation -----------------------------------------------------------------------------------

def test_lm_adapt_lowers_the_prefix_lm_loss_and_writes_a_loadable_model(tmp_path):
    from softprompt.model.loading import load_model

    fm = tiny_t5_sentinels()
    before = prefix_lm_loss(fm, TEXTS)
    result = lm_adapt(fm, TEXTS, steps=30, batch_size=4, lr=1e-2, out_dir=tmp_path / "adapted", progress=False)
    assert result.loss_before == pytest.approx(before)
    assert result.loss_after < 0.7 * result.loss_before  # ~8.5 -> ~3.8 on this corpus
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    assert not any(p.requires_grad for p in fm.model.parameters())  # frozen again, for prompt tuning

    out = tmp_path / "adapted"
    summary = json.loads((out / "lm_adapt.json").read_text())
    assert summary["objective"] == "prefix-lm" and summary["steps"] == 30
    back = load_model(str(out), dtype="fp32")
    assert back.is_seq2seq and back.fingerprint == fm.fingerprint
    assert sentinel_id(back) == sentinel_id(fm)
    assert torch.equal(back.embedding_matrix, fm.embedding_matrix)
    assert prefix_lm_loss(back, TEXTS) == pytest.approx(result.loss_after, rel=1e-5)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_lm_adapt_refuses_decoder_only_models_and_foreign_folders(tmp_path):
    with pytest.raises(LMAdaptError, match="decoder-only LM and needs neither LM adaptation nor --target-sentinel"):
        lm_adapt(tiny_causal(), TEXTS, steps=1, out_dir=tmp_path / "x", progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(LMAdaptError, match="not an lm-adapt output folder"):
        lm_adapt(tiny_t5_sentinels(), TEXTS, steps=1, out_dir=mine, progress=False)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_read_texts_lines_or_paragraphs(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("first document\nsecond document\n")
    assert read_texts(lines) == ["first document", "second document"]
    prose = tmp_path / "prose.txt"
    prose.write_text("a paragraph\nwrapped here\n\nanother one\n")
    assert read_texts(prose) == ["a paragraph wrapped here", "another one"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(LMAdaptError, match="holds no text"):
        read_texts(tmp_path / "empty.txt")


def test_lm_adapt_cli(tmp_path):
    from softprompt.cli import app

    fm = tiny_t5_sentinels()
    fm.model.save_pretrained(tmp_path / "t5")
    fm.tokenizer.save_pretrained(tmp_path / "t5")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(t.replace("\n", " ") + "\n" for t in TEXTS))
    args = ["lm-adapt", "--model", str(tmp_path / "t5"), "--text-file", str(corpus), "--steps", "3",
            "--batch-size", "2", "--out", str(tmp_path / "adapted")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["steps"] == 3 and report["texts"] == len(TEXTS)
    assert (tmp_path / "adapted" / "config.json").is_file() and (tmp_path / "adapted" / "tokenizer.json").is_file()
    torch.set_num_threads(1)  # load_model sets threads to the physical cores
    again = CliRunner().invoke(app, [*args[:-2], "--task", "sst2", "--out", str(tmp_path / "other")])
    assert again.exit_code != 0 and "exactly one source" in str(again.exception)
