"""Check a conversion by running both models: our Transformer and transformers' on the same weights.

A probe batch of random tokens, one row left-padded, goes through both in fp32 (transformers with
an attention mask and position ids counting real tokens; ours with document id -1 on padding).
The report holds the largest logit difference over real tokens and the difference after every
layer (transformers' ``output_hidden_states``), so a failure names the first layer that diverges
instead of just "logits differ".

transformers is a development dependency: it is imported here, inside the function, and nothing
else in the package needs it.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zmaj_lm.models.io import load_model
from zmaj_lm.utils.io import atomic_write_json

REPORT_NAME = "conversion_report.json"


@dataclass
class VerificationReport:
    """What ``--verify`` found; written as ``conversion_report.json``."""

    passed: bool
    max_abs_logit_diff: float
    tolerance: float
    probe_shape: list[int]
    layer_max_abs_diff: dict[str, float] = field(default_factory=dict)
    first_diverging: str | None = None
    hf_dir: str = ""
    ours_dir: str = ""
    family: str = ""
    direction: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _probe_batch(vocab_size: int, seq_len: int, seed: int) -> tuple[Tensor, Tensor]:
    """Random ids (2, T) and an attention mask with the second row left-padded by T // 3."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (2, seq_len), generator=gen)
    mask = torch.ones(2, seq_len, dtype=torch.long)
    mask[1, : seq_len // 3] = 0
    return ids, mask


@torch.no_grad()
def verify_conversion(
    ours_dir: str | Path,
    hf_dir: str | Path,
    *,
    tolerance: float = 1e-4,
    seq_len: int = 16,
    seed: int = 0,
) -> VerificationReport:
    """Compare our checkpoint at ``ours_dir`` with the HF checkpoint at ``hf_dir`` (fp32, CPU)."""
    from transformers import AutoModelForCausalLM

    ours = load_model(ours_dir, dtype=torch.float32).eval()
    hf = AutoModelForCausalLM.from_pretrained(
        str(hf_dir), dtype=torch.float32, attn_implementation="eager"
    )
    hf.train(False)
    seq_len = min(seq_len, ours.config.max_seq_len)
    ids, mask = _probe_batch(ours.config.vocab_size, seq_len, seed)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    real = mask.bool()

    captured: list[Tensor] = []
    handles = [ours.layers[0].register_forward_pre_hook(lambda m, a: captured.append(a[0]))]
    handles += [b.register_forward_hook(lambda m, a, o: captured.append(o[0])) for b in ours.layers]
    try:
        logits = ours(ids, position_ids=positions, document_ids=torch.where(real, 0, -1)).logits
    finally:
        for h in handles:
            h.remove()
    if ours.has_final_norm:
        captured[-1] = ours.norm(captured[-1])
    out = hf(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True)

    names = ["embeddings"] + [f"layer {i}" for i in range(ours.config.n_layers)]
    names[-1] += " (+ final norm)"
    layer_diffs: dict[str, float] = {}
    first: str | None = None
    for name, a, b in zip(names, captured, out.hidden_states, strict=False):
        diff = float((a - b)[real].abs().max())
        layer_diffs[name] = diff
        if first is None and not diff <= tolerance:
            first = name
    max_diff = float((logits - out.logits)[real].abs().max())
    passed = max_diff <= tolerance
    return VerificationReport(
        passed=passed,
        max_abs_logit_diff=max_diff,
        tolerance=tolerance,
        probe_shape=list(ids.shape),
        layer_max_abs_diff=layer_diffs,
        first_diverging=first if passed or first is not None else "logits",
        hf_dir=str(hf_dir),
        ours_dir=str(ours_dir),
    )


def write_report(report: VerificationReport, directory: str | Path) -> Path:
    """Write ``conversion_report.json`` into ``directory``."""
    path = Path(directory) / REPORT_NAME
    atomic_write_json(path, report.to_dict())
    return path
