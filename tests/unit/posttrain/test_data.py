"""Examples from local files, packing without contamination, and the SFT loader's resume."""

import json
from pathlib import Path

import pytest
import torch

from zmaj_lm.config.posttrain import ExamplesConfig
from zmaj_lm.posttrain.batches import SequenceExample, SFTLoader, rows_to_batch
from zmaj_lm.posttrain.chat import ChatFormat
from zmaj_lm.posttrain.examples import (
    ExampleError,
    preference_examples,
    prompt_examples,
    sft_examples,
)
from zmaj_lm.posttrain.objectives import SFTObjective

from .conftest import tiny_model


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_files_conversations_pairs_and_prompts(tmp_path: Path) -> None:
    chats = _write(
        tmp_path / "chats.jsonl",
        [
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            {"prompt": "c", "completion": "d"},
        ],
    )
    cfg = ExamplesConfig(
        kind="files", paths=(str(chats),), validation_fraction=0.0, system_prompt="be brief"
    )
    examples = list(sft_examples(cfg, "train"))
    assert [e.messages[-1]["content"] for e in examples] == ["b", "d"]
    assert all(e.messages[0] == {"role": "system", "content": "be brief"} for e in examples)
    assert examples[1].answer == "d"

    pairs = _write(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "y", "rejected": "n"}])
    cfg = ExamplesConfig(kind="files", paths=(str(pairs),), validation_fraction=0.0)
    [pair] = preference_examples(cfg, "train")
    assert (pair.prompt, pair.chosen, pair.rejected) == (
        [{"role": "user", "content": "q"}],
        "y",
        "n",
    )

    prompts = _write(tmp_path / "prompts.jsonl", [{"prompt": "1+1=", "answer": 2}])
    cfg = ExamplesConfig(kind="files", paths=(str(prompts),), validation_fraction=0.0)
    assert [p.answer for p in prompt_examples(cfg, "train")] == ["2"]

    bad = _write(tmp_path / "bad.jsonl", [{"messages": [{"role": "user"}]}])
    cfg = ExamplesConfig(kind="files", paths=(str(bad),))
    with pytest.raises(
        ExampleError, match=r"bad.jsonl: line 1: messages: message 0: needs a string"
    ):
        list(sft_examples(cfg, "train"))


def test_split_is_disjoint_and_stable() -> None:
    cfg = ExamplesConfig(num_examples=400, validation_fraction=0.2)
    train = {str(e.messages) for e in sft_examples(cfg, "train")}
    val = {str(e.messages) for e in sft_examples(cfg, "validation")}
    assert train
    assert val
    assert not train & val
    assert val == {str(e.messages) for e in sft_examples(cfg, "validation")}


def _examples(chat: ChatFormat) -> list[SequenceExample]:
    out = []
    for i in range(7):
        msgs = [
            {"role": "user", "content": f"{i}+{i}="},
            {"role": "assistant", "content": str(2 * i) * (1 + i % 3)},
        ]
        t = chat.tokenize(msgs)
        out.append(SequenceExample(t.ids, t.target))
    return out


def test_packed_loss_equals_padded_loss(chat: ChatFormat) -> None:
    """Document masks keep packed examples apart: the summed SFT loss of a packed batch equals
    that of the same examples one per row (so no token sees another example)."""
    examples = _examples(chat)
    model = tiny_model(seed=4).eval()
    objective = SFTObjective()
    packed = rows_to_batch([examples[:3], examples[3:5], examples[5:]], 48, 0)
    padded = rows_to_batch([[e] for e in examples], 48, 0)
    assert packed.num_tokens == padded.num_tokens == sum(sum(e.target[1:]) for e in examples)
    with torch.no_grad():
        a, b = objective(model, packed), objective(model, padded)
    torch.testing.assert_close(a.loss_sum, b.loss_sum, rtol=1e-5, atol=1e-5)
    leaky = rows_to_batch([examples[:3]], 48, 0)
    leaky.document_ids[leaky.document_ids >= 0] = 0
    leaky.position_ids = torch.arange(48)[None]
    with torch.no_grad():
        mixed = objective(model, leaky).loss_sum
        alone = objective(model, rows_to_batch([[e] for e in examples[:3]], 48, 0)).loss_sum
    assert not torch.allclose(mixed, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("packing", ["pack", "pad"])
def test_sft_loader_resumes_exactly(chat: ChatFormat, packing: str) -> None:
    examples = _examples(chat) * 5

    def loader() -> SFTLoader:
        return SFTLoader(examples, seq_len=48, batch_size=3, packing=packing, pad_id=0, seed=1)  # type: ignore[arg-type]

    a = loader()
    it = iter(a)
    first = [next(it) for _ in range(4)]
    state = a.state_dict()
    rest = [next(it) for _ in range(6)]
    b = loader()
    b.load_state_dict(state)
    again = [next(iter(b)) for _ in range(1)]
    it_b = iter(b)
    resumed = [next(it_b) for _ in range(5)]
    for x, y in zip([*again, *resumed], rest, strict=True):
        assert torch.equal(x.input_ids, y.input_ids)
    assert first[0].num_tokens > 0
    if packing == "pad":
        assert all(int(bt.document_ids.max()) == 0 for bt in first)
