"""Supervised fine-tuning on conversations or prompt/completion pairs (loss on assistant tokens).

    uv run scripts/sft.py --init CKPT [--config FILE] [--out DIR] [--resume] [--export-hf]
                          [key.path=value ...]
    torchrun --nproc_per_node=N scripts/sft.py --init CKPT ...   # DDP, loader.batch_size per rank

The config holds ``data:``, ``chat:``, ``loader:``, ``training:`` and optionally ``lora:``
(see zmaj_lm.config.posttrain.SFTConfig); without one, the arithmetic set is used. Writes
OUT/model (next stage's --init), OUT/adapter (LoRA, PEFT layout), OUT/summary.json.
"""

import sys
from typing import Any


def _report(summary: dict[str, Any]) -> str:
    acc = summary.get("accuracy")
    acc_text = f", held-out accuracy {acc:.3f}" if acc is not None else ""
    return (
        f"SFT: {summary['steps']} steps, held-out loss {summary['val_loss']:.4f}{acc_text}; "
        f"model in {summary['outputs']['model']}"
    )


def main(argv: list[str] | None = None) -> int:
    from zmaj_lm.config.posttrain import SFTConfig
    from zmaj_lm.posttrain.cli import run_stage
    from zmaj_lm.posttrain.train import run_sft

    status, line = run_stage(argv, __doc__.split("\n")[0], "runs/sft", SFTConfig, run_sft, _report)
    print(line, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
