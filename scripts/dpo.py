"""Direct preference optimisation (sigmoid DPO, IPO or SimPO) on (prompt, chosen, rejected).

    uv run scripts/dpo.py --init CKPT [--config FILE] [--out DIR] [--resume] [--export-hf]
                          [key.path=value ...]
    torchrun --nproc_per_node=N scripts/dpo.py --init CKPT ...   # DDP, loader.batch_size per rank

The init checkpoint is also the reference; its log-probabilities are computed once and cached in
OUT/ref_logps.safetensors. See zmaj_lm.config.posttrain.DPOConfig for the fields.
"""

import sys
from typing import Any


def _report(summary: dict[str, Any]) -> str:
    return (
        f"DPO: {summary['steps']} steps, held-out preference accuracy "
        f"{summary['pref_accuracy_before']:.3f} -> {summary['pref_accuracy_after']:.3f}; "
        f"model in {summary['outputs']['model']}"
    )


def main(argv: list[str] | None = None) -> int:
    from zmaj_lm.config.posttrain import DPOConfig
    from zmaj_lm.posttrain.cli import run_stage
    from zmaj_lm.posttrain.train import run_dpo

    status, line = run_stage(argv, __doc__.split("\n")[0], "runs/dpo", DPOConfig, run_dpo, _report)
    print(line, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
