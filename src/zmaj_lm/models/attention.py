"""Multi-head attention with grouped KV heads, optional QK-norm, RoPE and a sliding window."""

from torch import Tensor, nn

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.models.backends import ATTENTION_BACKENDS
from zmaj_lm.models.cache import KVCache
from zmaj_lm.models.masks import AttentionMask
from zmaj_lm.models.norms import RMSNorm
from zmaj_lm.models.rope import apply_rotary


class Attention(nn.Module):
    """Self-attention of block ``layer``; projection names follow Llama checkpoints.

    Shape legend: B batch, T new tokens, S keys (T, or cache length while decoding), D d_model,
    H query heads, K key/value heads, hd head_dim.
    """

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.n_heads,
            config.n_kv_heads,
            config.head_dim,
        )
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.d_model, q_dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.d_model, kv_dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.d_model, kv_dim, bias=config.qkv_bias)
        self.o_proj = nn.Linear(q_dim, config.d_model, bias=config.o_bias)
        self.qk_norm = config.qk_norm
        if config.qk_norm != "none":
            per_head = config.qk_norm == "head"
            self.q_norm = RMSNorm(self.head_dim if per_head else q_dim, config.norm_eps)
            self.k_norm = RMSNorm(self.head_dim if per_head else kv_dim, config.norm_eps)
        self.use_rope = config.layer_uses_rope(layer)
        self.window = config.layer_window(layer)
        self.scale = config.attn_scale if config.attn_scale is not None else self.head_dim**-0.5
        self.softcap = config.attn_logit_softcap
        self.dropout = config.attn_dropout
        self.backend = ATTENTION_BACKENDS[config.attention_backend]

    def forward(
        self,
        x: Tensor,
        mask: AttentionMask,
        rope: tuple[Tensor, Tensor] | None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """x (B, T, D) -> (B, T, D)."""
        B, T, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (B, T, H*hd), (B, T, K*hd) x2
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, hd)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, hd)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            assert rope is not None
            cos, sin = rope  # (B, T, rd)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, K, S, hd)
        out = self.backend(
            q,
            k,
            v,
            mask,
            window=self.window,
            scale=self.scale,
            softcap=self.softcap,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, T, hd)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*hd)
        result: Tensor = self.o_proj(out)
        return result
