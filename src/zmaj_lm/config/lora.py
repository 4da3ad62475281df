"""LoRA adapter settings (Hu et al., 2021)."""

from pydantic import Field

from zmaj_lm.config.base import StrictModel


class LoRAConfig(StrictModel):
    """Low-rank adapters added to chosen linear layers; only the adapters train."""

    rank: int = Field(default=8, gt=0)
    """Rank r of the update B·A."""
    alpha: float = Field(default=16.0, gt=0)
    """The update is scaled by alpha / rank."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapter's input during training."""
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1
    )
    """Names of the linear layers that get adapters (matched against the module's last name)."""
