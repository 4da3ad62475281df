"""The supported transformers families, and choosing one for a config by its features."""

from zmaj_lm.config.model import ModelConfig
from zmaj_lm.interop.families import gemma, gpt2, llama, mistral, olmo2, qwen2, qwen3, qwen3_moe
from zmaj_lm.interop.spec import ConversionError, Family

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        llama.FAMILY,
        mistral.FAMILY,
        qwen2.FAMILY,
        qwen3.FAMILY,
        qwen3_moe.FAMILY,
        gemma.FAMILY,
        olmo2.FAMILY,
        gpt2.FAMILY,
    )
}
"""By ``model_type``, in the order export tries them (most widely supported first)."""


def family_for_model_type(model_type: object) -> Family:
    """The family of a config.json's ``model_type``."""
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise ConversionError(
            [
                f"config.json: model_type: {model_type!r} is not supported "
                f"(supported: {', '.join(FAMILIES)})"
            ]
        )
    return FAMILIES[model_type]


def choose_family(
    config: ModelConfig, *, prefer: str | None = None, force: str | None = None
) -> Family:
    """The family that expresses every feature of ``config``.

    Chosen from the features alone: ``prefer`` (the family the checkpoint was converted from)
    only breaks ties among families that can all express it, such as a Mistral without a sliding
    window, which Llama expresses too. ``force`` (the user's explicit choice) is checked like any
    other and refused, naming the features it lacks, when it cannot express the config.
    """
    if force is not None:
        family = family_for_model_type(force)
        lacking = family.unsupported(config)
        if lacking:
            raise ConversionError(
                [f"cannot export as {force}: it does not express {', '.join(lacking)}"]
            )
        return family
    if prefer in FAMILIES and not FAMILIES[prefer].unsupported(config):
        return FAMILIES[prefer]
    for family in FAMILIES.values():
        if not family.unsupported(config):
            return family
    closest = min(FAMILIES.values(), key=lambda f: len(f.unsupported(config)))
    raise ConversionError(
        [
            "no transformers family expresses this model; the closest, "
            f"{closest.model_type}, lacks: {', '.join(closest.unsupported(config))}"
        ]
    )
