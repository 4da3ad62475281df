# ruff: noqa: E501  (chat templates are kept verbatim, long lines included)
"""Our sandboxed chat-template rendering equals transformers' ``apply_chat_template``.

The templates are written here (the shapes of Qwen2.5's ChatML with tools, Qwen3's thinking
template, Llama 3.1's with a date, Gemma's with ``raise_exception``, and one with
``{% generation %}`` markers); nothing is downloaded. Each is saved with a tiny tokenizer through
transformers, and our renderer reads it back from those files.
"""

from pathlib import Path
from typing import Any

import pytest

from zmaj_lm.interop.chat_template import (
    ChatTemplateError,
    apply_chat_template,
    load_chat_template,
    render_chat_template,
)

CHATML_TOOLS = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

QWEN3_THINKING = """{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == "user" or message.role == "system" %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index and reasoning_content %}
            {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + message.content.lstrip('\\n') }}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + message.content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

LLAMA31 = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

GENERATION_MARKERS = (
    "{% for message in messages %}{% if message.role == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message.content + eos_token }}"
    "{% endgeneration %}{{ '\\n' }}{% else %}"
    "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)

TEMPLATES = {
    "chatml_tools": CHATML_TOOLS,
    "qwen3_thinking": QWEN3_THINKING,
    "llama31": LLAMA31,
    "gemma": GEMMA,
    "generation_markers": GENERATION_MARKERS,
}

CHAT = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "It is 4. Ünïcödé & <b>tags</b> stay."},
    {"role": "user", "content": "  And 3 + 3?  "},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers",
            "parameters": {"type": "object", "properties": {"a": {"type": "number"}}},
        },
    }
]
TOOL_CHAT = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Add 2 and 3"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 2}}}],
    },
    {"role": "tool", "content": "5"},
    {"role": "assistant", "content": "5"},
]
THINKING_CHAT = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "\nhello", "reasoning_content": "\nthe user greets\n"},
]


def _save_tokenizer(directory: Path, template: str) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "hello": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    tok.chat_template = template
    tok.save_pretrained(directory)
    return tok


CASES = [
    ("chatml_tools", CHAT, {}),
    ("chatml_tools", TOOL_CHAT, {"tools": TOOLS}),
    ("chatml_tools", TOOL_CHAT[:2], {}),
    ("qwen3_thinking", [*THINKING_CHAT, {"role": "user", "content": "more"}], {}),
    ("qwen3_thinking", THINKING_CHAT, {"enable_thinking": False}),
    ("llama31", [{"role": "system", "content": " sys "}, *CHAT], {}),
    ("llama31", CHAT, {"date_string": "01 Jan 2025"}),
    ("gemma", CHAT, {}),
    ("generation_markers", CHAT[:2], {}),
]


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize(("name", "messages", "kwargs"), CASES)
def test_matches_transformers(
    tmp_path: Path,
    name: str,
    messages: list[dict[str, Any]],
    kwargs: dict[str, Any],
    add_generation_prompt: bool,
) -> None:
    tok = _save_tokenizer(tmp_path, TEMPLATES[name])
    expected = tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
    )
    got = apply_chat_template(
        tmp_path, messages, add_generation_prompt=add_generation_prompt, **kwargs
    )
    assert got == expected


def test_raise_exception_surfaces_as_error(tmp_path: Path) -> None:
    tok = _save_tokenizer(tmp_path, GEMMA)
    bad = [{"role": "system", "content": "x"}, *CHAT]
    with pytest.raises(Exception, match="System role not supported"):
        tok.apply_chat_template(bad, tokenize=False)
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        apply_chat_template(tmp_path, bad)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ messages.append(1) }}",
        "{% set ns = namespace() %}{% set ns._x = 1 %}",
    ],
)
def test_sandbox_refuses_escapes(template: str) -> None:
    with pytest.raises(ChatTemplateError):
        render_chat_template(template, CHAT)


def test_template_from_tokenizer_config_list(tmp_path: Path) -> None:
    import json

    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": [{"name": "default", "template": "{{ messages[0].role }}"}]})
    )
    assert load_chat_template(tmp_path) == "{{ messages[0].role }}"
    with pytest.raises(ChatTemplateError):
        load_chat_template(tmp_path / "missing")
