"""The model configuration: every architectural choice is an explicit field.

One :class:`ModelConfig` describes GPT-2, Llama 2/3, Mistral, Qwen2/3 (dense and MoE), Gemma and
OLMo2. Nothing keys behaviour on a model's name: a Llama is a config with RMSNorm, SwiGLU and RoPE,
and a GPT-2 is one with LayerNorm, GELU and learned positions. Per-layer settings (sliding window,
whether RoPE is applied, whether the MLP is a mixture of experts) are either one value for every
layer or a list with one entry per layer.
"""

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from zmaj_lm.config.base import StrictModel


class LinearRopeScaling(StrictModel):
    """Position interpolation: positions are divided by ``factor``."""

    type: Literal["linear"] = "linear"
    factor: float = Field(gt=0)
    """Context-extension factor; positions are divided by it."""


class Llama3RopeScaling(StrictModel):
    """Llama 3.1's frequency-dependent interpolation of the rotary frequencies."""

    type: Literal["llama3"] = "llama3"
    factor: float = Field(gt=0)
    """Divisor applied to the low frequencies (wavelengths above ``original / low_freq_factor``)."""
    low_freq_factor: float = Field(default=1.0, gt=0)
    """Wavelengths longer than ``original_max_position_embeddings / low_freq_factor`` are scaled."""
    high_freq_factor: float = Field(default=4.0, gt=0)
    """Wavelengths shorter than ``original_max_position_embeddings / high_freq_factor`` are kept."""
    original_max_position_embeddings: int = Field(default=8192, gt=0)
    """Context length the model was pretrained with."""

    @model_validator(mode="after")
    def _check_factors(self) -> Self:
        if self.high_freq_factor <= self.low_freq_factor:
            raise ValueError("high_freq_factor must be greater than low_freq_factor")
        return self


class YarnRopeScaling(StrictModel):
    """YaRN: NTK-by-parts interpolation plus an attention temperature (Peng et al., 2023)."""

    type: Literal["yarn"] = "yarn"
    factor: float = Field(gt=0)
    """Context-extension factor."""
    original_max_position_embeddings: int = Field(default=4096, gt=0)
    """Context length the model was pretrained with."""
    beta_fast: float = Field(default=32.0, gt=0)
    """Dimensions rotating more than this many times over the original context are kept."""
    beta_slow: float = Field(default=1.0, gt=0)
    """Dimensions rotating fewer than this many times over the original context are interpolated."""
    attention_factor: float | None = Field(default=None, gt=0)
    """Multiplier on cos/sin; ``None`` uses YaRN's ``0.1 * ln(factor) + 1``."""
    truncate: bool = True
    """Round the interpolation ramp's bounds to whole dimensions (the paper's and HF's default)."""


RopeScaling = Annotated[
    LinearRopeScaling | Llama3RopeScaling | YarnRopeScaling, Field(discriminator="type")
]


class RopeConfig(StrictModel):
    """Rotary position embedding (Su et al., 2021), rotate-half layout as in Llama/NeoX."""

    theta: float = Field(default=10000.0, gt=0)
    """Base of the geometric frequency progression."""
    partial_rotary_factor: float = Field(default=1.0, gt=0, le=1)
    """Fraction of each head's dimensions that rotate (the first ones); the rest pass through."""
    scaling: RopeScaling | None = None
    """Optional context-extension scaling of the frequencies."""


class MoEConfig(StrictModel):
    """Mixture of experts replacing the dense MLP (Qwen3-MoE / Mixtral style token-choice top-k)."""

    n_experts: int = Field(gt=0)
    """Number of routed experts."""
    top_k: int = Field(gt=0)
    """Experts each token is sent to."""
    d_expert: int = Field(gt=0)
    """Hidden size of each expert's gated MLP."""
    shared_expert_d_ff: int | None = Field(default=None, gt=0)
    """Hidden size of an always-on shared expert (Qwen2-MoE); ``None`` for no shared expert."""
    normalize_top_k: bool = True
    """Renormalise the selected experts' softmax probabilities to sum to one."""
    aux_loss_coef: float = Field(default=0.001, ge=0)
    """Weight of the Switch-Transformer load-balancing loss."""
    z_loss_coef: float = Field(default=0.0, ge=0)
    """Weight of the ST-MoE router z-loss (mean squared logsumexp of router logits)."""
    implementation: Literal["batched", "loop"] = "batched"
    """``batched`` sorts tokens by expert and runs grouped matmuls; ``loop`` is the readable
    reference that visits every expert in turn. Both compute the same function."""

    @model_validator(mode="after")
    def _check_top_k(self) -> Self:
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) must be <= n_experts ({self.n_experts})")
        return self


PerLayerBool = bool | list[bool]
PerLayerWindow = int | None | list[int | None]


class ModelConfig(StrictModel):
    """A decoder-only transformer, entirely described by these fields."""

    vocab_size: int = Field(gt=0)
    """Rows of the embedding table and columns of the LM head."""
    d_model: int = Field(gt=0)
    """Width of the residual stream (HF: hidden_size)."""
    n_layers: int = Field(gt=0)
    """Number of transformer blocks."""
    n_heads: int = Field(gt=0)
    """Query heads per attention layer."""
    n_kv_heads: int = Field(default=0, ge=0)
    """Key/value heads (GQA); equal to n_heads for MHA, 1 for MQA. 0 means n_heads."""
    head_dim: int = Field(default=0, ge=0)
    """Per-head width; 0 means d_model // n_heads. Gemma and Qwen3 set it explicitly."""
    d_ff: int = Field(gt=0)
    """Hidden width of the dense MLP (HF: intermediate_size)."""
    max_seq_len: int = Field(gt=0)
    """Longest sequence (and KV cache) the model supports."""

    # Positions
    embedding_positions: Literal["none", "learned", "sinusoidal"] = "none"
    """Absolute positions added to the token embeddings (GPT-2: learned)."""
    rope: RopeConfig | None = Field(default_factory=RopeConfig)
    """Rotary embedding settings; ``None`` disables RoPE in every layer."""
    rope_layers: PerLayerBool = True
    """Whether each layer applies RoPE (one value, or one per layer; NoPE layers use False)."""

    # Attention
    attention_backend: Literal["eager", "sdpa", "flex"] = "sdpa"
    """``eager`` is the readable reference, ``sdpa`` PyTorch's fused kernels, ``flex``
    FlexAttention with a block-sparse document mask (the GPU path for packed training)."""
    qkv_bias: bool = False
    """Bias on the q/k/v projections (GPT-2, Qwen2)."""
    o_bias: bool = False
    """Bias on the attention output projection (GPT-2)."""
    qk_norm: Literal["none", "head", "full"] = "none"
    """Normalise queries and keys before RoPE: per head over head_dim (Qwen3), or over the whole
    projection (OLMo2)."""
    sliding_window: PerLayerWindow = None
    """Keys further back than this many positions are masked; one value or one per layer,
    ``None`` for global attention."""
    attn_logit_softcap: float | None = Field(default=None, gt=0)
    """Scores become ``cap * tanh(scores / cap)`` before the softmax (Gemma 2)."""
    attn_scale: float | None = Field(default=None, gt=0)
    """Multiplier on q·k; ``None`` uses 1/sqrt(head_dim)."""
    attn_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on attention probabilities during training."""

    # Norms
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    """Normalisation layer type."""
    norm_eps: float = Field(default=1e-5, gt=0)
    """Epsilon inside the normalisation."""
    norm_bias: bool = False
    """LayerNorm with a bias (GPT-2); must be False for RMSNorm."""
    norm_unit_offset: bool = False
    """RMSNorm scales by ``(1 + w)`` with ``w`` initialised to zero (Gemma)."""
    norm_placement: Literal["pre", "post", "sandwich", "post_residual"] = "pre"
    """``pre``: x + f(norm(x)) (GPT-2, Llama); ``post``: x + norm(f(x)) (OLMo2);
    ``sandwich``: x + norm(f(norm(x))) (Gemma 2); ``post_residual``: norm(x + f(x))
    (the original Transformer)."""

    # MLP
    activation: Literal["gelu", "gelu_tanh", "relu", "relu2", "silu"] = "silu"
    """MLP nonlinearity; relu2 is squared ReLU (Primer)."""
    gated: bool = True
    """Gated MLP: down(act(gate(x)) * up(x)). With silu this is SwiGLU, with gelu GeGLU."""
    mlp_bias: bool = False
    """Biases on the MLP projections (GPT-2)."""
    moe: MoEConfig | None = None
    """Mixture-of-experts settings; ``None`` for a dense model."""
    moe_layers: PerLayerBool = True
    """Which layers use the MoE (when ``moe`` is set); the others use the dense MLP."""

    # Embeddings and head
    tie_embeddings: bool = False
    """Share the token embedding matrix with the LM head."""
    scale_embeddings: bool = False
    """Multiply token embeddings by sqrt(d_model) (Gemma)."""
    final_logit_softcap: float | None = Field(default=None, gt=0)
    """Logits become ``cap * tanh(logits / cap)`` (Gemma 2)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on embeddings and on each sublayer's output during training."""

    # Initialisation and memory
    init_std: float = Field(default=0.02, gt=0)
    """Standard deviation of the normal initialisation of linear and embedding weights."""
    depth_scaled_init: bool = True
    """Scale residual output projections (o_proj, down_proj) by 1/sqrt(2 * n_layers) (GPT-2)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass to save memory."""

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        """Resolve 0 placeholders so a dumped config states every size explicitly."""
        if isinstance(data, dict):
            data = dict(data)
            n_heads = data.get("n_heads")
            d_model = data.get("d_model")
            if not data.get("n_kv_heads") and isinstance(n_heads, int):
                data["n_kv_heads"] = n_heads
            if (
                not data.get("head_dim")
                and isinstance(n_heads, int)
                and isinstance(d_model, int)
                and n_heads > 0
            ):
                if d_model % n_heads != 0:
                    raise ValueError(
                        f"d_model ({d_model}) must be divisible by n_heads ({n_heads}) "
                        "unless head_dim is set"
                    )
                data["head_dim"] = d_model // n_heads
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        errors: list[str] = []
        if self.n_heads % self.n_kv_heads != 0:
            errors.append(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.rope is not None:
            rot = self.rotary_dim
            if rot % 2 != 0 or rot == 0:
                errors.append(
                    f"rotary dimension (head_dim {self.head_dim} * partial_rotary_factor "
                    f"{self.rope.partial_rotary_factor} = {rot}) must be even and positive"
                )
        for name, value in (("rope_layers", self.rope_layers), ("moe_layers", self.moe_layers)):
            if isinstance(value, list) and len(value) != self.n_layers:
                errors.append(f"{name} has {len(value)} entries but n_layers is {self.n_layers}")
        windows = self.sliding_window
        if isinstance(windows, list) and len(windows) != self.n_layers:
            errors.append(
                f"sliding_window has {len(windows)} entries but n_layers is {self.n_layers}"
            )
        window_values = windows if isinstance(windows, list) else [windows]
        if any(w is not None and w <= 0 for w in window_values):
            errors.append("sliding_window sizes must be positive")
        if self.rope is None and isinstance(self.rope_layers, list) and any(self.rope_layers):
            errors.append("rope_layers enables RoPE in some layers but rope is None")
        if self.norm == "rmsnorm" and self.norm_bias:
            errors.append("norm_bias requires norm: layernorm (RMSNorm has no bias)")
        if self.norm == "layernorm" and self.norm_unit_offset:
            errors.append("norm_unit_offset (1 + w) is only defined for norm: rmsnorm")
        if self.qk_norm != "none" and self.norm != "rmsnorm":
            errors.append("qk_norm is implemented with RMSNorm; set norm: rmsnorm")
        if self.embedding_positions == "learned" and self.max_seq_len > 1_000_000:
            errors.append("learned positions need a bounded max_seq_len (<= 1,000,000)")
        if self.attention_backend == "flex" and self.attn_dropout > 0:
            errors.append("attention_backend flex does not support attn_dropout > 0")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @property
    def rotary_dim(self) -> int:
        """Number of rotated dimensions per head (0 without RoPE)."""
        if self.rope is None:
            return 0
        return int(self.head_dim * self.rope.partial_rotary_factor)

    def layer_uses_rope(self, layer: int) -> bool:
        """Whether block ``layer`` applies RoPE."""
        if self.rope is None:
            return False
        value = self.rope_layers
        return value[layer] if isinstance(value, list) else value

    def layer_window(self, layer: int) -> int | None:
        """Sliding-window size of block ``layer`` (``None`` for global attention)."""
        value = self.sliding_window
        return value[layer] if isinstance(value, list) else value

    def layer_uses_moe(self, layer: int) -> bool:
        """Whether block ``layer`` uses the mixture of experts instead of the dense MLP."""
        if self.moe is None:
            return False
        value = self.moe_layers
        return value[layer] if isinstance(value, list) else value
