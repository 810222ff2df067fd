"""The serving engine: one frozen model, a registry of prompts (one per task), batches that mix tasks.

For decoder-only models a prompt's keys and values never depend on the input (it comes first), so each
prompt's prefix (BOS + prompt) runs once, when it is registered, and every request reuses its KV: request
cost is the input's tokens, whatever P is. A batch mixing tasks stacks the examples' prefixes into one
cache (layout.py); classification scores every label word of a request in one packed row
(packed_scoring.py). Seq2seq models take the plain path through `scoring` (the encoder must see prompt and
input together), and so do requests longer than a sliding attention window (Gemma-3's local layers): the
cached layouts build their own masks, which are exact only inside the window.

    >>> engine = Engine(fm, prompts_dir="prompts/")          # sst2.safetensors -> task "sst2"
    >>> engine.classify([("sst2", "sentence: a gem ."), ("rte", "premise: ... hypothesis: ...")])
    [Classification(task='sst2', label='positive', ...), Classification(task='rte', ...)]
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from softprompt.model.frozen import FrozenModel
from softprompt.model.prompt import PromptFileError, SoftPrompt
from softprompt.scoring.inputs import cut_input
from softprompt.scoring.layout import generate_layout, padded_prefix_cache, split_by_length
from softprompt.scoring.logprobs import (
    Encoded,
    InputTooLongError,
    encode_pair,
    generate_ids,
    generation_stopped,
    head_logits,
    score_encoded,
    trim_at_eos,
)
from softprompt.scoring.packed import fits_window, packed_choice_scores
from softprompt.scoring.prefix import PrefixState, base_model, prepend_bos, run_prefix


class EngineError(ValueError):
    """A request the engine cannot serve (unknown task, no label words); the message says which."""


@dataclass
class ClassifyRequest:
    """Classify `text` with task `task`'s prompt; `label_words` overrides the prompt's own."""

    task: str
    text: str
    label_words: Sequence[str] | None = None


@dataclass
class GenerateRequest:
    """Greedy continuation of `text` with task `task`'s prompt, at most `max_new_tokens` tokens."""

    task: str
    text: str
    max_new_tokens: int = 32


@dataclass
class Classification:
    """One answer: the best label, softmax probabilities over the label words, and their summed log-likelihoods."""

    task: str
    label: str
    probs: dict[str, float]
    scores: dict[str, float]


@dataclass
class Entry:
    """A registered prompt: the prompt, its label words, its cached prefix (causal models), where it came from."""

    name: str
    prompt: SoftPrompt
    label_words: list[str] | None
    state: PrefixState | None
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
        return entry

    def remove(self, name: str) -> None:
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if k != name}

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
                except PromptFileError as err:
                    self.skipped[path.name] = str(err)
                    report.skipped[path.name] = str(err)
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
        return report

    def _make_entry(self, name: str, prompt: SoftPrompt, label_words: Sequence[str] | None, source: Path | None) -> Entry:
        prompt.check_fits(self.fm, source=str(source) if source else f"prompt {name!r}")
        words = list(label_words) if label_words is not None else prompt.metadata.get("label_words")
        if words is not None and (not isinstance(words, list) or not all(isinstance(w, str) and w for w in words)):
            raise PromptFileError(f"{source or name}: metadata label_words must be a list of non-empty strings, got {words!r}")
        return Entry(name, prompt, words, None if self.fm.is_seq2seq else self._prefix(prompt), source)

    @torch.no_grad()
    def _prefix(self, prompt: SoftPrompt) -> PrefixState:
        """Run BOS (when the tokenizer adds one: the prompt goes after it) + prompt once; keep its KV."""
        rows = prompt.as_input(self.fm.dtype, self.fm.device)
        return run_prefix(self.fm, prepend_bos(self.fm, rows) if self.fm.adds_bos else rows)

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
        """Summed log-likelihood of every label word of every request: packed rows on the cached prefixes
        (packed_scoring.py) where those are exact; the plain path (`scoring.score_encoded`) for seq2seq
        models and for requests that do not fit a sliding attention window."""
        ids = [self._input_ids(r.text) for r in reqs]
        targets = [[self._target_ids(r.text[-1:], w) for w in ws] for r, ws in zip(reqs, words, strict=True)]
        tasks = [self._entry(entries, r.task) for r in reqs]
        longest = [max(len(t) for t in ts) for ts in targets]
        cached: list[int] = []
        if not self.fm.is_seq2seq:
            for i, e in enumerate(tasks):
                self._check_fits(e.state.length, len(ids[i]), longest[i])
            cached = [i for i, e in enumerate(tasks) if fits_window(self.fm, e.state.length, len(ids[i]), longest[i])]
        result: list[list[float]] = [[] for _ in reqs]
        for i, scores in zip(cached, packed_choice_scores(
                self.fm, [ids[i] for i in cached], [targets[i] for i in cached], [tasks[i].state for i in cached],
                self.batch_size), strict=True):
            result[i] = scores
        plain = sorted(set(range(len(reqs))) - set(cached))
        if plain:
            pairs = [[Encoded(self._with_bos(ids[i]), t) for t in targets[i]] for i in plain]
            prompts = [tasks[i].prompt for i in plain]
            for i, scores in zip(plain, score_encoded(self.fm, pairs, prompts, self.batch_size), strict=True):
                result[i] = scores
        return result

    # ------------------------------------------------------------------------------------------- generate

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerateRequest | tuple], stop_at_newline: bool = True) -> list[str]:
        """Greedy continuations; requests may mix tasks. Tuples are (task, text) or (task, text, max_new_tokens).

        The cache holds prefix + input + generated tokens throughout (PEFT #2123 dropped the prompt).
        Stops at EOS, or a newline when `stop_at_newline`, exactly as `scoring.generate` does.
        """
        reqs = [r if isinstance(r, GenerateRequest) else GenerateRequest(*r) for r in requests]
        if not reqs:
            return []
        entries = self._entries
        tasks = [self._entry(entries, r.task) for r in reqs]
        prompts = [e.prompt for e in tasks]
        out: list[str] = [""] * len(reqs)
        ids = [self._input_ids(r.text) for r in reqs]
        if self.fm.is_seq2seq:  # the encoder must see prompt and input together: no cached prefix
            tokens = self._generate_plain(ids, prompts, [r.max_new_tokens for r in reqs], stop_at_newline)
            return [self.fm.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
        states = [e.state for e in tasks]
        for i, s in enumerate(states):
            self._check_fits(s.length, len(ids[i]), reqs[i].max_new_tokens)
        for chunk in split_by_length([len(x) for x in ids], self.batch_size):
            limits = [reqs[i].max_new_tokens for i in chunk]
            # The padded cache's slots count against a sliding window as if they were tokens: cached only
            # when the whole padded batch, generated tokens included, fits inside it.
            longest = max(states[i].length for i in chunk) + max(len(ids[i]) for i in chunk) + max(limits)
            if fits_window(self.fm, longest, 0, 0):
                tokens = self._generate_batch([ids[i] for i in chunk], [states[i] for i in chunk], limits,
                                              stop_at_newline)
            else:
                tokens = self._generate_plain([ids[i] for i in chunk], [prompts[i] for i in chunk], limits,
                                              stop_at_newline)
            for i, t in zip(chunk, tokens, strict=True):
                out[i] = self.fm.tokenizer.decode(t, skip_special_tokens=True).strip()
        return out

    def _generate_plain(
        self, ids: list[list[int]], prompts: list[SoftPrompt], limits: list[int], stop_nl: bool
    ) -> list[list[int]]:
        """The uncached path (seq2seq; beyond a sliding window, where the model builds its own masks): one
        call per distinct limit and batch."""
        out: list[list[int]] = [[] for _ in ids]
        for limit in sorted(set(limits)):
            same = [b for b, n in enumerate(limits) if n == limit]
            for start in range(0, len(same), self.batch_size):
                idx = same[start: start + self.batch_size]
                tokens = generate_ids(self.fm, [self._with_bos(ids[b]) for b in idx], [prompts[b] for b in idx], limit, stop_nl)
                for b, t in zip(idx, tokens, strict=True):
                    out[b] = t
        return out

    def _generate_batch(
        self, ids: list[list[int]], states: list[PrefixState], limits: list[int], stop_nl: bool
    ) -> list[list[int]]:
        fm = self.fm
        body = base_model(fm)
        tokens, mask, positions = generate_layout(ids, [s.length for s in states], fm.tokenizer.pad_token_id)
        cache, prefix_mask = padded_prefix_cache(fm, states)
        attention = torch.cat([prefix_mask, mask.to(fm.device)], dim=1)
        hidden = body(inputs_embeds=fm.embed(tokens), attention_mask=attention, position_ids=positions.to(fm.device),
                      cache=cache, use_cache=True).last_hidden_state[:, -1]  # [B, H]: left padding, last column
        empty = torch.tensor([not x for x in ids], device=fm.device)
        if empty.any():  # no input tokens: the prefix's own last state predicts the first token
            hidden = torch.where(empty[:, None], torch.cat([s.last_hidden[:, 0] for s in states]), hidden)
        next_pos = torch.tensor([s.length + len(x) for s, x in zip(states, ids, strict=True)], device=fm.device)
        generated: list[list[int]] = [[] for _ in ids]
        done = [limit <= 0 for limit in limits]
        for _ in range(max(limits, default=0)):
            next_ids = head_logits(fm, hidden).argmax(dim=-1)  # [B]
            for b, tok in enumerate(next_ids.tolist()):
                if not done[b]:
                    generated[b].append(tok)
                    done[b] = generation_stopped(fm, generated[b], stop_nl) or len(generated[b]) >= limits[b]
            if all(done):
                break
            attention = torch.cat([attention, attention.new_ones(len(ids), 1)], dim=1)
            hidden = body(inputs_embeds=fm.embed(next_ids[:, None]), attention_mask=attention,
                          position_ids=next_pos[:, None], cache=cache, use_cache=True).last_hidden_state[:, -1]
            next_pos = next_pos + 1
        return [trim_at_eos(fm, g) for g in generated]

    # ------------------------------------------------------------------------------------------- helpers

    def _input_ids(self, text: str) -> list[int]:
        """Input token ids without BOS (it sits in the cached prefix, before the prompt), cut if configured."""
        ids = self.fm.tokenizer(text).input_ids
        if self.fm.adds_bos and ids[:1] == [self.fm.tokenizer.bos_token_id]:
            ids = ids[1:]
        if self.max_input_tokens is not None:
            ids = cut_input(ids, self.max_input_tokens)
        return ids

    def _with_bos(self, ids: list[int]) -> list[int]:
        """Input ids as the plain (uncached) path takes them: BOS back in front, where the tokenizer puts it."""
        return [self.fm.tokenizer.bos_token_id, *ids] if self.fm.adds_bos else ids

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

    def _check_fits(self, prefix: int, n_input: int, n_target: int) -> None:
        limit = self.fm.context_size()
        if limit is not None and prefix + n_input + n_target > limit:
            raise InputTooLongError(
                f"prefix ({prefix}) + input ({n_input}) + target ({n_target}) tokens > the model's context of "
                f"{limit}; shorten the input or set Engine(max_input_tokens=...)"
            )

