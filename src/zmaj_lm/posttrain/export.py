"""Saving a post-trained model: merged weights in our layout (and HF), the adapter in PEFT's.

A LoRA adapter is written as PEFT writes one (``adapter_config.json`` +
``adapter_model.safetensors``), with transformers' module names from the family's name map:
our ``layers.0.self_attn.q_proj.lora_A`` becomes
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``. Our ``lora_A`` (r, in) and
``lora_B`` (out, r) already have PEFT's shapes, so renaming is all there is to it, and
``peft.PeftModel.from_pretrained`` loads the files onto the exported HF model.
"""

import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from zmaj_lm.config.lora import LoRAConfig
from zmaj_lm.config.model import ModelConfig
from zmaj_lm.interop.convert import HF_SOURCE_NAME, TOKENIZER_FILES, read_json
from zmaj_lm.interop.families import choose_family
from zmaj_lm.interop.spec import ConversionError, Family, fill, template_regex
from zmaj_lm.utils.io import atomic_dir, atomic_write_json

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def family_of(config: ModelConfig, checkpoint: Path | None) -> Family:
    """The HF family a checkpoint exports as (its import family when it came from HF)."""
    prefer = None
    if checkpoint is not None and (checkpoint / HF_SOURCE_NAME).is_file():
        prefer = read_json(checkpoint / HF_SOURCE_NAME).get("model_type")
    return choose_family(config, prefer=prefer)


def hf_module_name(family: Family, ours: str) -> str:
    """HF module path of our linear module ``ours`` (e.g. ``layers.0.self_attn.q_proj``)."""
    weight = f"{ours}.weight"
    for hf_template, target in family.weights.items():
        if hf_template in family.import_only or not isinstance(target, str):
            continue
        m = template_regex(target).match(weight)
        if m is not None:
            return fill(hf_template, m.groups()).removesuffix(".weight")
    raise ConversionError(
        [f"{weight}: {family.model_type} stores it fused or transposed; no PEFT name for it"]
    )


def peft_state_dict(adapter: dict[str, Tensor], family: Family) -> dict[str, Tensor]:
    """Our ``<module>.lora_A`` / ``.lora_B`` tensors under PEFT's HF names."""
    out: dict[str, Tensor] = {}
    for key, tensor in adapter.items():
        module, _, which = key.rpartition(".")
        out[f"{PEFT_PREFIX}{hf_module_name(family, module)}.{which}.weight"] = (
            tensor.detach().cpu().contiguous()
        )
    return out


def save_peft_adapter(
    adapter: dict[str, Tensor],
    lora: LoRAConfig,
    family: Family,
    directory: Path,
    base_model: str | None = None,
) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``directory``."""
    tensors = peft_state_dict(adapter, family)
    targets = sorted({k.split(".lora_")[0].rpartition(".")[2] for k in tensors})
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        atomic_write_json(tmp / ADAPTER_CONFIG, config)
    return directory


def copy_tokenizer(src: Path, dst: Path, chat_template: str | None = None) -> None:
    """Copy the tokenizer and the HF source record from checkpoint ``src`` to ``dst``.

    A tokenizer kept in a ``tokenizer/`` subdirectory (our checkpoints) is also copied to the
    top level, where the HF export looks for tokenizer files and special-token ids; the
    ``chat_template`` the stage trained with is written into that ``tokenizer_config.json``
    when it has none, so ``apply_chat_template`` on the exported model renders the same text.
    """
    dst.mkdir(parents=True, exist_ok=True)
    if (src / "tokenizer").is_dir():
        shutil.copytree(src / "tokenizer", dst / "tokenizer", dirs_exist_ok=True)
        for name in TOKENIZER_FILES:
            if (src / "tokenizer" / name).is_file() and not (src / name).is_file():
                shutil.copyfile(src / "tokenizer" / name, dst / name)
    for name in (*TOKENIZER_FILES, HF_SOURCE_NAME):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    config_path = dst / "tokenizer_config.json"
    if chat_template is not None and config_path.is_file():
        config = read_json(config_path)
        if config.get("chat_template") is None and not (dst / "chat_template.jinja").is_file():
            config["chat_template"] = chat_template
            atomic_write_json(config_path, config)
