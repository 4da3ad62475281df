"""Parameter counts and training FLOPs per token, from the config alone (PaLM, appendix B).

Training FLOPs per token = 6 N + 12 · L · H · hd · T_eff, where N counts the parameters that take
part in a matrix multiply for every token (all weights except the input embedding tables; the LM
head counts even when tied to the embedding; for MoE only the active experts), and the second
term is attention's score and value products (forward and backward) with T_eff the number of keys
a query sees: the sequence length, or the sliding window when it is shorter. For packed batches
pass ``seq_len = Σ ℓᵢ² / T`` for the effective value.
"""

from zmaj_lm.config.model import ModelConfig


def _norm_params(cfg: ModelConfig, dim: int) -> int:
    return 2 * dim if cfg.norm == "layernorm" and cfg.norm_bias else dim


def _mlp_params(cfg: ModelConfig, d_ff: int) -> int:
    n_mats = 3 if cfg.gated else 2
    bias = (n_mats - 1) * d_ff + cfg.d_model if cfg.mlp_bias else 0
    return n_mats * cfg.d_model * d_ff + bias


def block_params(cfg: ModelConfig, layer: int, active_only: bool = False) -> int:
    """Parameters of block ``layer``; with ``active_only`` count only top_k routed experts."""
    D, hd = cfg.d_model, cfg.head_dim
    q, kv = cfg.n_heads * hd, cfg.n_kv_heads * hd
    attn = D * (q + 2 * kv) + q * D
    attn += (q + 2 * kv) if cfg.qkv_bias else 0
    attn += D if cfg.o_bias else 0
    if cfg.qk_norm == "head":
        attn += 2 * hd
    elif cfg.qk_norm == "full":
        attn += q + kv
    n_norms = {"pre": 2, "post": 2, "sandwich": 4, "post_residual": 2}[cfg.norm_placement]
    norms = n_norms * _norm_params(cfg, D)
    if cfg.layer_uses_moe(layer):
        assert cfg.moe is not None
        moe = cfg.moe
        experts = moe.top_k if active_only else moe.n_experts
        mlp = D * moe.n_experts + experts * 3 * D * moe.d_expert
        if moe.shared_expert_d_ff is not None:
            mlp += _mlp_params(cfg, moe.shared_expert_d_ff) + D
    else:
        mlp = _mlp_params(cfg, cfg.d_ff)
    return attn + norms + mlp


def embedding_params(cfg: ModelConfig) -> int:
    """Input embedding tables: tokens and, if learned, positions."""
    positions = cfg.max_seq_len * cfg.d_model if cfg.embedding_positions == "learned" else 0
    return cfg.vocab_size * cfg.d_model + positions


def count_parameters(cfg: ModelConfig) -> int:
    """Total stored parameters (tied embeddings counted once), equal to the model's numel."""
    total = embedding_params(cfg)
    total += sum(block_params(cfg, i) for i in range(cfg.n_layers))
    if cfg.norm_placement != "post_residual":
        total += _norm_params(cfg, cfg.d_model)
    if not cfg.tie_embeddings:
        total += cfg.vocab_size * cfg.d_model
    return total


def matmul_params(cfg: ModelConfig) -> int:
    """N of the PaLM formula: active non-embedding parameters plus the LM head."""
    blocks = sum(block_params(cfg, i, active_only=True) for i in range(cfg.n_layers))
    final_norm = _norm_params(cfg, cfg.d_model) if cfg.norm_placement != "post_residual" else 0
    return blocks + final_norm + cfg.vocab_size * cfg.d_model


def flops_per_token(cfg: ModelConfig, seq_len: float) -> float:
    """Training (forward + backward) FLOPs per token at sequence length ``seq_len``."""
    attn = 0.0
    for layer in range(cfg.n_layers):
        window = cfg.layer_window(layer)
        t_eff = min(seq_len, window) if window is not None else seq_len
        attn += 12 * cfg.n_heads * cfg.head_dim * t_eff
    return 6 * matmul_params(cfg) + attn
