"""The decoder-only transformer: embeddings, a stack of blocks, a final norm and the LM head.

The whole forward pass is in this file and ``attention.py``/``mlp.py``. Every choice comes from
:class:`~zmaj_lm.config.model.ModelConfig`; nothing depends on which family a config imitates.

Norm modules are named by role, not copied from one family: ``attn_norm``/``mlp_norm`` normalise a
sublayer's input, ``attn_out_norm``/``mlp_out_norm`` its output (or, for ``post_residual``, the
residual sum). transformers reuses ``post_attention_layernorm`` for "before the MLP" in Llama and
"after attention" in OLMo2 and Gemma 2; conversion maps both onto the one role each really has.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.models.attention import Attention
from zmaj_lm.models.cache import KVCache
from zmaj_lm.models.masks import AttentionMask, position_ids_from_documents
from zmaj_lm.models.mlp import MLP
from zmaj_lm.models.moe import MoE, RouterLosses
from zmaj_lm.models.norms import RMSNorm, build_norm
from zmaj_lm.models.rope import RotaryEmbedding, sinusoidal_table


@dataclass
class ModelOutput:
    """``logits`` (B, T, V); ``aux_loss`` the weighted MoE router losses (0 for dense models)."""

    logits: Tensor
    aux_loss: Tensor


class Block(nn.Module):
    """One transformer block: attention then MLP (or MoE), each with its residual and norms."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.placement = config.norm_placement
        if self.placement in ("pre", "sandwich"):
            self.attn_norm = build_norm(config)
            self.mlp_norm = build_norm(config)
        if self.placement in ("post", "sandwich", "post_residual"):
            self.attn_out_norm = build_norm(config)
            self.mlp_out_norm = build_norm(config)
        self.self_attn = Attention(config, layer)
        self.is_moe = config.layer_uses_moe(layer)
        self.mlp: MLP | MoE = MoE(config) if self.is_moe else MLP(config)
        self.dropout = config.dropout

    def _sublayer(self, x: Tensor, kind: str, out: Tensor) -> Tensor:
        """Add a sublayer's output ``out`` to the residual ``x`` according to the placement."""
        out = F.dropout(out, self.dropout, self.training)
        if self.placement in ("post", "sandwich"):
            out = getattr(self, f"{kind}_out_norm")(out)
        x = x + out
        if self.placement == "post_residual":
            x = getattr(self, f"{kind}_out_norm")(x)
        return x

    def forward(
        self,
        x: Tensor,
        mask: AttentionMask,
        rope: tuple[Tensor, Tensor] | None,
        cache: KVCache | None,
        valid: Tensor | None,
    ) -> tuple[Tensor, RouterLosses | None]:
        """x (B, T, D) -> (B, T, D), router losses of this block (None when dense)."""
        pre = self.placement in ("pre", "sandwich")
        h = self.attn_norm(x) if pre else x
        x = self._sublayer(x, "attn", self.self_attn(h, mask, rope, cache))
        h = self.mlp_norm(x) if pre else x
        losses = None
        if isinstance(self.mlp, MoE):
            out, losses = self.mlp(h, valid)
        else:
            out = self.mlp(h)
        return self._sublayer(x, "mlp", out), losses


class Transformer(nn.Module):
    """Decoder-only language model.

    Shape legend: B batch, T tokens in this call, D d_model, V vocab_size.
    """

    sinusoidal: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        if config.embedding_positions == "learned":
            self.embed_positions = nn.Embedding(config.max_seq_len, config.d_model)
        elif config.embedding_positions == "sinusoidal":
            self.register_buffer(
                "sinusoidal", sinusoidal_table(config.max_seq_len, config.d_model), persistent=False
            )
        self.rotary = (
            RotaryEmbedding(config)
            if any(config.layer_uses_rope(i) for i in range(config.n_layers))
            else None
        )
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.has_final_norm = config.norm_placement != "post_residual"
        if self.has_final_norm:
            self.norm = build_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights, zero biases, identity norms; residual outputs scaled by
        1/sqrt(2 * n_layers) when ``depth_scaled_init`` (GPT-2), so the residual stream's variance
        does not grow with depth."""
        cfg = self.config
        std = cfg.init_std
        out_std = std / math.sqrt(2 * cfg.n_layers) if cfg.depth_scaled_init else std
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_out = name.endswith(("o_proj", "down_proj"))
                nn.init.normal_(module.weight, 0.0, out_std if is_out else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                module.reset_parameters()
            elif isinstance(module, MoE):
                nn.init.normal_(module.gate_proj, 0.0, std)
                nn.init.normal_(module.up_proj, 0.0, std)
                nn.init.normal_(module.down_proj, 0.0, out_std)
        self.reset_buffers()

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Recompute the non-persistent buffers (RoPE frequencies, sinusoidal table). Loading
        builds the model on the meta device, where buffers hold no values and are not in the
        checkpoint, so they are recomputed here rather than read."""
        if self.rotary is not None:
            self.rotary.reset_parameters()
        if self.config.embedding_positions == "sinusoidal":
            self.sinusoidal.copy_(sinusoidal_table(self.config.max_seq_len, self.config.d_model))

    def forward(
        self,
        input_ids: Tensor,
        *,
        position_ids: Tensor | None = None,
        document_ids: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> ModelOutput:
        """input_ids (B, T) -> logits (B, T, V).

        ``document_ids`` (B, T) confine attention to each document of a packed row (padding: -1);
        ``position_ids`` (B, T) default to positions restarting at every document (or 0..T-1, or
        continuing the cache). With ``cache``, the new tokens' keys/values are appended to it.
        """
        B, T = input_ids.shape
        offset = cache.length if cache is not None else 0
        if position_ids is None:
            if document_ids is not None and cache is None:
                position_ids = position_ids_from_documents(document_ids)
            else:
                position_ids = torch.arange(offset, offset + T, device=input_ids.device)
                position_ids = position_ids.expand(B, T)
        if cache is not None:
            if offset + T > cache.max_len:
                raise ValueError(f"KV cache full: {offset} + {T} tokens > {cache.max_len} slots")
            if document_ids is not None:
                cache.single_document = False
            new_docs = document_ids if document_ids is not None else input_ids.new_zeros(B, T)
            cache.document_ids[:, offset : offset + T] = new_docs
            mask = AttentionMask(
                q_len=T,
                kv_len=offset + T,
                q_offset=offset,
                q_doc=None if cache.single_document else new_docs,
                k_doc=None if cache.single_document else cache.document_ids[:, : offset + T],
            )
        else:
            mask = AttentionMask.from_document_ids(document_ids, T)
        valid = document_ids >= 0 if document_ids is not None else None

        x = self.embed_tokens(input_ids)  # (B, T, D)
        if self.config.scale_embeddings:
            x = x * torch.tensor(self.config.d_model**0.5, dtype=x.dtype)
        if self.config.embedding_positions == "learned":
            x = x + self.embed_positions(position_ids)
        elif self.config.embedding_positions == "sinusoidal":
            x = x + self.sinusoidal[position_ids].to(x.dtype)
        x = F.dropout(x, self.config.dropout, self.training)
        rope = self.rotary(position_ids, x.dtype) if self.rotary is not None else None

        router_losses: list[RouterLosses] = []
        for block in self.layers:
            if self.config.activation_checkpointing and self.training and cache is None:
                x, losses = checkpoint(block, x, mask, rope, None, valid, use_reentrant=False)
            else:
                x, losses = block(x, mask, rope, cache, valid)
            if losses is not None:
                router_losses.append(losses)
        if cache is not None:
            cache.length = offset + T

        if self.has_final_norm:
            x = self.norm(x)
        logits = self.lm_head(x)  # (B, T, V)
        if self.config.final_logit_softcap is not None:
            cap = self.config.final_logit_softcap
            logits = cap * torch.tanh(logits / cap)
        return ModelOutput(logits=logits, aux_loss=self._aux_loss(router_losses, logits))

    def _aux_loss(self, router_losses: list[RouterLosses], like: Tensor) -> Tensor:
        """Mean over MoE layers of ``aux_loss_coef * balance + z_loss_coef * z`` (0 if dense)."""
        moe = self.config.moe
        if moe is None or not router_losses:
            return like.new_zeros((), dtype=torch.float32)
        total = sum(
            (moe.aux_loss_coef * r.load_balancing + moe.z_loss_coef * r.z_loss)
            for r in router_losses
        )
        return torch.as_tensor(total) / len(router_losses)
