"""The serving engine: a registry of loaded prompts (one per task) on one frozen model, reloaded from a
directory, and batches that mix tasks.

Scoring and decoding are the scoring core's (`softprompt.scoring`): the engine turns requests into token
ids (BOS rule, input cutting, label words), hands them to `score_encoded` / `generate_ids` with its
`PrefixCache`, and turns the results back into answers. For decoder-only models each prompt's prefix
(BOS + prompt) runs once, when it is registered, and every request reuses its keys/values: request cost is
the input's tokens, whatever P is.

    >>> engine = Engine(fm, prompts_dir="prompts/")          # sst2.safetensors -> task "sst2"
    >>> engine.classify([("sst2", "sentence: a gem ."), ("rte", "premise: ... hypothesis: ...")])
    [Classification(task='sst2', label='positive', ...), Classification(task='rte', ...)]
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from softprompt.errors import SoftpromptError, UsageError
from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import PromptFileError, SoftPrompt
from softprompt.scoring import (
    Encoded,
    PrefixCache,
    cut_input,
    encode_pair,
    generate_ids,
    score_encoded,
    strip_bos,
    with_bos,
)
from softprompt.scoring.continuous import DecodeRow, RunningBatch
from softprompt.scoring.decode import StopRule, Watcher, cached_inputs
from softprompt.scoring.router import check_context


class EngineError(UsageError):
    """A request the engine cannot serve (unknown task, no label words); the message says which."""


@dataclass
class ClassifyRequest:
    """Classify `text` with task `task`'s prompt; `label_words` overrides the prompt's own."""

    task: str
    text: str
    label_words: Sequence[str] | None = None


@dataclass
class GenerateRequest:
    """Greedy continuation of `text` with task `task`'s prompt (None: the base model, no prompt), at most
    `max_new_tokens` tokens; `watcher` sees every new token (stop strings, logprobs, streaming: scoring.Watcher)."""

    task: str | None
    text: str
    max_new_tokens: int = 32
    stop_at_newline: bool = True
    watcher: Watcher | None = None
    stop_at_eos: bool = True  # False: decode past EOS to max_new_tokens (OpenAI route's vLLM-style ignore_eos)


@dataclass
class Classification:
    """One answer: the best label, softmax probabilities over the label words, and their summed log-likelihoods."""

    task: str
    label: str
    probs: dict[str, float]
    scores: dict[str, float]


@dataclass
class Entry:
    """A registered prompt: the prompt, its label words, where it came from (its prefix is in the engine's
    `PrefixCache`)."""

    name: str
    prompt: SoftPrompt
    label_words: list[str] | None
    source: Path | None = None


@dataclass
class ReloadReport:
    """What `reload` did: tasks (re)loaded and removed; skipped files with the reason (file name -> reason)."""

    loaded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class Engine:
    """Serve classification and generation requests for many tasks on one frozen model.

    Args:
        fm: the frozen model.
        prompts_dir: a directory of `*.safetensors` prompt files; the file stem is the task name.
        batch_size: rows per forward pass (a classification row packs one or more short requests of one task;
            generation runs one request per row).
        max_input_tokens: cut longer inputs (keeping start and end, as training does); None: never cut,
            and inputs that do not fit the context raise `InputTooLongError`.
    """

    def __init__(
        self, fm: FrozenModel, prompts_dir: str | Path | None = None, *, batch_size: int = 16,
        max_input_tokens: int | None = None,
    ) -> None:
        self.fm = fm
        self.prompts_dir = Path(prompts_dir) if prompts_dir is not None else None
        self.batch_size = batch_size
        self.max_input_tokens = max_input_tokens
        self._entries: dict[str, Entry] = {}
        self._seen: dict[Path, tuple[int, int]] = {}  # file -> (mtime_ns, size) when last read
        self._label_cache: dict[tuple[str, str], list[int]] = {}
        self._prefixes = PrefixCache(fm)  # BOS + prompt keys/values of every registered task, run once
        self.skipped: dict[str, str] = {}  # file name -> why it is not served (for a server's status page)
        self._lock = threading.Lock()  # reload may run beside requests: entries are swapped, never mutated
        if self.prompts_dir is not None:
            self.reload()

    # ----------------------------------------------------------------------------------------------- registry

    @property
    def tasks(self) -> dict[str, Entry]:
        """Registered tasks by name (a snapshot)."""
        return dict(self._entries)

    def add(self, name: str, prompt: SoftPrompt, label_words: Sequence[str] | None = None) -> Entry:
        """Register (or replace) task `name`; raises PromptFileError for a prompt made for another model."""
        entry = self._make_entry(name, prompt, label_words, source=None)
        with self._lock:
            self._entries = {**self._entries, name: entry}
            self._prefixes.retain(e.prompt for e in self._entries.values())
        return entry

    def remove(self, name: str) -> None:
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if k != name}
            self._prefixes.retain(e.prompt for e in self._entries.values())

    def reload(self) -> ReloadReport:
        """Pick up new and changed files in `prompts_dir` (by mtime and size), drop deleted ones.

        A corrupt file or a prompt for another model is skipped, its reason kept in `self.skipped`; a task
        already served from an older good version of that file keeps being served from it.
        """
        report = ReloadReport()
        if self.prompts_dir is None:
            return report
        if not self.prompts_dir.is_dir():
            raise EngineError(f"prompts directory not found: {self.prompts_dir}")
        with self._lock:
            entries = dict(self._entries)
            files = sorted(self.prompts_dir.glob("*.safetensors"))
            for path in files:
                try:
                    stat = path.stat()
                except OSError:  # deleted between glob and stat
                    continue
                stamp = (stat.st_mtime_ns, stat.st_size)
                if self._seen.get(path) == stamp:
                    continue
                self._seen[path] = stamp
                try:
                    prompt = SoftPrompt.load(path, model=self.fm)
                    entries[path.stem] = self._make_entry(path.stem, prompt, None, source=path)
                # Any unreadable file is skipped on its own, with its reason, and the scan goes on: one bad file
                # must not keep the files after it (already marked seen) from ever being served.
                except (SoftpromptError, ValueError, RuntimeError, OSError) as err:
                    reason = str(err) if isinstance(err, PromptFileError) else f"{path}: cannot be read as a prompt file: {err}"
                    self.skipped[path.name] = reason
                    report.skipped[path.name] = reason
                    continue
                self.skipped.pop(path.name, None)
                report.loaded.append(path.stem)
            present = set(files)
            for name, entry in list(entries.items()):
                if entry.source is not None and entry.source not in present:
                    del entries[name]
                    report.removed.append(name)
            for path in [p for p in self._seen if p not in present]:
                del self._seen[path]
                self.skipped.pop(path.name, None)
            self._entries = entries
            self._prefixes.retain(e.prompt for e in entries.values())
        return report

    def _make_entry(self, name: str, prompt: SoftPrompt, label_words: Sequence[str] | None, source: Path | None) -> Entry:
        prompt.check_fits(self.fm, source=str(source) if source else f"prompt {name!r}")
        words = list(label_words) if label_words is not None else prompt.metadata.get("label_words")
        if words is not None and (not isinstance(words, list) or not all(isinstance(w, str) and w for w in words)):
            raise PromptFileError(f"{source or name}: metadata label_words must be a list of non-empty strings, got {words!r}")
        if not self.fm.is_seq2seq:
            self._prefixes.get(prompt)  # run BOS + prompt now, at registration, not on the first request
        return Entry(name, prompt, words, source)

    def _entry(self, entries: dict[str, Entry], task: str) -> Entry:
        if task not in entries:
            known = ", ".join(sorted(entries)) or "none"
            skipped = f"; skipped files: {', '.join(sorted(self.skipped))}" if self.skipped else ""
            raise EngineError(f"unknown task {task!r}; registered tasks: {known}{skipped}")
        return entries[task]

    # ------------------------------------------------------------------------------------------- classify

    def classify(self, requests: Sequence[ClassifyRequest | tuple]) -> list[Classification]:
        """Label every request; requests may mix tasks. Tuples are (task, text) or (task, text, label_words)."""
        reqs = [r if isinstance(r, ClassifyRequest) else ClassifyRequest(*r) for r in requests]
        words, scores = self._score(reqs)
        out = []
        for r, w, s in zip(reqs, words, scores, strict=True):
            probs = torch.tensor(s, dtype=torch.float64).softmax(0).tolist()
            out.append(Classification(r.task, w[max(range(len(w)), key=s.__getitem__)],
                                      dict(zip(w, probs, strict=True)), dict(zip(w, s, strict=True))))
        return out

    def score(self, requests: Sequence[ClassifyRequest | tuple]) -> list[list[float]]:
        """Summed log-likelihood of every label word of every request, `result[i][c]` in label-word order."""
        return self._score([r if isinstance(r, ClassifyRequest) else ClassifyRequest(*r) for r in requests])[1]

    @torch.no_grad()
    def _score(self, reqs: list[ClassifyRequest]) -> tuple[list[list[str]], list[list[float]]]:
        if not reqs:  # nothing to run (a forward over zero rows would fail inside torch.cat)
            return [], []
        entries = self._entries  # one snapshot: a concurrent reload cannot change tasks mid-call
        words = []
        for r in reqs:
            w = list(r.label_words) if r.label_words is not None else self._entry(entries, r.task).label_words
            if not w:
                raise EngineError(f"task {r.task!r} has no label words in its prompt file; pass label_words")
            words.append(w)
        return words, self._label_scores(reqs, words, entries)

    def _label_scores(
        self, reqs: list[ClassifyRequest], words: list[list[str]], entries: dict[str, Entry]
    ) -> list[list[float]]:
        """Summed log-likelihood of every label word of every request (the scoring core picks the path)."""
        ids = [with_bos(self.fm, self._input_ids(r.text)) for r in reqs]
        pairs = [[Encoded(x, self._target_ids(r.text[-1:], w)) for w in ws]
                 for r, x, ws in zip(reqs, ids, words, strict=True)]
        prompts = [self._entry(entries, r.task).prompt for r in reqs]
        return score_encoded(self.fm, pairs, prompts, self.batch_size, self._prefixes)

    # ------------------------------------------------------------------------------------------- generate

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerateRequest | tuple], stop_at_newline: bool = True) -> list[str]:
        """Greedy continuations; requests may mix tasks. Tuples are (task, text) or (task, text, max_new_tokens).

        The scoring core's decoder on the registry's cached prefixes: stops at EOS, at a newline when
        `stop_at_newline`, or at the request's `max_new_tokens`, exactly as `scoring.generate` does.
        """
        reqs = [r if isinstance(r, GenerateRequest) else GenerateRequest(*r) for r in requests]
        if not stop_at_newline:
            reqs = [GenerateRequest(r.task, r.text, r.max_new_tokens, False, r.watcher) for r in reqs]
        return [self.text(t) for t in self.generate_tokens(reqs)]

    @torch.no_grad()
    def generate_tokens(self, requests: Sequence[GenerateRequest]) -> list[list[int]]:
        """New token ids per request (EOS dropped where it stops one), in order; one decoder call per stop rule."""
        entries = self._entries  # one snapshot: a concurrent reload cannot change tasks mid-call
        prompts = [None if r.task is None else self._entry(entries, r.task).prompt for r in requests]
        ids = [with_bos(self.fm, self._input_ids(r.text)) for r in requests]
        out: list[list[int]] = [[] for _ in requests]
        for rule in sorted({(r.stop_at_newline, r.stop_at_eos) for r in requests}):
            idx = [i for i, r in enumerate(requests) if (r.stop_at_newline, r.stop_at_eos) == rule]
            tokens = generate_ids(self.fm, [ids[i] for i in idx], [prompts[i] for i in idx],
                                  [requests[i].max_new_tokens for i in idx], rule[0], batch_size=self.batch_size,
                                  prefixes=self._prefixes, watchers=[requests[i].watcher for i in idx],
                                  stop_at_eos=rule[1])
            for i, t in zip(idx, tokens, strict=True):
                out[i] = t
        return out

    def decode_rows(
        self, requests: Sequence[GenerateRequest], on_done: Callable[[int, list[int]], None]
    ) -> list[DecodeRow] | None:
        """The requests as rows of a continuous batch (`scoring.continuous`, driven by serve/batcher.py), on the
        registry's cached prefixes; `on_done(k, tokens)` when request k finishes. None where they must take
        the static decoder (`generate_tokens`) instead: a request without a prompt, a seq2seq model or one
        with an attention window, an input whose BOS cannot sit in the prefix."""
        if not RunningBatch.supports(self.fm) or any(r.task is None for r in requests):
            return None
        entries = self._entries
        prompts = [self._entry(entries, r.task).prompt for r in requests]
        ids = [with_bos(self.fm, self._input_ids(r.text)) for r in requests]
        check_context(self.fm, [p.length for p in prompts], [len(x) for x in ids], [r.max_new_tokens for r in requests],
                      "new")
        bare, on_prefix = cached_inputs(self.fm, ids)
        if not all(on_prefix):
            return None
        return [DecodeRow(b, self._prefixes.get(p), r.max_new_tokens, StopRule(r.stop_at_newline, r.stop_at_eos),
                          r.watcher, on_done=lambda tokens, k=k: on_done(k, tokens))
                for k, (r, p, b) in enumerate(zip(requests, prompts, bare, strict=True))]

    def text(self, tokens: list[int]) -> str:
        """Generated tokens as the answer text `generate` gives."""
        return self.fm.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    def input_tokens(self, text: str) -> int:
        """Tokens of `text` as a request's input (BOS included when the tokenizer adds it, after cutting)."""
        return len(with_bos(self.fm, self._input_ids(text)))

    # ------------------------------------------------------------------------------------------- helpers

    def _input_ids(self, text: str) -> list[int]:
        """Input token ids without BOS (it goes back in front after cutting), cut if configured."""
        ids = strip_bos(self.fm, self.fm.tokenizer(text).input_ids)
        return ids if self.max_input_tokens is None else cut_input(ids, self.max_input_tokens)

    def _target_ids(self, last_char: str, word: str) -> list[int]:
        """A label word's token ids as `scoring` tokenizes it (the leading space depends only on the input's
        last character, hence the cache key)."""
        key = (last_char, word)
        if key not in self._label_cache:
            self._label_cache[key] = encode_pair(self.fm, last_char, word).target_ids
        ids = self._label_cache[key]
        if not ids:
            raise EngineError(f"label word {word!r} has no tokens")
        return ids
