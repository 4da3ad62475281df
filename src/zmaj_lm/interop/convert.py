"""HF checkpoint <-> our checkpoint, on disk.

``convert_from_hf`` reads a local HF directory (or downloads a Hub repo's safetensors, config and
tokenizer files), maps config.json onto our :class:`ModelConfig` and the tensors onto our names,
and writes our layout (``model.safetensors`` + ``config.yaml``) plus the tokenizer files and
``hf_source.json`` (the source config, so a later export can restore its token ids and family).

``convert_to_hf`` does the reverse: it picks the family from the config's features, writes
``config.json``, ``generation_config.json``, ``model.safetensors`` (or shards plus
``model.safetensors.index.json``) and the tokenizer files, loadable by
``AutoModelForCausalLM.from_pretrained`` without remote code.

Pickled ``.bin`` weights are refused unless asked for, and then read with
``torch.load(weights_only=True)``. Outputs are written into a temporary directory renamed into
place at the end, so a failed conversion never leaves a half-written checkpoint.
"""

import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from loguru import logger
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.interop.engine import check_our_checkpoint, export_state, import_state, plan_export
from zmaj_lm.interop.families import choose_family, family_for_model_type
from zmaj_lm.interop.spec import ConversionError
from zmaj_lm.models.io import CONFIG_NAME, WEIGHTS_NAME, clean_state_dict, load_model_config
from zmaj_lm.utils.io import atomic_dir, atomic_write_json

HF_SOURCE_NAME = "hf_source.json"
SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
"""Files that describe the tokenizer and chat template; copied as they are in both directions."""
HUB_PATTERNS = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*.safetensors",
    SAFE_INDEX,
    *TOKENIZER_FILES,
]
PICKLE_PATTERNS = ["pytorch_model.bin", "pytorch_model-*.bin", BIN_INDEX]
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_size(text: str) -> int:
    """``"5GB"``, ``"500MB"``, ``"2GiB"`` or a byte count -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*", text.upper())
    if m is None:
        raise ValueError(f"not a size: {text!r} (expected e.g. 5GB, 500MB or a byte count)")
    number, unit, suffix = float(m.group(1)), m.group(2), m.group(3) or "B"
    base = 1024 if suffix == "IB" else 1000
    return int(number * base ** " KMGT".index(unit or " "))


def resolve_source(src: str, *, allow_pickle: bool = False, revision: str | None = None) -> Path:
    """A local HF directory, or a Hub repo id downloaded with only the files conversion needs."""
    path = Path(src)
    if path.is_dir():
        return path
    if path.exists():
        raise ConversionError([f"{src}: not a directory"])
    if not _HUB_ID.match(src):
        raise ConversionError([f"{src}: no such directory, and not a Hub repo id (org/name)"])
    from huggingface_hub import snapshot_download

    patterns = HUB_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    logger.info("downloading {} (safetensors, config and tokenizer files)", src)
    try:
        return Path(snapshot_download(src, revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise ConversionError([f"{src}: download failed: {type(exc).__name__}: {exc}"]) from exc


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a :class:`ConversionError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConversionError([f"{path}: missing"]) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ConversionError([f"{path}: unreadable: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConversionError([f"{path}: expected a JSON object"])
    return data


@dataclass
class HFWeights:
    """The tensor names of an HF checkpoint and a loader for one tensor at a time."""

    names: list[str]
    get: Callable[[str], Tensor]
    files: list[Path]


def _index_files(directory: Path, index_name: str) -> list[Path]:
    index = read_json(directory / index_name)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise ConversionError([f"{directory / index_name}: weight_map: missing"])
    return [directory / f for f in dict.fromkeys(weight_map.values())]


def find_weight_files(directory: Path, *, allow_pickle: bool) -> tuple[list[Path], bool]:
    """The weight files of an HF directory and whether they are pickles."""
    if (directory / SAFE_INDEX).is_file():
        return _index_files(directory, SAFE_INDEX), False
    if (directory / "model.safetensors").is_file():
        return [directory / "model.safetensors"], False
    has_bin = (directory / BIN_INDEX).is_file() or (directory / "pytorch_model.bin").is_file()
    if has_bin and not allow_pickle:
        raise ConversionError(
            [
                f"{directory}: only pickled pytorch_model*.bin weights; they can run code when "
                "loaded. Convert them to safetensors, or pass --allow-pickle to load them with "
                "torch.load(weights_only=True)"
            ]
        )
    if (directory / BIN_INDEX).is_file():
        return _index_files(directory, BIN_INDEX), True
    if (directory / "pytorch_model.bin").is_file():
        return [directory / "pytorch_model.bin"], True
    raise ConversionError([f"{directory}: no model.safetensors or model.safetensors.index.json"])


def open_weights(files: list[Path], pickled: bool, stack: ExitStack) -> HFWeights:
    """Lazy access to every tensor in ``files`` (memory-mapped; one tensor loaded per ``get``)."""
    owner: dict[str, Any] = {}
    names: list[str] = []
    for file in files:
        if not file.is_file():
            raise ConversionError([f"{file}: listed in the index but missing"])
        try:
            if pickled:
                handle: Any = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
                keys = list(handle)
            else:
                handle = stack.enter_context(safe_open(str(file), framework="pt"))
                keys = list(handle.keys())
        except Exception as exc:
            raise ConversionError([f"{file}: unreadable: {type(exc).__name__}: {exc}"]) from exc
        for key in keys:
            if key in owner:
                raise ConversionError([f"{file}: {key}: also in another shard"])
            owner[key] = handle
            names.append(key)

    def get(name: str) -> Tensor:
        handle = owner[name]
        tensor: Tensor = handle[name] if pickled else handle.get_tensor(name)
        return tensor.contiguous() if pickled else tensor

    return HFWeights(names=names, get=get, files=files)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConversionError([f"{out}: exists and is not empty (pass --overwrite to replace it)"])


def _copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    _embed_chat_template(dst)
    return copied


def _embed_chat_template(directory: Path) -> None:
    """Put a separate ``chat_template.jinja`` into ``tokenizer_config.json`` too, so readers
    that only look there (transformers 4, our chat rendering) find it."""
    jinja, tok_config = directory / "chat_template.jinja", directory / "tokenizer_config.json"
    if not (jinja.is_file() and tok_config.is_file()):
        return
    data = read_json(tok_config)
    if data.get("chat_template") is None:
        data["chat_template"] = jinja.read_text(encoding="utf-8")
        tok_config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")


def convert_from_hf(
    src: str | Path,
    out: str | Path,
    *,
    allow_pickle: bool = False,
    overwrite: bool = False,
    revision: str | None = None,
) -> ModelConfig:
    """Convert an HF checkpoint (directory or Hub id) into our checkpoint at ``out``."""
    out = Path(out)
    _prepare_out(out, overwrite)
    source = resolve_source(str(src), allow_pickle=allow_pickle, revision=revision)
    hf_config = read_json(source / "config.json")
    try:
        family = family_for_model_type(hf_config.get("model_type"))
        config = family.config_from_hf(hf_config)
    except ConversionError as err:
        where = str(source / "config.json")
        raise ConversionError(
            [re.sub(r"^config\.json:", f"{where}:", line) for line in err.problems]
        ) from err
    files, pickled = find_weight_files(source, allow_pickle=allow_pickle)
    logger.info("{}: {} family, {} weight file(s)", source, family.model_type, len(files))
    with ExitStack() as stack:
        weights = open_weights(files, pickled, stack)
        result = import_state(family, config, weights.names, weights.get)
    if result.dropped:
        logger.info("dropped {} buffer tensor(s) without weights", len(result.dropped))
    generation = source / "generation_config.json"
    with atomic_dir(out) as tmp:
        save_file(result.state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        del result
        mapping = {"model": config.model_dump(mode="json")}
        (tmp / CONFIG_NAME).write_text(yaml.safe_dump(mapping, sort_keys=False), "utf-8")
        copied = _copy_tokenizer_files(source, tmp)
        sidecar = {
            "model_type": family.model_type,
            "repo_id": None if Path(src).is_dir() else str(src),
            "config": hf_config,
            "generation_config": read_json(generation) if generation.is_file() else None,
        }
        (tmp / HF_SOURCE_NAME).write_text(json.dumps(sidecar, indent=2) + "\n", "utf-8")
    logger.info("wrote {} (tokenizer files: {})", out, ", ".join(copied) or "none")
    return config


def _token_ids_from_tokenizer(directory: Path) -> dict[str, int]:
    """bos/eos/pad ids from tokenizer_config.json's token strings and tokenizer.json's vocab."""
    tok_config_path, tok_path = directory / "tokenizer_config.json", directory / "tokenizer.json"
    if not (tok_config_path.is_file() and tok_path.is_file()):
        return {}
    tok_config, tok = read_json(tok_config_path), read_json(tok_path)
    vocab: dict[str, int] = dict(tok.get("model", {}).get("vocab") or {})
    vocab |= {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    ids = {}
    for key in _TOKEN_ID_KEYS:
        token = tok_config.get(key.removesuffix("_id"))
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and token in vocab:
            ids[key] = vocab[token]
    return ids


def _iter_shards(
    tensors: Iterator[tuple[str, Tensor]], max_shard_bytes: int | None
) -> Iterator[dict[str, Tensor]]:
    shard: dict[str, Tensor] = {}
    size = 0
    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if shard and max_shard_bytes is not None and size + nbytes > max_shard_bytes:
            yield shard
            shard, size = {}, 0
        shard[name] = tensor
        size += nbytes
    if shard:
        yield shard


def write_hf_weights(
    tensors: Iterator[tuple[str, Tensor]], directory: Path, max_shard_bytes: int | None
) -> list[str]:
    """Write ``model.safetensors``, or shards plus an index when they exceed the limit."""
    written: list[tuple[Path, list[str]]] = []
    total = 0
    for i, shard in enumerate(_iter_shards(tensors, max_shard_bytes)):
        path = directory / f".shard-{i:05d}.safetensors"
        save_file(shard, str(path), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in shard.values())
        written.append((path, list(shard)))
    if len(written) == 1:
        written[0][0].rename(directory / "model.safetensors")
        return ["model.safetensors"]
    weight_map: dict[str, str] = {}
    names = []
    for i, (path, keys) in enumerate(written):
        name = f"model-{i + 1:05d}-of-{len(written):05d}.safetensors"
        path.rename(directory / name)
        names.append(name)
        weight_map |= dict.fromkeys(keys, name)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n", "utf-8")
    return [*names, SAFE_INDEX]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def hf_config_for(
    config: ModelConfig, family_type: str, ckpt: Path, dtype: torch.dtype
) -> tuple[dict[str, Any], dict[str, Any]]:
    """config.json and generation_config.json contents for ``config`` exported as ``family_type``.

    Architectural fields always come from our config; token ids come from the source config
    recorded at import (``hf_source.json``) when there is one, else from the tokenizer files.
    """
    family = family_for_model_type(family_type)
    source = read_json(ckpt / HF_SOURCE_NAME) if (ckpt / HF_SOURCE_NAME).is_file() else {}
    source_config: dict[str, Any] = source.get("config") or {}
    token_ids = (
        {k: source_config.get(k) for k in _TOKEN_ID_KEYS}
        if source_config
        else {k: None for k in _TOKEN_ID_KEYS} | _token_ids_from_tokenizer(ckpt)
    )
    hf_config = {
        "architectures": [family.architecture],
        "model_type": family.model_type,
        **family.config_to_hf(config),
        **token_ids,
        "dtype": _dtype_name(dtype),
        "use_cache": True,
    }
    generation = source.get("generation_config") or {
        k: v for k, v in token_ids.items() if v is not None
    }
    generation = {k: v for k, v in generation.items() if k != "transformers_version"}
    return hf_config, generation


def convert_to_hf(
    ckpt: str | Path,
    out: str | Path,
    *,
    max_shard_bytes: int | None = None,
    family: str | None = None,
    overwrite: bool = False,
) -> str:
    """Export our checkpoint at ``ckpt`` to HF format at ``out``; returns the family used."""
    ckpt, out = Path(ckpt), Path(out)
    _prepare_out(out, overwrite)
    config = load_model_config(ckpt)
    source = read_json(ckpt / HF_SOURCE_NAME) if (ckpt / HF_SOURCE_NAME).is_file() else {}
    chosen = choose_family(config, prefer=source.get("model_type"), force=family)
    weights_path = ckpt / WEIGHTS_NAME
    if not weights_path.is_file():
        raise ConversionError([f"{weights_path}: missing"])
    with safe_open(str(weights_path), framework="pt") as f:
        raw_names = list(f.keys())
        clean = clean_state_dict(dict.fromkeys(raw_names, torch.empty(0)))
        raw_of = dict(zip(clean, raw_names, strict=True))
        shapes = {n: tuple(f.get_slice(raw_of[n]).get_shape()) for n in clean}
        check_our_checkpoint(config, shapes)
        names = [n for n in clean if not (config.tie_embeddings and n == "lm_head.weight")]
        plan_export(chosen, names)
        dtype = f.get_tensor(raw_of[names[0]]).dtype

        def get(name: str) -> Tensor:
            tensor: Tensor = f.get_tensor(raw_of[name])
            return tensor

        hf_config, generation = hf_config_for(config, chosen.model_type, ckpt, dtype)
        with atomic_dir(out) as tmp:
            files = write_hf_weights(export_state(chosen, config, names, get), tmp, max_shard_bytes)
            atomic_write_json(tmp / "config.json", hf_config)
            atomic_write_json(tmp / "generation_config.json", generation)
            copied = _copy_tokenizer_files(ckpt, tmp)
    logger.info(
        "wrote {} as {} ({}; tokenizer files: {})",
        out,
        chosen.model_type,
        ", ".join(files),
        ", ".join(copied) or "none",
    )
    return chosen.model_type
