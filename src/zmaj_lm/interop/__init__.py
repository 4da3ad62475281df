"""Hugging Face interoperability: checkpoint conversion both ways, chat templates, the Hub.

Nothing here imports transformers at module level (it is a development dependency, used only to
verify conversions); safetensors, huggingface_hub and jinja2 are the runtime needs.
"""

from zmaj_lm.interop.convert import convert_from_hf, convert_to_hf
from zmaj_lm.interop.families import FAMILIES, choose_family
from zmaj_lm.interop.spec import ConversionError, Family

__all__ = [
    "FAMILIES",
    "ConversionError",
    "Family",
    "choose_family",
    "convert_from_hf",
    "convert_to_hf",
]
