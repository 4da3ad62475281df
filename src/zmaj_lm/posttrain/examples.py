"""Post-training examples from the arithmetic generator, local files or Hub datasets.

Three shapes, all with prompts as chat messages:

* :class:`SFTExample` (a conversation; a prompt/completion pair becomes user + assistant turns),
* :class:`PreferenceExample` (prompt, chosen, rejected),
* :class:`PromptExample` (prompt and the reference answer rewards check against).

Train and validation are split by a hash of the example, as the pretraining corpus is, so an
example never lands on both sides. A malformed record raises :class:`ExampleError` naming the
file, the row and the field.
"""

import glob
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zmaj_lm.config.posttrain import ExamplesConfig
from zmaj_lm.data.sources import arithmetic, split_of
from zmaj_lm.posttrain.chat import prompt_messages

Split = Literal["train", "validation"]


class ExampleError(ValueError):
    """A record cannot be read as an example; ``str`` names file, row, field and reason."""


@dataclass(frozen=True)
class SFTExample:
    """A conversation; assistant turns are supervised."""

    messages: list[dict[str, Any]]
    answer: str | None = None
    """The expected final answer when known (arithmetic), for the accuracy check."""


@dataclass(frozen=True)
class PreferenceExample:
    """A prompt with a preferred and a dispreferred completion."""

    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str


@dataclass(frozen=True)
class PromptExample:
    """A prompt and the answer rewards compare completions against."""

    prompt: list[dict[str, Any]]
    answer: str


def _records(cfg: ExamplesConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for each raw record of a ``files`` or ``hf`` source."""
    for count, (where, record) in enumerate(_raw_records(cfg)):
        if cfg.max_examples is not None and count >= cfg.max_examples:
            return
        yield where, record


def _raw_records(cfg: ExamplesConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    if cfg.kind == "hf":
        import datasets

        try:
            ds = datasets.load_dataset(cfg.name, cfg.subset, split=cfg.split, streaming=True)
        except Exception as exc:
            raise ExampleError(f"{cfg.name}: cannot load dataset: {exc}") from exc
        for i, row in enumerate(ds):
            yield f"{cfg.name}: row {i}", dict(row)
        return
    files: list[Path] = []
    for pattern in cfg.paths:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise ExampleError(f"{pattern}: no such file")
        files.extend(Path(m) for m in matches)
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            import datasets

            ds = datasets.load_dataset("parquet", data_files=[str(path)], split="train")
            for i, row in enumerate(ds):
                yield f"{path}: row {i}", dict(row)
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ExampleError(f"{path}: cannot read: {exc}") from exc
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ExampleError(f"{path}: invalid JSON: {exc.msg} (line {exc.lineno})") from exc
            for i, row in enumerate(rows):
                yield f"{path}: row {i}", _as_record(row, f"{path}: row {i}")
            continue
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ExampleError(f"{path}: line {line_no}: invalid JSON: {exc.msg}") from exc
            yield f"{path}: line {line_no}", _as_record(row, f"{path}: line {line_no}")


def _as_record(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ExampleError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def _field(record: Mapping[str, Any], name: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if name not in record:
        columns = ", ".join(sorted(record)) or "none"
        raise ExampleError(f"{where}: {name}: missing (columns: {columns})")
    value = record[name]
    if not isinstance(value, kind):
        raise ExampleError(
            f"{where}: {name}: expected {_kind_name(kind)}, got {type(value).__name__}"
        )
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("a string" if k is str else "a list of messages" for k in kinds)


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ExampleError(f"{where}: expected a non-empty list of messages")
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ExampleError(f"{where}: message {j}: needs a string 'role'")
        if not isinstance(m.get("content"), str):
            raise ExampleError(f"{where}: message {j}: needs a string 'content'")
        out.append(dict(m))
    return out


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


def _keep(text: str, cfg: ExamplesConfig, split: Split) -> bool:
    return split_of(text, cfg.validation_fraction) == split


def problems(cfg: ExamplesConfig, split: Split) -> Iterator[arithmetic.Problem]:
    """Arithmetic problems of one split."""
    for problem in arithmetic.generate(cfg.arithmetic, cfg.seed, cfg.num_examples):
        if _keep(problem.text, cfg, split):
            yield problem


def sft_examples(cfg: ExamplesConfig, split: Split) -> Iterator[SFTExample]:
    """Conversations of one split."""
    if cfg.kind == "arithmetic":
        for p in problems(cfg, split):
            messages = prompt_messages(p.prompt, cfg.system_prompt)
            messages.append({"role": "assistant", "content": p.answer})
            yield SFTExample(messages, answer=p.answer)
        return
    for where, record in _records(cfg):
        if cfg.messages_field in record:
            messages = _messages(record[cfg.messages_field], f"{where}: {cfg.messages_field}")
            messages = prompt_messages(messages, cfg.system_prompt)
            answer = None
        else:
            prompt = _field(record, cfg.prompt_field, where, (str, list))
            completion = _field(record, cfg.completion_field, where, str)
            if isinstance(prompt, list):
                prompt = _messages(prompt, f"{where}: {cfg.prompt_field}")
            messages = prompt_messages(prompt, cfg.system_prompt)
            messages.append({"role": "assistant", "content": completion})
            answer = completion
        if not any(m["role"] == "assistant" for m in messages):
            raise ExampleError(f"{where}: no assistant message to learn from")
        if _keep(_key(messages), cfg, split):
            yield SFTExample(messages, answer=answer)


def preference_examples(
    cfg: ExamplesConfig, split: Split, pairs_per_problem: int = 1
) -> Iterator[PreferenceExample]:
    """Preference pairs of one split; arithmetic pairs the answer with near misses."""
    if cfg.kind == "arithmetic":
        for p in problems(cfg, split):
            digest = hashlib.blake2b(p.text.encode(), digest_size=8).digest()
            rng = np.random.default_rng([cfg.seed, int.from_bytes(digest, "little")])
            prompt = prompt_messages(p.prompt, cfg.system_prompt)
            for wrong in arithmetic.wrong_answers(p, pairs_per_problem, rng):
                yield PreferenceExample(prompt, p.answer, wrong)
        return
    for where, record in _records(cfg):
        prompt = _field(record, cfg.prompt_field, where, (str, list))
        if isinstance(prompt, list):
            prompt = _messages(prompt, f"{where}: {cfg.prompt_field}")
        chosen = _field(record, cfg.chosen_field, where, str)
        rejected = _field(record, cfg.rejected_field, where, str)
        messages = prompt_messages(prompt, cfg.system_prompt)
        if _keep(_key(messages), cfg, split):
            yield PreferenceExample(messages, chosen, rejected)


def prompt_examples(cfg: ExamplesConfig, split: Split) -> Iterator[PromptExample]:
    """Prompts with reference answers of one split."""
    if cfg.kind == "arithmetic":
        for p in problems(cfg, split):
            yield PromptExample(prompt_messages(p.prompt, cfg.system_prompt), p.answer)
        return
    for where, record in _records(cfg):
        prompt = _field(record, cfg.prompt_field, where, (str, list))
        if isinstance(prompt, list):
            prompt = _messages(prompt, f"{where}: {cfg.prompt_field}")
        answer = record.get(cfg.answer_field)
        if not isinstance(answer, (str, int)):
            raise ExampleError(f"{where}: {cfg.answer_field}: missing or not a string")
        messages = prompt_messages(prompt, cfg.system_prompt)
        if _keep(_key(messages), cfg, split):
            yield PromptExample(messages, str(answer))


def take(it: Iterator[Any], n: int | None) -> list[Any]:
    """The first ``n`` items (all when ``n`` is None)."""
    out: list[Any] = []
    for item in it:
        if n is not None and len(out) >= n:
            break
        out.append(item)
    return out
