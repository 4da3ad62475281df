"""The three attention backends compute the same function (fp32, CPU, atol 1e-5).

Eager is the reference. FlexAttention runs compiled (its CPU forward is fine; it has no CPU
backward in torch 2.15), so its cases are marked slow: compiling takes ~20 s per shape.
"""

import pytest
import torch

from zmaj_lm.models.backends import ATTENTION_BACKENDS, eager_attention
from zmaj_lm.models.masks import AttentionMask, position_ids_from_documents

B, H, T, HD = 2, 4, 64, 16


def documents(kind: str) -> torch.Tensor | None:
    """Document-id layouts (B, T): none, packed, padded, packed + padded."""
    if kind == "causal":
        return None
    doc = torch.zeros(B, T, dtype=torch.long)
    if kind in ("packed", "packed_padded"):
        doc[0, 20:45], doc[0, 45:] = 1, 2
        doc[1, 5:], doc[1, 50:] = 1, 2
    if kind in ("padded", "packed_padded"):
        doc[0, 58:] = -1
        doc[1, :7] = -1
    return doc


CASES = [
    ("causal", None, 4, None),
    ("packed", None, 4, None),
    ("padded", None, 4, None),
    ("packed_padded", None, 4, None),
    ("causal", 10, 4, None),
    ("packed", 10, 4, None),
    ("packed_padded", None, 2, None),
    ("packed", 10, 1, None),
    ("packed", None, 4, 5.0),
]


def run(backend: str, doc_kind: str, window: int | None, kv_heads: int, softcap: float | None):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, T, HD, generator=g)
    k = torch.randn(B, kv_heads, T, HD, generator=g)
    v = torch.randn(B, kv_heads, T, HD, generator=g)
    mask = AttentionMask.from_document_ids(documents(doc_kind), T)
    kwargs = {"window": window, "scale": HD**-0.5, "softcap": softcap, "dropout_p": 0.0}
    ref = eager_attention(
        q, k, v, AttentionMask.from_document_ids(documents(doc_kind), T), **kwargs
    )
    out = ATTENTION_BACKENDS[backend](q, k, v, mask, **kwargs)
    return out, ref


@pytest.mark.parametrize(("doc_kind", "window", "kv_heads", "softcap"), CASES)
def test_sdpa_matches_eager(doc_kind, window, kv_heads, softcap) -> None:
    out, ref = run("sdpa", doc_kind, window, kv_heads, softcap)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(("doc_kind", "window", "kv_heads", "softcap"), CASES)
def test_flex_matches_eager(doc_kind, window, kv_heads, softcap) -> None:
    out, ref = run("flex", doc_kind, window, kv_heads, softcap)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_masked_keys_have_no_influence() -> None:
    """Changing another document's keys/values must not change a query's output."""
    doc = documents("packed")
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, H, T, HD, generator=g) for _ in range(3))
    mask = AttentionMask.from_document_ids(doc, T)
    kw = {"window": None, "scale": 0.25, "softcap": None, "dropout_p": 0.0}
    out = eager_attention(q, k, v, mask, **kw)
    k2, v2 = k.clone(), v.clone()
    k2[0, :, :20], v2[0, :, :20] = 100.0, -100.0  # document 0 of row 0
    out2 = eager_attention(q, k2, v2, mask, **kw)
    torch.testing.assert_close(out2[0, :, 20:], out[0, :, 20:], atol=0, rtol=0)
    assert not torch.allclose(out2[0, :, :20], out[0, :, :20])


def test_dense_mask_semantics() -> None:
    doc = torch.tensor([[0, 0, 1, 1, 1, -1]])
    allowed = AttentionMask.from_document_ids(doc, 6).dense(2, torch.device("cpu"))[0, 0]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)


def test_mask_is_built_once_per_window() -> None:
    mask = AttentionMask.from_document_ids(documents("packed"), T)
    first = mask.dense(None, torch.device("cpu"))
    assert mask.dense(None, torch.device("cpu")) is first
    assert mask.dense(8, torch.device("cpu")) is not first


def test_decode_step_matches_full_attention() -> None:
    """A query at slot 40 against the first 41 cached keys equals row 40 of the full result."""
    doc = documents("packed_padded")
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(B, H, T, HD, generator=g) for _ in range(3))
    kw = {"window": 12, "scale": 0.25, "softcap": None, "dropout_p": 0.0}
    full = eager_attention(q, k, v, AttentionMask.from_document_ids(doc, T), **kw)
    step = AttentionMask(q_len=1, kv_len=41, q_offset=40, q_doc=doc[:, 40:41], k_doc=doc[:, :41])
    for backend in ("eager", "sdpa", "flex"):
        out = ATTENTION_BACKENDS[backend](q[:, :, 40:41], k[:, :, :41], v[:, :, :41], step, **kw)
        torch.testing.assert_close(out, full[:, :, 40:41], atol=1e-5, rtol=0)


def test_position_ids_restart_at_documents() -> None:
    doc = torch.tensor([[0, 0, 0, 1, 1, 2, -1, -1], [-1, -1, 5, 5, 5, 5, 5, 5]])
    expected = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 0, 1, 2, 3, 4, 5]])
    assert torch.equal(position_ids_from_documents(doc), expected)
