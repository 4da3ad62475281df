"""Saving and loading model weights in our checkpoint layout.

A model directory holds ``model.safetensors`` (our parameter names, tied weights stored once) and
``config.yaml`` (a YAML mapping whose ``model:`` section is a :class:`ModelConfig`; training runs
store their whole resolved config there). Weights never come from pickle.
"""

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor

from zmaj_lm.config.loading import ConfigError, read_yaml, validate_config
from zmaj_lm.config.model import ModelConfig
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.utils.io import atomic_path, atomic_write_text

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"
_WRAPPER_PREFIXES = (
    "_orig_mod.",
    "module.",
    "_checkpoint_wrapped_module.",
    "_fsdp_wrapped_module.",
)


def clean_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip torch.compile / DDP / FSDP wrapper prefixes from every key, wherever they appear."""
    cleaned: dict[str, Tensor] = {}
    for key, value in state.items():
        kept = [part for part in key.split(".") if f"{part}." not in _WRAPPER_PREFIXES]
        cleaned[".".join(kept)] = value
    return cleaned


def _model_config(model: torch.nn.Module) -> ModelConfig:
    """The ModelConfig of a Transformer, possibly wrapped by torch.compile or DDP."""
    while not isinstance(model, Transformer):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            raise TypeError(f"not a zmaj_lm Transformer: {type(model).__name__}")
        model = inner
    return model.config


def model_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """Contiguous CPU tensors with clean names; a tied LM head is dropped (stored once)."""
    state = clean_state_dict(model.state_dict())
    if _model_config(model).tie_embeddings:
        state.pop("lm_head.weight", None)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_model(
    model: torch.nn.Module, directory: str | Path, config: dict[str, Any] | None = None
) -> None:
    """Write ``model.safetensors`` and ``config.yaml`` into ``directory`` (each atomically).

    ``config`` is the mapping stored as ``config.yaml`` (default: ``{"model": <model config>}``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_config = _model_config(model)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(model_state_dict(model), str(tmp), metadata={"format": "pt"})
    mapping = config if config is not None else {"model": model_config.model_dump(mode="json")}
    atomic_write_text(directory / CONFIG_NAME, yaml.safe_dump(mapping, sort_keys=False))


def load_model_config(directory: str | Path) -> ModelConfig:
    """The ``model:`` section of ``directory/config.yaml``."""
    path = Path(directory) / CONFIG_NAME
    data = read_yaml(path)
    if "model" not in data:
        raise ConfigError([f"{path}: model: missing section"])
    return validate_config(ModelConfig, data["model"], f"{path}:model")


def load_model(
    directory: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> Transformer:
    """Build the model described by ``directory/config.yaml`` and load its weights (strictly)."""
    directory = Path(directory)
    config = load_model_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no such file")
    with torch.device("meta"):
        model = Transformer(config)
    state = clean_state_dict(load_file(str(weights)))
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, strict=not config.tie_embeddings, assign=True)
    if config.tie_embeddings:
        missing = set(model.state_dict()) - set(state) - {"lm_head.weight"}
        if missing:
            raise KeyError(f"{weights}: missing tensors {sorted(missing)}")
        model.lm_head.weight = model.embed_tokens.weight
    _materialise_buffers(model)
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model


def _materialise_buffers(model: Transformer) -> None:
    """Give buffers left on the meta device real storage, then recompute their values."""
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            setattr(module, attr, torch.empty_like(buf, device="cpu"))
    model.reset_buffers()
