"""Conversations -> token ids plus the mask of assistant tokens that SFT is supervised on.

Many chat templates (Qwen3's among them, #1522) have no ``{% generation %}`` markers, so the
assistant tokens cannot be asked of the template. We find them by rendering prefixes instead:
for each assistant turn ``i``,

* ``render(messages[:i], add_generation_prompt=True)`` ends where the assistant's text begins
  (after the role header the template writes for a new assistant turn), and
* ``render(messages[:i + 1])`` ends after turn ``i`` (its end-of-turn marker included).

The difference is exactly what the model must write for turn ``i``. Templates that render an
earlier turn differently once later turns exist (Qwen3 drops old ``<think>`` blocks) break the
prefix property; then the turn's text is searched for in the full rendering, and an example whose
turn cannot be located is refused rather than silently mis-masked.

The rendered text is tokenised segment by segment (prompt segments and assistant segments
separately), the way generation sees it: a prompt is encoded, then the model appends tokens.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmaj_lm.config.posttrain import ChatConfig
from zmaj_lm.data.tokenizer import Tokenizer
from zmaj_lm.interop.chat_template import (
    ChatTemplateError,
    load_chat_template,
    load_special_tokens,
    render_chat_template,
)

BUILTIN_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""Template for models trained from scratch with the data pipeline's special tokens
(``<|system|> <|user|> <|assistant|> <|end|>``)."""

Message = Mapping[str, Any]


class ChatError(ValueError):
    """A conversation cannot be rendered or masked; the message says which turn and why."""


@dataclass(frozen=True)
class TokenizedChat:
    """Token ids and, per token, whether it is a supervised (assistant) target.

    ``ids`` (L,) and ``target`` (L,): ``target[j]`` means the model is trained to predict
    ``ids[j]`` from ``ids[:j]``. ``segments`` keeps the rendered text pieces with their flag, for
    auditing.
    """

    ids: list[int]
    target: list[bool]
    segments: list[tuple[str, bool]]

    @property
    def num_targets(self) -> int:
        return sum(self.target)


class ChatFormat:
    """A chat template, the special tokens it may reference, and the tokenizer.

    ``template`` text, or None for the tokenizer directory's own (falling back to
    :data:`BUILTIN_TEMPLATE`).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        template: str,
        special_tokens: Mapping[str, str] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.special_tokens = dict(special_tokens or {})
        self.template_kwargs = dict(template_kwargs or {})

    @classmethod
    def from_config(
        cls, tokenizer: Tokenizer, cfg: ChatConfig, tokenizer_dir: Path | None
    ) -> "ChatFormat":
        """The template of ``cfg``, else the tokenizer directory's, else the built-in one."""
        specials: dict[str, str] = {}
        if tokenizer_dir is not None:
            specials = load_special_tokens(tokenizer_dir)
        template: str | None = None
        if cfg.template is not None:
            path = Path(cfg.template)
            is_file = "{" not in cfg.template and len(cfg.template) < 4096 and path.is_file()
            template = path.read_text(encoding="utf-8") if is_file else cfg.template
        elif tokenizer_dir is not None:
            try:
                template = load_chat_template(tokenizer_dir)
            except ChatTemplateError:
                template = None
        if template is None:
            template = BUILTIN_TEMPLATE
        for name, token in (
            ("bos_token", tokenizer.bos_token),
            ("eos_token", tokenizer.eos_token),
            ("pad_token", tokenizer.pad_token),
        ):
            if token is not None:
                specials.setdefault(name, token)
        return cls(tokenizer, template, specials, cfg.template_kwargs)

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
        """The template's text for ``messages``."""
        try:
            return render_chat_template(
                self.template,
                messages,
                add_generation_prompt=add_generation_prompt,
                special_tokens=self.special_tokens,
                **self.template_kwargs,
            )
        except ChatTemplateError as exc:
            raise ChatError(str(exc)) from exc

    def encode(self, text: str) -> list[int]:
        """Ids of rendered text (special-token strings become their ids)."""
        return self.tokenizer.encode(text, special=True)

    def segments(self, messages: Sequence[Message]) -> list[tuple[str, bool]]:
        """The full rendering cut into ``(text, is_assistant)`` pieces (see module docstring)."""
        if not messages:
            raise ChatError("conversation: no messages")
        for i, m in enumerate(messages):
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ChatError(f"message {i}: needs string 'role' and 'content'")
        full = self.render(messages)
        spans: list[tuple[int, int]] = []
        cursor = 0
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self._header_before(messages, i)
            upto = self.render(messages[: i + 1])
            start, end = self._turn_span(before, upto, full, cursor, i, m["content"])
            spans.append((start, end))
            cursor = end
        pieces: list[tuple[str, bool]] = []
        pos = 0
        for start, end in spans:
            if start > pos:
                pieces.append((full[pos:start], False))
            pieces.append((full[start:end], True))
            pos = end
        if pos < len(full):
            pieces.append((full[pos:], False))
        return pieces

    def _header_before(self, messages: Sequence[Message], i: int) -> str:
        """Text before turn ``i``'s content: the earlier turns plus the assistant header."""
        try:
            return self.render(messages[:i], add_generation_prompt=True)
        except ChatError:
            if i == 0:
                return ""
            raise

    @staticmethod
    def _turn_span(
        before: str, upto: str, full: str, cursor: int, turn: int, content: str
    ) -> tuple[int, int]:
        """Span of assistant turn ``turn`` in ``full``.

        ``before`` (the conversation up to the turn plus the assistant header) must be a prefix
        of ``full``; the turn's text is then what ``upto`` adds to it, or, when the template
        drops something from the front of the turn once later turns exist (Qwen3 drops old
        reasoning), the longest tail of it that ``full`` continues with, provided the tail still
        holds the message's content.
        """
        if len(before) < cursor or not full.startswith(before) or not upto.startswith(before):
            raise ChatError(
                f"message {turn}: the template renders the conversation before this assistant "
                "turn differently once the turn is added; its tokens cannot be located"
            )
        start = len(before)
        text = upto[start:]
        for k in range(len(text)):
            tail = text[k:]
            if full.startswith(tail, start) and content.strip() in tail:
                return start, start + len(tail)
        raise ChatError(
            f"message {turn}: the template renders this assistant turn differently inside the "
            "whole conversation; its tokens cannot be located"
        )

    def tokenize(self, messages: Sequence[Message]) -> TokenizedChat:
        """Token ids of the whole conversation and the assistant-target mask."""
        pieces = self.segments(messages)
        ids: list[int] = []
        target: list[bool] = []
        for text, is_assistant in pieces:
            piece_ids = self.encode(text)
            ids.extend(piece_ids)
            target.extend([is_assistant] * len(piece_ids))
        return TokenizedChat(ids=ids, target=target, segments=pieces)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Ids of ``messages`` followed by the template's assistant header (for generation)."""
        return self.encode(self.render(messages, add_generation_prompt=True))

    def completion_ids(self, prompt: Sequence[Message], completion: str) -> list[int]:
        """Ids the model must write to answer ``prompt`` with ``completion`` (end of turn
        included), tokenised as :meth:`tokenize` does."""
        messages = [*prompt, {"role": "assistant", "content": completion}]
        pieces = self.segments(messages)
        assistant = [text for text, flag in pieces if flag]
        return self.encode(assistant[-1])

    def stop_token_ids(self) -> list[int]:
        """Tokens that end an assistant turn: the first token after a probe answer's text, and
        EOS."""
        probe = self.completion_ids([{"role": "user", "content": "1"}], "2")
        answer = self.encode("2")
        stops = {self.tokenizer.eos_id}
        if len(probe) > len(answer) and probe[: len(answer)] == answer:
            stops.add(probe[len(answer)])
        return sorted(stops)


def prompt_messages(prompt: str | Sequence[Message], system: str | None) -> list[dict[str, Any]]:
    """A prompt (a string or messages) as messages, with ``system`` prepended when missing."""
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if system is not None and (not messages or messages[0].get("role") != "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def audit_text(chat: TokenizedChat, *, open_mark: str = "[[", close_mark: str = "]]") -> str:
    """The rendered conversation with supervised pieces wrapped in markers."""
    return "".join(f"{open_mark}{t}{close_mark}" if flag else t for t, flag in chat.segments)
