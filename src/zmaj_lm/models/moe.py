"""Mixture of experts: a token-choice top-k router over gated-MLP experts.

Two implementations compute the same function. ``loop`` visits each expert and processes the
tokens routed to it: easy to read, slow. ``batched`` sorts the (token, expert) assignments by
expert, packs them into one (E, C, D) buffer (C = the busiest expert's load) and runs every
expert at once with batched matmuls. Tests assert they agree.

Expert weights are stacked (E, ...) tensors rather than E separate modules, which is what the
batched path needs and what conversion produces with its "stack experts" transform.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.models.mlp import ACTIVATIONS, MLP


@dataclass
class RouterLosses:
    """Per-layer auxiliary losses (scalars, unweighted)."""

    load_balancing: Tensor
    z_loss: Tensor


class MoE(nn.Module):
    """Routed experts plus an optional always-on shared expert (Qwen2-MoE).

    Shape legend: N tokens (B*T), D d_model, E experts, k top_k, F d_expert, C expert capacity.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.moe is not None
        moe = config.moe
        self.n_experts, self.top_k = moe.n_experts, moe.top_k
        self.normalize_top_k = moe.normalize_top_k
        self.implementation = moe.implementation
        self.router = nn.Linear(config.d_model, moe.n_experts, bias=False)
        self.gate_proj = nn.Parameter(torch.empty(moe.n_experts, moe.d_expert, config.d_model))
        self.up_proj = nn.Parameter(torch.empty(moe.n_experts, moe.d_expert, config.d_model))
        self.down_proj = nn.Parameter(torch.empty(moe.n_experts, config.d_model, moe.d_expert))
        self.act = ACTIVATIONS[config.activation]
        self.has_shared_expert = moe.shared_expert_d_ff is not None
        if moe.shared_expert_d_ff is not None:
            self.shared_expert = MLP(config, d_ff=moe.shared_expert_d_ff)
            self.shared_expert_gate = nn.Linear(config.d_model, 1, bias=False)

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (N, D) -> router logits (N, E) fp32, top-k weights (N, k), top-k expert ids (N, k)."""
        logits = self.router(x).float()  # (N, E)
        probs = torch.softmax(logits, dim=-1)
        weights, experts = probs.topk(self.top_k, dim=-1)  # (N, k)
        if self.normalize_top_k:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, weights.to(x.dtype), experts

    def _expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` on x (n, D) -> (n, D)."""
        h = self.act(x @ self.gate_proj[e].T) * (x @ self.up_proj[e].T)  # (n, F)
        return h @ self.down_proj[e].T

    def experts_loop(self, x: Tensor, weights: Tensor, experts: Tensor) -> Tensor:
        """Reference: for each expert, run it on its tokens and add the weighted result."""
        out = torch.zeros_like(x)  # (N, D)
        for e in range(self.n_experts):
            token_idx, slot = torch.where(experts == e)  # (n,), (n,)
            if token_idx.numel() == 0:
                continue
            y = self._expert(e, x[token_idx]) * weights[token_idx, slot, None]  # (n, D)
            out.index_add_(0, token_idx, y)
        return out

    def experts_batched(self, x: Tensor, weights: Tensor, experts: Tensor) -> Tensor:
        """All experts in three batched matmuls over a (E, C, D) buffer of sorted assignments."""
        N, D = x.shape
        flat_expert = experts.reshape(-1)  # (N*k,)
        flat_token = torch.arange(N, device=x.device).repeat_interleave(self.top_k)  # (N*k,)
        flat_weight = weights.reshape(-1)  # (N*k,)
        order = torch.argsort(flat_expert, stable=True)
        sorted_expert, sorted_token = flat_expert[order], flat_token[order]
        counts = torch.bincount(sorted_expert, minlength=self.n_experts)  # (E,)
        starts = torch.cumsum(counts, 0) - counts  # (E,)
        slot = torch.arange(order.numel(), device=x.device) - starts[sorted_expert]  # (N*k,)
        capacity = int(counts.max())
        buf = x.new_zeros(self.n_experts, capacity, D)  # (E, C, D)
        buf[sorted_expert, slot] = x[sorted_token]
        h = self.act(torch.bmm(buf, self.gate_proj.transpose(1, 2)))  # (E, C, F)
        h = h * torch.bmm(buf, self.up_proj.transpose(1, 2))  # (E, C, F)
        y = torch.bmm(h, self.down_proj.transpose(1, 2))  # (E, C, D)
        y = y[sorted_expert, slot] * flat_weight[order, None]  # (N*k, D)
        return torch.zeros_like(x).index_add_(0, sorted_token, y)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> tuple[Tensor, RouterLosses]:
        """x (B, T, D), valid (B, T) bool or None -> (B, T, D) and the router losses.

        ``valid`` marks real tokens: padding is routed (its output is ignored) but excluded from
        the load-balancing statistics.
        """
        B, T, D = x.shape
        flat = x.reshape(B * T, D)  # (N, D)
        logits, weights, experts = self.route(flat)
        if self.implementation == "loop":
            out = self.experts_loop(flat, weights, experts)
        else:
            out = self.experts_batched(flat, weights, experts)
        if self.has_shared_expert:
            shared = self.shared_expert(flat) * torch.sigmoid(self.shared_expert_gate(flat))
            out = out + shared
        return out.view(B, T, D), self.router_losses(logits, experts, valid)

    def router_losses(self, logits: Tensor, experts: Tensor, valid: Tensor | None) -> RouterLosses:
        """Switch load balancing ``E * Σ_e f_e P_e`` (f_e: share of top-k picks, scaled by k as in
        transformers; P_e: mean router probability) and ST-MoE z-loss ``mean(logsumexp²)``."""
        keep = (
            valid.reshape(-1).to(logits.dtype)
            if valid is not None
            else logits.new_ones(logits.shape[0])
        )  # (N,)
        n = keep.sum().clamp(min=1.0)
        probs = torch.softmax(logits, dim=-1)  # (N, E)
        picks = F.one_hot(experts, self.n_experts).to(logits.dtype).sum(dim=1)  # (N, E)
        f = (picks * keep[:, None]).sum(0) / n  # (E,)
        p = (probs * keep[:, None]).sum(0) / n  # (E,)
        load_balancing = self.n_experts * (f * p).sum()
        z_loss = (torch.logsumexp(logits, dim=-1).square() * keep).sum() / n
        return RouterLosses(load_balancing=load_balancing, z_loss=z_loss)
