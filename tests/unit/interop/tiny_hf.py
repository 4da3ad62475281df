"""Tiny random-weight transformers models, one per family we convert, built locally from configs.

Every config has 2 layers and d_model 64 so the whole interop suite stays fast; each one also
switches on the family's distinguishing features (RoPE scaling, sliding windows, biases, tied
heads, QK-norm, experts with a dense layer) so the parity tests exercise them.
"""

from pathlib import Path
from typing import Any

import torch

VOCAB = 128

COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
"""Shared by the Llama-descended cases; token ids match :func:`save_tokenizer`."""

FAMILY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": (
        "GPT2Config",
        {
            "vocab_size": VOCAB,
            "n_embd": 64,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 128,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    ),
    "llama3": (
        "LlamaConfig",
        COMMON
        | {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        },
    ),
    "tinyllama": ("LlamaConfig", COMMON | {"num_key_value_heads": 1, "rms_norm_eps": 1e-5}),
    "smollm": ("LlamaConfig", COMMON | {"tie_word_embeddings": True, "num_key_value_heads": 4}),
    "mistral": (
        "MistralConfig",
        COMMON
        | {
            "sliding_window": 8,
            "rope_parameters": {"rope_type": "linear", "rope_theta": 1e6, "factor": 2.0},
        },
    ),
    "qwen2": (
        "Qwen2Config",
        COMMON
        | {
            "use_sliding_window": True,
            "sliding_window": 8,
            "max_window_layers": 1,
            "tie_word_embeddings": True,
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        },
    ),
    "qwen3": ("Qwen3Config", COMMON | {"head_dim": 32, "rope_theta": 1e6}),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        COMMON
        | {
            "head_dim": 16,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "norm_topk_prob": True,
            "mlp_only_layers": [1],
        },
    ),
    "gemma": ("GemmaConfig", COMMON | {"head_dim": 32, "num_key_value_heads": 1}),
    "olmo2": ("Olmo2Config", COMMON),
}
"""Test case name -> (transformers config class, its arguments)."""


def hf_config(case: str) -> Any:
    import transformers

    cls_name, kwargs = FAMILY_CONFIGS[case]
    config = getattr(transformers, cls_name)(**kwargs)
    config._attn_implementation = "eager"
    return config


def build_hf_model(case: str, seed: int = 0) -> Any:
    """A transformers causal LM with random weights; norms perturbed so they are not identity."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(case)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def save_hf_model(case: str, directory: Path, seed: int = 0, **save_kwargs: Any) -> Any:
    model = build_hf_model(case, seed)
    model.save_pretrained(directory, **save_kwargs)
    return model


def padded_batch(seed: int = 0, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (2, T) and a mask whose second row is left-padded by 5 tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, length), generator=gen)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, :5] = 0
    ids[1, :5] = 0
    return ids, mask


CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def save_tokenizer(directory: Path, template: str = CHATML, vocab_size: int = VOCAB) -> Any:
    """A word-level tokenizer with ``vocab_size`` entries and a chat template, saved by
    transformers (tokenizer.json, tokenizer_config.json, chat_template.jinja)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
    words = [f"w{i}" for i in range(vocab_size - len(specials))]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = template
    tok.save_pretrained(directory)
    return tok
