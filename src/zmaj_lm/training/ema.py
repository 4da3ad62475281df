"""Exponential moving average of the weights (Polyak averaging).

``shadow = decay * shadow + (1 - decay) * param`` after every optimizer step, in fp32. Evaluation
can swap the averages in (:meth:`EMA.swapped`); checkpoints store them in the trainer state so a
resumed run continues the same average.
"""

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from zmaj_lm.models.io import clean_state_dict


def _full(t: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


class EMA:
    """Shadow copies of ``model``'s trainable parameters, keyed by clean parameter name."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.params = self._named(model)
        self.shadow = {k: p.detach().float().clone() for k, p in self.params.items()}

    @staticmethod
    def _named(model: nn.Module) -> dict[str, Tensor]:
        named: dict[str, Tensor] = {n: p for n, p in model.named_parameters() if p.requires_grad}
        return clean_state_dict(named)

    @torch.no_grad()
    def update(self) -> None:
        """Move every average a step towards the current weights."""
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped(self) -> Iterator[None]:
        """Temporarily load the averages into the model (for evaluation), then restore."""
        backup = {k: p.detach().clone() for k, p in self.params.items()}
        for k, p in self.params.items():
            p.copy_(self.shadow[k].to(p.dtype))
        try:
            yield
        finally:
            for k, p in self.params.items():
                p.copy_(backup[k])

    def state_dict(self) -> dict[str, Tensor]:
        """Full (unsharded) CPU fp32 averages; collective under FSDP."""
        return {k: _full(v).detach().cpu().clone() for k, v in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore averages saved by :meth:`state_dict` (re-sharded like the parameters)."""
        from torch.distributed.tensor import DTensor, distribute_tensor

        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)}")
        for k, cur in self.shadow.items():
            value = state[k].to(torch.float32)
            if isinstance(cur, DTensor):
                value = distribute_tensor(value.to(cur.device), cur.device_mesh, cur.placements)
            self.shadow[k] = value.to(cur.device) if not isinstance(cur, DTensor) else value
