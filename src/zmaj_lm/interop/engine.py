"""The one conversion engine: applies a family's name map in either direction, tensor by tensor.

Import (HF -> ours) walks the HF tensors as they come out of the safetensors files; export
(ours -> HF) walks our checkpoint and yields HF tensors for a shard writer. Only tensors that must
be combined (a split QKV, one layer's experts) are held back until their siblings arrive, so peak
memory stays near one copy of the model on import and near one shard on export.

Every tensor is accounted for: names no rule matches, tensors our model does not have, shapes
that differ from what our config implies, and tensors the checkpoint lacks all become lines of one
:class:`ConversionError`. Nothing is dropped except what the map names as ``None``, nothing
invented, and dtypes pass through unchanged.
"""

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.interop.spec import (
    ConversionError,
    Family,
    Split,
    Stacked,
    Target,
    Transposed,
    fill,
    target_names,
    template_regex,
)
from zmaj_lm.models.transformer import Transformer

LM_HEAD = "lm_head.weight"
EMBED = "embed_tokens.weight"
_MAX_LISTED = 40


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our tensor names and shapes for ``config`` (tied LM head excluded), built on meta."""
    with torch.device("meta"):
        model = Transformer(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if config.tie_embeddings:
        shapes.pop(LM_HEAD, None)
    return shapes


def _listed(prefix: str, names: Iterable[str]) -> list[str]:
    """One problem line per name (at most ``_MAX_LISTED``, then a count)."""
    ordered = sorted(names)
    lines = [f"{prefix}: {n}" for n in ordered[:_MAX_LISTED]]
    if len(ordered) > _MAX_LISTED:
        lines.append(f"{prefix}: ... and {len(ordered) - _MAX_LISTED} more")
    return lines


@dataclass
class ImportResult:
    """Our state dict plus the HF tensors deliberately dropped (buffers the map names ``None``)."""

    state: dict[str, Tensor]
    dropped: list[str] = field(default_factory=list)


def _match_hf(
    rules: list[tuple[re.Pattern[str], Target]], name: str, legacy_prefix: str | None
) -> tuple[Target, tuple[str, ...]] | None:
    for candidate in (name, f"{legacy_prefix}{name}" if legacy_prefix else None):
        if candidate is None:
            continue
        for regex, target in rules:
            m = regex.match(candidate)
            if m:
                return target, m.groups()
    return None


def import_state(
    family: Family,
    config: ModelConfig,
    names: Iterable[str],
    get: Callable[[str], Tensor],
) -> ImportResult:
    """Map HF tensors ``names`` (loaded one at a time by ``get``) onto our names for ``config``."""
    expected = expected_shapes(config)
    rules = [(template_regex(t), target) for t, target in family.weights.items()]
    state: dict[str, Tensor] = {}
    source_of: dict[str, str] = {}
    problems: list[str] = []
    unexpected: list[str] = []
    dropped: list[str] = []
    stacks: dict[str, dict[int, Tensor]] = {}
    tied_head: Tensor | None = None

    def emit(ours: str, tensor: Tensor, hf_name: str) -> None:
        nonlocal tied_head
        if ours == LM_HEAD and config.tie_embeddings:
            tied_head = tensor
            return
        if ours not in expected:
            problems.append(f"{hf_name}: maps to {ours}, which this model config does not have")
            return
        if tuple(tensor.shape) != expected[ours]:
            problems.append(
                f"{hf_name}: shape {tuple(tensor.shape)} but {ours} needs {expected[ours]}"
            )
            return
        if ours in state:
            problems.append(f"{hf_name}: {ours} already came from {source_of[ours]}")
            return
        state[ours] = tensor
        source_of[ours] = hf_name

    for name in names:
        found = _match_hf(rules, name, family.legacy_prefix)
        if found is None:
            unexpected.append(name)
            continue
        target, idx = found
        if target is None:
            dropped.append(name)
            continue
        tensor = get(name)
        if isinstance(target, str):
            emit(fill(target, idx), tensor, name)
        elif isinstance(target, Transposed):
            emit(fill(target.ours, idx), tensor.t().contiguous(), name)
        elif isinstance(target, Split):
            ours_names = [fill(t, idx) for t in target.ours]
            missing = [n for n in ours_names if n not in expected]
            if missing:
                problems.append(f"{name}: maps to {missing}, which this model config does not have")
                continue
            whole = tensor.t() if target.transpose else tensor
            sizes = [expected[n][target.dim] for n in ours_names]
            if whole.dim() <= target.dim or whole.shape[target.dim] != sum(sizes):
                problems.append(
                    f"{name}: shape {tuple(tensor.shape)} cannot be split into {ours_names} "
                    f"of sizes {sizes} along dim {target.dim}"
                )
                continue
            for ours, part in zip(
                ours_names, torch.split(whole, sizes, dim=target.dim), strict=True
            ):
                emit(ours, part.clone(memory_format=torch.contiguous_format), name)
        else:
            ours = fill(target.ours, idx[:-1])
            if ours not in expected:
                problems.append(f"{name}: maps to {ours}, which this model config does not have")
                continue
            n_experts = expected[ours][0]
            expert = int(idx[-1])
            if expert >= n_experts:
                problems.append(f"{name}: expert {expert} but the config has {n_experts} experts")
                continue
            parts = stacks.setdefault(ours, {})
            parts[expert] = tensor
            if len(parts) == n_experts:
                emit(ours, torch.stack([parts[e] for e in range(n_experts)]), f"{name} (stacked)")
                del stacks[ours]

    for ours, got in stacks.items():
        absent = sorted(set(range(expected[ours][0])) - set(got))
        problems.append(f"{ours}: experts {absent} missing from the checkpoint")
    problems += _listed("unexpected tensor (no mapping rule)", unexpected)
    absent_names = set(expected) - set(state) - set(stacks)
    problems += _listed("missing tensor (our model needs it)", absent_names)
    if tied_head is not None and EMBED in state and not torch.equal(tied_head, state[EMBED]):
        problems.append(
            "lm_head.weight: differs from the token embedding although the config ties them "
            "(tie_word_embeddings)"
        )
    if problems:
        raise ConversionError(problems)
    return ImportResult(state=state, dropped=dropped)


def check_our_checkpoint(config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise if our checkpoint's tensors (``shapes``) are not exactly what ``config`` builds."""
    expected = expected_shapes(config)
    shapes = dict(shapes)
    if config.tie_embeddings:
        shapes.pop(LM_HEAD, None)
    problems = _listed("unexpected tensor (not in the model config)", set(shapes) - set(expected))
    problems += _listed("missing tensor", set(expected) - set(shapes))
    problems += [
        f"{n}: shape {shapes[n]} but the config needs {expected[n]}"
        for n in sorted(set(shapes) & set(expected))
        if shapes[n] != expected[n]
    ]
    if problems:
        raise ConversionError(problems)


def _reverse_rules(
    family: Family,
) -> list[tuple[re.Pattern[str], str, Target, int]]:
    rules: list[tuple[re.Pattern[str], str, Target, int]] = []
    for hf_template, target in family.weights.items():
        if hf_template in family.import_only or target is None:
            continue
        for i, ours in enumerate(target_names(target)):
            rules.append((template_regex(ours), hf_template, target, i))
    return rules


def plan_export(family: Family, names: Iterable[str]) -> None:
    """Raise if any of our tensor ``names`` has no HF name in ``family`` (a feature it lacks)."""
    rules = _reverse_rules(family)
    orphans = [n for n in names if not any(r[0].match(n) for r in rules)]
    if orphans:
        raise ConversionError(_listed(f"tensor {family.model_type} has no place for", orphans))


def export_state(
    family: Family,
    config: ModelConfig,
    names: Iterable[str],
    get: Callable[[str], Tensor],
) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(hf_name, tensor)`` for each of our tensors, inverting ``family``'s map.

    Call :func:`check_our_checkpoint` and :func:`plan_export` first: this generator assumes the
    names are complete and mappable.
    """
    rules = _reverse_rules(family)
    pending: dict[str, dict[int, Tensor]] = {}
    for name in names:
        if name == LM_HEAD and config.tie_embeddings:
            continue
        for regex, hf_template, target, part in rules:
            m = regex.match(name)
            if m is None:
                continue
            idx = m.groups()
            tensor = get(name)
            if isinstance(target, str):
                yield fill(hf_template, idx), tensor
            elif isinstance(target, Transposed):
                yield fill(hf_template, idx), tensor.t().contiguous()
            elif isinstance(target, Split):
                hf_name = fill(hf_template, idx)
                parts = pending.setdefault(hf_name, {})
                parts[part] = tensor
                if len(parts) == len(target.ours):
                    whole = torch.cat([parts[i] for i in range(len(target.ours))], dim=target.dim)
                    yield hf_name, whole.t().contiguous() if target.transpose else whole
                    del pending[hf_name]
            elif isinstance(target, Stacked):
                for e in range(tensor.shape[0]):
                    yield fill(hf_template, (*idx, str(e))), tensor[e].clone()
            break
    if pending:
        raise ConversionError(
            [f"{n}: only parts {sorted(p)} of it were found" for n, p in pending.items()]
        )
