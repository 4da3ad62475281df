"""Generation: cached decoding equals recomputation; ragged batches equal single prompts."""

import pytest
import torch

from tests.unit.models.conftest import tiny_config
from zmaj_lm.config import SamplingConfig
from zmaj_lm.models import Transformer, generate
from zmaj_lm.models.generation import process_logits

VARIANTS = {
    "llama_gqa": {},
    "gpt2_learned": {"embedding_positions": "learned", "rope": None, "norm": "layernorm"},
    "window_softcap": {"sliding_window": 6, "attn_logit_softcap": 30.0},
    "moe": {"moe": {"n_experts": 4, "top_k": 2, "d_expert": 32}},
}


def build(variant: str, backend: str = "sdpa") -> Transformer:
    torch.manual_seed(0)
    model = Transformer(tiny_config(**VARIANTS[variant], attention_backend=backend)).eval()
    # Sharpen the random model so argmax ties (and near-ties) cannot flip greedy choices.
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


def greedy_without_cache(model: Transformer, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_cached_greedy_equals_recomputation(variant: str, backend: str) -> None:
    model = build(variant, backend)
    prompt = [5, 17, 3, 88, 42, 7, 1]
    cached = generate(model, [prompt], SamplingConfig(max_new_tokens=24, temperature=0))[0]
    assert cached == greedy_without_cache(model, prompt, 24)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ragged_batch_equals_each_prompt_alone(variant: str) -> None:
    model = build(variant)
    prompts = [[5, 17, 3, 88, 42, 7, 1, 9, 2], [11], [60, 61, 62, 63]]
    cfg = SamplingConfig(max_new_tokens=16, temperature=0)
    batched = generate(model, prompts, cfg)
    alone = [generate(model, [p], cfg)[0] for p in prompts]
    assert batched == alone


def test_cached_logits_match_full_forward() -> None:
    """Stronger than equal argmaxes: every cached step's logits equal the full forward's."""
    from zmaj_lm.models.cache import KVCache

    model = build("window_softcap")
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache.allocate(model.config, 2, 20, torch.float32, "cpu")
        steps = [model(ids[:, :8], cache=cache).logits]
        steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(8, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_stop_tokens_end_each_sequence_independently() -> None:
    model = build("llama_gqa")
    prompts = [[1, 2, 3], [4, 5]]
    free = generate(model, prompts, SamplingConfig(max_new_tokens=10, temperature=0))
    stop = free[0][3]
    stopped = generate(
        model, prompts, SamplingConfig(max_new_tokens=10, temperature=0, stop_token_ids=[stop])
    )
    assert stopped[0] == free[0][: free[0].index(stop)]
    expected_1 = free[1][: free[1].index(stop)] if stop in free[1] else free[1]
    assert stopped[1] == expected_1


def test_sampling_is_reproducible_with_a_generator() -> None:
    model = build("llama_gqa")
    cfg = SamplingConfig(max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9)
    runs = [
        generate(model, [[1, 2, 3]], cfg, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_streaming_callback_sees_every_token() -> None:
    model = build("llama_gqa")
    seen: list[int] = []
    out = generate(
        model,
        [[1, 2]],
        SamplingConfig(max_new_tokens=6, temperature=0),
        on_tokens=lambda tok, active: seen.extend(tok[active].tolist()),
    )
    assert seen == out[0]


def test_too_long_request_is_refused() -> None:
    model = build("llama_gqa")
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        generate(model, [[1] * 100], SamplingConfig(max_new_tokens=50))
    with pytest.raises(ValueError, match="every prompt needs a token"):
        generate(model, [[]], SamplingConfig())


LOGITS = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])


def kept(cfg: SamplingConfig, history: torch.Tensor | None = None) -> list[int]:
    out = process_logits(LOGITS, history, cfg)
    return torch.nonzero(torch.isfinite(out[0])).flatten().tolist()


def test_top_k_top_p_min_p_filters() -> None:
    assert kept(SamplingConfig(top_k=2)) == [0, 1]
    probs = torch.softmax(LOGITS[0], -1)  # [0.61, 0.22, 0.14, 0.03, 0.004]
    assert probs[0] < 0.7 < probs[:2].sum()
    assert kept(SamplingConfig(top_p=0.7)) == [0, 1]
    assert kept(SamplingConfig(top_p=0.5)) == [0]
    assert kept(SamplingConfig(min_p=0.2)) == [0, 1, 2]  # 0.14 / 0.61 > 0.2 > 0.03 / 0.61
    assert kept(SamplingConfig()) == [0, 1, 2, 3, 4]


def test_repetition_penalty_and_temperature() -> None:
    history = torch.tensor([[0, 3, -1]])
    out = process_logits(LOGITS, history, SamplingConfig(temperature=0, repetition_penalty=2.0))
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, 0.5, -2.0, -3.0]]))
    hot = process_logits(LOGITS, None, SamplingConfig(temperature=2.0))
    torch.testing.assert_close(hot, LOGITS / 2)


def test_decode_step_needs_a_mask_only_when_something_is_hidden() -> None:
    """The no-mask fast path is decided from the mask's description: one query at the newest slot
    of an unpadded row sees every key, unless a window or a document boundary hides some."""
    from zmaj_lm.models.masks import AttentionMask

    step = AttentionMask(q_len=1, kv_len=9, q_offset=8)
    assert step.additive(None, torch.device("cpu"), torch.float32) is None
    assert step.additive(9, torch.device("cpu"), torch.float32) is None
    windowed = step.additive(4, torch.device("cpu"), torch.float32)
    assert windowed is not None
    assert torch.isinf(windowed).sum() == 5
    docs = torch.tensor([[-1, -1, 0, 0, 0, 0, 0, 0, 0]])
    padded = AttentionMask(q_len=1, kv_len=9, q_offset=8, q_doc=docs[:, 8:], k_doc=docs)
    bias = padded.additive(None, torch.device("cpu"), torch.float32)
    assert bias is not None
    assert bias[0, 0, 0].isinf().tolist() == [True] * 2 + [False] * 7


def test_cache_remembers_that_documents_were_given() -> None:
    """Once a call passes document ids (a padded prompt), later unlabelled steps keep masking."""
    from zmaj_lm.models.cache import KVCache

    model = build("llama_gqa")
    with torch.no_grad():
        plain = KVCache.allocate(model.config, 1, 12, torch.float32, "cpu")
        model(torch.tensor([[3, 4, 5]]), cache=plain)
        padded = KVCache.allocate(model.config, 1, 12, torch.float32, "cpu")
        model(torch.tensor([[0, 4, 5]]), document_ids=torch.tensor([[-1, 0, 0]]), cache=padded)
        model(torch.tensor([[6]]), cache=padded)
    assert plain.single_document
    assert not padded.single_document
    assert padded.document_ids[0, :4].tolist() == [-1, 0, 0, 0]


@pytest.mark.slow
def test_compiled_decoding_equals_eager() -> None:
    """``compile=True`` changes speed, not tokens: greedy outputs (one prompt, then a ragged
    batch, which needs masks and another graph) equal the eager path's."""
    model = build("llama_gqa")
    cfg = SamplingConfig(max_new_tokens=12, temperature=0)
    for prompts in ([[5, 17, 3, 88]], [[5, 17, 3, 88, 42, 7], [11, 2]]):
        assert generate(model, prompts, cfg, compile=True) == generate(model, prompts, cfg)
