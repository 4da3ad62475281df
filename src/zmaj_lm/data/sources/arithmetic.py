"""The ``arithmetic`` corpus: integer problems whose answers can be checked.

A :class:`Problem` keeps the prompt (``"12+35="``) and the answer (``"47"``) apart, which SFT
(loss on the answer only), DPO (a correct and a :func:`wrong_answers` completion) and GRPO
(reward from :func:`is_correct`) need. As a pretraining corpus each document is
``prompt + answer``. Train and validation are split by a hash of that text, so a problem never
appears on both sides. A document's source label is its operation (:data:`OP_LABELS`), so the
validation loss is broken down into addition, subtraction and multiplication.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from zmaj_lm.config.data import ArithmeticConfig, SourceConfig

_BLOCK = 1024
_LEADING_INT = re.compile(r"\s*(-?\d+)")
OP_LABELS = {"+": "add", "-": "sub", "*": "mul"}
"""Source label of a problem by its operator (readable in metric names)."""


@dataclass(frozen=True)
class Problem:
    """``a op b``; :attr:`prompt` is what the model sees, :attr:`answer` what it should write."""

    a: int
    op: str
    b: int

    @property
    def value(self) -> int:
        """The exact result."""
        if self.op == "+":
            return self.a + self.b
        if self.op == "-":
            return self.a - self.b
        if self.op == "*":
            return self.a * self.b
        raise ValueError(f"unknown operation {self.op!r}")

    @property
    def prompt(self) -> str:
        """The question, e.g. ``"12+35="``."""
        return f"{self.a}{self.op}{self.b}="

    @property
    def answer(self) -> str:
        """The correct completion, e.g. ``"47"``."""
        return str(self.value)

    @property
    def text(self) -> str:
        """Prompt and answer as one pretraining document."""
        return self.prompt + self.answer


def generate(cfg: ArithmeticConfig, seed: int, n: int) -> Iterator[Problem]:
    """``n`` problems, drawn in blocks of 1024 from ``default_rng([seed, block])``.

    A block is always drawn whole, so the first ``k`` problems do not depend on ``n``.
    """
    ops = list(cfg.operations)
    for block, start in enumerate(range(0, n, _BLOCK)):
        m = min(_BLOCK, n - start)
        rng = np.random.default_rng([seed, block, 0xA817])
        a = rng.integers(0, cfg.max_operand + 1, size=_BLOCK)
        b = rng.integers(0, cfg.max_operand + 1, size=_BLOCK)
        o = rng.integers(0, len(ops), size=_BLOCK)
        for i in range(m):
            yield Problem(int(a[i]), ops[int(o[i])], int(b[i]))


def iter_documents(source: SourceConfig) -> Iterator[str]:
    """``source.num_documents`` problems as ``prompt + answer`` strings."""
    for problem in generate(source.arithmetic, source.seed, source.num_documents):
        yield problem.text


def iter_labelled(source: SourceConfig) -> Iterator[tuple[str, str]]:
    """The documents of :func:`iter_documents` with their operation's label (``add``...)."""
    for problem in generate(source.arithmetic, source.seed, source.num_documents):
        yield problem.text, OP_LABELS[problem.op]


def iter_problems(source: SourceConfig, split: str) -> Iterator[Problem]:
    """Problems of one split (``train`` or ``validation``), with prompt and answer apart."""
    from zmaj_lm.data.sources import split_of

    for problem in generate(source.arithmetic, source.seed, source.num_documents):
        if split_of(problem.text, source.validation_fraction) == split:
            yield problem


def parse_answer(completion: str) -> int | None:
    """The integer a completion starts with (leading spaces allowed), or None."""
    match = _LEADING_INT.match(completion)
    return int(match.group(1)) if match else None


def is_correct(problem: Problem, completion: str) -> bool:
    """True when ``completion`` starts with the right integer (``"47"``, ``" 47<|end|>"``)."""
    return parse_answer(completion) == problem.value


def wrong_answers(problem: Problem, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct plausible wrong answers: off by one or ten, digits swapped, wrong operator.

    Near misses make DPO pairs informative; random offsets fill up when those run out.
    """
    value = problem.value
    candidates = [value + d for d in (1, -1, 10, -10, 2, -2, 100, -100)]
    digits = str(abs(value))
    if len(digits) > 1:
        swapped = int(digits[::-1]) * (-1 if value < 0 else 1)
        candidates.append(swapped)
    for op in "+-*":
        if op != problem.op:
            candidates.append(Problem(problem.a, op, problem.b).value)
    order = rng.permutation(len(candidates))
    out: list[str] = []
    seen = {value}
    for i in order:
        c = candidates[int(i)]
        if c not in seen:
            seen.add(c)
            out.append(str(c))
        if len(out) == n:
            return out
    scale = max(10, abs(value))
    while len(out) < n:
        c = value + int(rng.integers(-scale, scale + 1))
        if c not in seen:
            seen.add(c)
            out.append(str(c))
    return out
