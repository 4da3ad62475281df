"""Sampling settings for :func:`zmaj_lm.models.generation.generate`."""

from pydantic import Field

from zmaj_lm.config.base import StrictModel


class SamplingConfig(StrictModel):
    """How the next token is chosen from the logits. Temperature 0 is greedy decoding."""

    max_new_tokens: int = Field(default=64, ge=0)
    """Tokens to generate per prompt (fewer when a stop token appears)."""
    temperature: float = Field(default=1.0, ge=0)
    """Logits are divided by it; 0 picks the argmax."""
    top_k: int | None = Field(default=None, gt=0)
    """Keep only the k most likely tokens."""
    top_p: float | None = Field(default=None, gt=0, le=1)
    """Keep the smallest set of tokens whose probability mass reaches p (nucleus sampling)."""
    min_p: float | None = Field(default=None, gt=0, le=1)
    """Drop tokens less likely than min_p times the most likely token's probability."""
    repetition_penalty: float = Field(default=1.0, gt=0)
    """CTRL penalty: logits of tokens already in the sequence are divided (if positive) or
    multiplied (if negative) by it. 1.0 disables it."""
    stop_token_ids: list[int] = Field(default_factory=list)
    """Generation of a sequence ends after any of these tokens (which is not returned)."""
