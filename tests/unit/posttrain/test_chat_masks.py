"""Assistant-only masks on the chat templates of the converted families, multi-turn.

Oracle: transformers' ``apply_chat_template(return_assistant_tokens_mask=True)`` on the same
template with ``{% generation %}`` markers added around each assistant turn; we get the mask
from the template *without* markers (as Qwen3's ships, #1522) by rendering prefixes. The
tokenizer is byte-level without merges, so whole-text and segment-wise tokenisation agree and the
two masks must be identical. Templates are written here; nothing is downloaded.
"""

import pytest

from zmaj_lm.data.tokenizer import Tokenizer, train_bpe
from zmaj_lm.posttrain.chat import ChatError, ChatFormat

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
]

CHATML = (
    "{%- if messages[0].role != 'system' %}"
    "{{- '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
    "{% generation %}{{- message.content + '<|im_end|>\\n' }}{% endgeneration %}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3 = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}{% generation %}"
    "{{- message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{%- else %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<start_of_turn>model\\n' }}{% generation %}"
    "{{ message['content'] | trim + '<end_of_turn>\\n' }}{% endgeneration %}"
    "{% else %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] | trim "
    "+ '<end_of_turn>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
QWEN3_LIKE = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}"
    "{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}{% generation %}"
    "{%- if loop.index0 > ns.last_user and message.reasoning_content %}"
    "{{- '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' }}{%- endif %}"
    "{{- message.content + '<|im_end|>\\n' }}{% endgeneration %}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""Like Qwen3: the reasoning of an assistant turn is shown only after the last user message, so
an earlier turn renders differently once the conversation goes on (not prefix-stable)."""

CONVERSATION = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4", "reasoning_content": "two and two"},
    {"role": "user", "content": "And 3*3?"},
    {"role": "assistant", "content": "9", "reasoning_content": "three threes"},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "content": "You are welcome."},
]


@pytest.fixture(scope="module")
def family_tokenizer() -> Tokenizer:
    return train_bpe(["x"], 256 + len(SPECIALS), SPECIALS)


def _strip_markers(template: str) -> str:
    return template.replace("{% generation %}", "").replace("{% endgeneration %}", "")


def _transformers_mask(tokenizer: Tokenizer, template: str, messages: list[dict[str, str]]):  # type: ignore[no-untyped-def]
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend, bos_token="<bos>", eos_token="<|endoftext|>"
    )
    hf.chat_template = template
    out = hf.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(out["input_ids"]), [bool(m) for m in out["assistant_masks"]]


@pytest.mark.parametrize(
    ("name", "template", "bos"),
    [
        ("chatml", CHATML, None),
        ("llama3", LLAMA3, "<|begin_of_text|>"),
        ("gemma", GEMMA, "<bos>"),
        ("qwen3", QWEN3_LIKE, None),
    ],
)
def test_masks_match_transformers_generation_markers(
    family_tokenizer: Tokenizer, name: str, template: str, bos: str | None
) -> None:
    tokenizer = family_tokenizer
    messages = [dict(m) for m in CONVERSATION]
    specials = {"bos_token": bos or "<bos>", "eos_token": "<|endoftext|>"}
    fmt = ChatFormat(tokenizer, _strip_markers(template), specials)
    ours = fmt.tokenize(messages)
    hf_template = template.replace("bos_token", repr(specials["bos_token"]))
    ids, mask = _transformers_mask(tokenizer, hf_template, messages)
    assert ours.ids == ids
    assert ours.target == mask
    supervised = [t for t, flag in ours.segments if flag]
    assert len(supervised) == 3
    assert all(a in s for a, s in zip(["4", "9", "You are welcome."], supervised, strict=True))
    assert not any("user" in s or "Thanks" in s for s in supervised)


def test_template_without_prefix_stability_is_located(family_tokenizer: Tokenizer) -> None:
    """Qwen3-like rendering: the first answer's reasoning disappears later; the mask covers the
    first answer as the whole conversation renders it (no reasoning), the last one with it."""
    fmt = ChatFormat(family_tokenizer, _strip_markers(QWEN3_LIKE))
    messages = [dict(m) for m in CONVERSATION[:4]]
    pieces = [t for t, flag in fmt.tokenize(messages).segments if flag]
    assert pieces == ["4<|im_end|>\n", "<think>\nthree threes\n</think>\n\n9<|im_end|>\n"]


def test_turn_that_cannot_be_located_is_refused(family_tokenizer: Tokenizer) -> None:
    shouting = (
        "{%- for m in messages %}{%- if m.role == 'assistant' and loop.last %}"
        "{{ '<|im_start|>' + m.content + '<|im_end|>' }}{%- else %}"
        "{{ '<|im_start|>' + (m.content | upper) + '<|im_end|>' }}{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '<|im_start|>' }}{%- endif %}"
    )
    fmt = ChatFormat(family_tokenizer, shouting)
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "no"},
    ]
    with pytest.raises(ChatError, match="message 1"):
        fmt.tokenize(messages)


def test_builtin_template_multi_turn(chat: ChatFormat) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1+1="},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "2+2="},
        {"role": "assistant", "content": "4"},
    ]
    t = chat.tokenize(messages)
    tok = chat.tokenizer
    supervised = tok.decode([i for i, m in zip(t.ids, t.target, strict=True) if m])
    assert supervised == "2<|end|>4<|end|>"
    assert tok.decode(t.ids) == chat.render(messages)
    assert chat.stop_token_ids() == sorted({tok.eos_id, tok.token_to_id("<|end|>")})
    prompt = chat.prompt_ids(messages[:2])
    assert t.ids[: len(prompt)] == prompt
    assert chat.completion_ids(messages[:2], "2") == t.ids[len(prompt) : len(prompt) + 2]
