"""Checkpoints that survive SIGKILL at any moment, including in the middle of a save.

Layout::

    OUT/checkpoints/step_<N>/model.safetensors   clean names, tied weights once (save_model)
                            /config.yaml          the run's fully resolved config
                            /tokenizer/           the tokenizer (when the run has one)
                            /trainer_state.pt     optimizer, scaler, EMA, every RNG and the data
                                                  loader position of every rank, loop counters
    OUT/checkpoints/latest                        text file naming the newest complete step dir

A checkpoint directory is assembled under a temporary name, fsynced and renamed in one step
(:func:`zmaj_lm.utils.io.atomic_dir`); only then is ``latest`` rewritten (atomically), and only
then are old checkpoints pruned. A crash therefore leaves ``latest`` naming a complete
checkpoint, and at worst some temporary directory that the next run deletes. Everything in
``trainer_state.pt`` loads with ``torch.load(weights_only=True)``.
"""

import errno
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from loguru import logger
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from zmaj_lm.models.io import CONFIG_NAME, WEIGHTS_NAME, clean_state_dict, save_model
from zmaj_lm.training.distributed import is_fsdp, unwrap
from zmaj_lm.utils.io import atomic_dir, atomic_path, atomic_write_text

STATE_NAME = "trainer_state.pt"
LATEST_NAME = "latest"
TOKENIZER_DIR = "tokenizer"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says what is still intact."""


def step_dir_name(step: int) -> str:
    return f"step_{step}"


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete-looking checkpoint directories under ``ckpt_root``, oldest first."""
    if not ckpt_root.is_dir():
        return []
    found = []
    for child in ckpt_root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir() and (child / STATE_NAME).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The directory ``latest`` names, or the newest complete one if ``latest`` is missing."""
    pointer = ckpt_root / LATEST_NAME
    if pointer.is_file():
        target = ckpt_root / pointer.read_text(encoding="utf-8").strip()
        if (target / STATE_NAME).is_file() and (target / WEIGHTS_NAME).is_file():
            return target
        logger.warning(f"{pointer} names {target.name}, which is incomplete; scanning instead")
    found = list_checkpoints(ckpt_root)
    return found[-1][1] if found else None


def clean_stale(ckpt_root: Path) -> None:
    """Delete temporary directories left by a save that was killed half-way."""
    if not ckpt_root.is_dir():
        return
    for child in ckpt_root.iterdir():
        if child.name.startswith(".") and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith(".") and child.name.endswith(".tmp"):
            child.unlink(missing_ok=True)


def full_model_state(model: nn.Module) -> dict[str, Tensor]:
    """Unsharded CPU state dict with clean names (a collective under FSDP)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full: dict[str, Any] = dict(get_model_state_dict(unwrap(model), options=opts))
        return clean_state_dict(full)
    return {k: v.detach().cpu() for k, v in clean_state_dict(unwrap(model).state_dict()).items()}


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict; under FSDP gathered to full tensors (a collective)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return dict(get_optimizer_state_dict(unwrap(model), optimizer, options=opts))
    return optimizer.state_dict()


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_state`."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(unwrap(model), optimizer, state, options=opts)
        return
    optimizer.load_state_dict(state)


def write_checkpoint(
    ckpt_root: Path,
    step: int,
    *,
    model: nn.Module,
    model_state: dict[str, Tensor] | None,
    config: dict[str, Any],
    trainer_state: dict[str, Any],
    tokenizer: Any | None,
    keep_last: int,
) -> Path:
    """Write ``step_<step>`` atomically, point ``latest`` at it, prune to ``keep_last``.

    ``model_state`` is a full state dict (FSDP) or ``None`` to save ``model`` directly. Raises
    :class:`CheckpointError` (naming the previous checkpoint, which stays intact) when the disk
    is full or the write fails.
    """
    dest = ckpt_root / step_dir_name(step)
    previous = latest_checkpoint(ckpt_root)
    try:
        with atomic_dir(dest) as tmp:
            if model_state is None:
                save_model(model, tmp, config=config)
            else:
                _save_state(model_state, tmp, config)
            if tokenizer is not None:
                tokenizer.save(tmp / TOKENIZER_DIR)
            with atomic_path(tmp / STATE_NAME) as state_tmp:
                torch.save(trainer_state, state_tmp)
        atomic_write_text(ckpt_root / LATEST_NAME, dest.name + "\n")
    except OSError as exc:
        intact = f"{previous} is intact" if previous is not None else "no earlier checkpoint"
        reason = "disk full" if exc.errno == errno.ENOSPC else f"{type(exc).__name__}: {exc}"
        raise CheckpointError(
            f"could not save checkpoint step {step} to {dest} ({reason}); {intact}"
        ) from exc
    _prune(ckpt_root, keep_last, keep=dest)
    return dest


def _save_state(state: dict[str, Tensor], directory: Path, config: dict[str, Any]) -> None:
    """What ``save_model`` writes, from a full state dict instead of a module."""
    state = dict(state)
    if config.get("model", {}).get("tie_embeddings"):
        state.pop("lm_head.weight", None)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_text(directory / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))


def _prune(ckpt_root: Path, keep_last: int, keep: Path) -> None:
    found = list_checkpoints(ckpt_root)
    for _, path in found[:-keep_last]:
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)


def read_trainer_state(ckpt_dir: Path) -> dict[str, Any]:
    """``trainer_state.pt`` of a checkpoint, loaded with ``weights_only=True``."""
    path = ckpt_dir / STATE_NAME
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot load trainer state: {exc}") from exc
    return state


@torch.no_grad()
def load_weights(model: nn.Module, ckpt_dir: Path) -> None:
    """Load ``model.safetensors`` into a (possibly wrapped or sharded) model, strictly."""
    raw = unwrap(model)
    state = clean_state_dict(load_file(str(ckpt_dir / WEIGHTS_NAME)))
    config = getattr(raw, "config", None)
    tied = bool(getattr(config, "tie_embeddings", False))
    if tied and "embed_tokens.weight" in state:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        values: dict[str, Any] = dict(state)
        set_model_state_dict(raw, values, options=StateDictOptions(full_state_dict=True))
        return
    expected = set(clean_state_dict(raw.state_dict()))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise CheckpointError(
            f"{ckpt_dir / WEIGHTS_NAME}: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    own = clean_state_dict(raw.state_dict())
    for k, v in own.items():
        v.copy_(state[k])


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a step directory, a ``checkpoints`` directory, its ``latest``
    pointer file or a run's output directory (all but the first resolve to the latest
    checkpoint)."""
    path = Path(path)
    if (path / WEIGHTS_NAME).is_file():
        return path
    if path.name == LATEST_NAME and path.is_file():
        path = path.parent
    for root in (path, path / "checkpoints"):
        found = latest_checkpoint(root) if root.is_dir() else None
        if found is not None:
            return found
    raise CheckpointError(f"{path}: no {WEIGHTS_NAME} here and no checkpoints below it")
