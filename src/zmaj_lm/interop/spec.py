"""What a family mapping is made of: a ``{}``-templated name map plus a few named transforms.

A family's weight map is a dict from a Hugging Face tensor name template to what it becomes in our
checkpoint (as in torchtitan's ``state_dict_adapter``). ``{}`` stands for the layer index (and, in
expert names, the expert index after it). The value is

* a ``str``: the same tensor under our name (the common case, almost identity for Llama-likes);
* ``None``: a tensor transformers stores that carries no weights (rotary ``inv_freq``, GPT-2's
  causal ``attn.bias`` buffer); dropped on import, never written on export;
* :class:`Transposed`: GPT-2's ``Conv1D`` stores ``(in, out)``, ``nn.Linear`` ``(out, in)``;
* :class:`Split`: one HF tensor is several of ours concatenated (GPT-2's fused ``c_attn``);
* :class:`Stacked`: one HF tensor per expert becomes one ``(E, ...)`` tensor of ours.

Export inverts the same map, so the two directions cannot drift apart. Entries listed in a family's
``import_only`` set are alternative layouts accepted on import (e.g. experts already fused the way
transformers 5 holds them in memory) but never written.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from zmaj_lm.config.model import ModelConfig


class ConversionError(ValueError):
    """A checkpoint or config cannot be converted; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Transposed:
    """The HF tensor is ours transposed (GPT-2 ``Conv1D`` weights)."""

    ours: str


@dataclass(frozen=True)
class Split:
    """The HF tensor is ``cat(ours..., dim)`` (after transposing it when ``transpose``).

    Part sizes come from our model's expected shapes, so GQA-sized q/k/v splits need no arithmetic
    here.
    """

    ours: tuple[str, ...]
    dim: int = 0
    transpose: bool = False


@dataclass(frozen=True)
class Stacked:
    """HF stores one tensor per expert (the template's last ``{}``); ours stacks them on dim 0."""

    ours: str


Target = str | None | Transposed | Split | Stacked


@dataclass(frozen=True)
class Family:
    """Everything that distinguishes one transformers architecture from another, as data.

    ``config_from_hf`` turns a ``config.json`` mapping into our :class:`ModelConfig` (raising
    :class:`ConversionError` for settings we cannot express); ``config_to_hf`` does the reverse
    for a config that ``unsupported`` accepted. ``unsupported`` lists, in words, every feature of
    a config that this family cannot express (empty when the family can export it).
    """

    model_type: str
    architecture: str
    weights: dict[str, Target]
    config_from_hf: Callable[[dict[str, object]], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict[str, object]]
    unsupported: Callable[[ModelConfig], list[str]]
    import_only: frozenset[str] = field(default_factory=frozenset)
    legacy_prefix: str | None = None
    """Prefix that old checkpoints omit (GPT-2's original upload has ``h.0...`` for
    ``transformer.h.0...``); on import a key without it is matched as if it had it."""


def template_regex(template: str) -> re.Pattern[str]:
    """``"a.{}.b"`` -> a regex matching ``a.<int>.b`` and capturing each index."""
    return re.compile("^" + re.escape(template).replace(r"\{\}", r"(\d+)") + "$")


def fill(template: str, indices: tuple[str, ...]) -> str:
    """Substitute ``indices`` for the ``{}`` placeholders of ``template``, left to right."""
    return template.format(*indices)


def target_names(target: Target) -> tuple[str, ...]:
    """Our name templates a target writes."""
    if target is None:
        return ()
    if isinstance(target, str):
        return (target,)
    if isinstance(target, Split):
        return target.ours
    return (target.ours,)
