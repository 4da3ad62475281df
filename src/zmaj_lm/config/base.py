"""The base every zmaj-lm config inherits from.

Configs are frozen (a run cannot silently mutate its own settings), forbid unknown fields (a typo
such as ``n_layer`` must fail instead of building a different model than the author thought), and
turn each field's docstring into its description so the YAML presets document themselves.
"""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Frozen pydantic model that rejects unknown fields and documents fields from docstrings."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )
