"""Attention backends: functions with one signature, chosen by ``config.attention_backend``.

Every backend computes softmax(q·kᵀ · scale [softcapped] + mask) · v for

    q (B, H, Tq, hd), k and v (B, Hkv, Tk, hd)  ->  (B, H, Tq, hd)

with ``H`` a multiple of ``Hkv`` (grouped-query attention). ``eager`` spells the computation out
and is the reference the others are tested against; ``sdpa`` calls PyTorch's fused kernels (the
flash kernel when the mask is plain causal); ``flex`` calls FlexAttention with a block-sparse mask,
skipping blocks that cross document boundaries, which is what makes packed training cheap on GPU.
"""

from collections.abc import Callable
from functools import cache
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from zmaj_lm.models.masks import AttentionMask


class AttentionFn(Protocol):
    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: AttentionMask,
        *,
        window: int | None,
        scale: float,
        softcap: float | None,
        dropout_p: float,
    ) -> Tensor: ...


def eager_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: AttentionMask,
    *,
    window: int | None,
    scale: float,
    softcap: float | None,
    dropout_p: float,
) -> Tensor:
    """The reference: materialise the (B, H, Tq, Tk) scores, mask, softmax in fp32, weight v."""
    n_rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(n_rep, dim=1)  # (B, H, Tk, hd)
    v = v.repeat_interleave(n_rep, dim=1)  # (B, H, Tk, hd)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    allowed = mask.dense(window, q.device)  # (B|1, 1, Tq, Tk)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return probs @ v  # (B, H, Tq, hd)


def sdpa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: AttentionMask,
    *,
    window: int | None,
    scale: float,
    softcap: float | None,
    dropout_p: float,
) -> Tensor:
    """``F.scaled_dot_product_attention``; soft-capping has no SDPA kernel, so it runs eager."""
    if softcap is not None:
        return eager_attention(
            q, k, v, mask, window=window, scale=scale, softcap=softcap, dropout_p=dropout_p
        )
    gqa = q.shape[1] != k.shape[1]
    if mask.is_plain_causal(window):
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, dropout_p=dropout_p, enable_gqa=gqa
        )
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask.additive(window, q.device, q.dtype),
        scale=scale,
        dropout_p=dropout_p,
        enable_gqa=gqa,
    )


@cache
def _compiled_flex_attention() -> Callable[..., Any]:
    """FlexAttention compiled once per process: uncompiled it materialises the full scores."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: AttentionMask,
    *,
    window: int | None,
    scale: float,
    softcap: float | None,
    dropout_p: float,
) -> Tensor:
    """FlexAttention with the batch's block mask; soft-capping becomes a ``score_mod``.

    Decoding steps with a KV cache (a handful of queries against a growing cache) go through SDPA:
    rebuilding a block mask for every generated token would cost more than the attention itself.
    """
    if dropout_p > 0:
        raise ValueError("attention_backend flex does not support attention dropout")
    if mask.q_len != mask.kv_len:
        return sdpa_attention(
            q, k, v, mask, window=window, scale=scale, softcap=softcap, dropout_p=dropout_p
        )
    score_mod = None
    if softcap is not None:
        cap = softcap

        def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return cap * torch.tanh(score / cap)

    out: Tensor = _compiled_flex_attention()(
        q,
        k,
        v,
        score_mod=score_mod,
        block_mask=mask.block_mask(window, q.device),
        scale=scale,
        enable_gqa=q.shape[1] != k.shape[1],
    )
    return out


ATTENTION_BACKENDS: dict[str, AttentionFn] = {
    "eager": eager_attention,
    "sdpa": sdpa_attention,
    "flex": flex_attention,
}
