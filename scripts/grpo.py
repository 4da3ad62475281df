"""Group relative policy optimisation with verifiable rewards (exact answer, format).

    uv run scripts/grpo.py --init CKPT [--config FILE] [--out DIR] [--resume] [--export-hf]
                           [key.path=value ...]

Samples num_generations completions per prompt with the KV-cache generator, normalises rewards
within each group, and trains with the clipped ratio and a k3 KL penalty to the init model.
OUT/summary.json reports accuracy before/after and the rollout share of training time.

    torchrun --nproc_per_node=N scripts/grpo.py --init CKPT ...   # DDP, loader.batch_size per rank

Each rank rolls out its own share of every global micro-batch's prompts (whole groups); rollout
statistics are summed over ranks; rank 0 alone evaluates and writes. With sampling_seed=prompt
N processes sample exactly the completions one process with N x batch_size samples.
"""

import sys
from typing import Any


def _report(summary: dict[str, Any]) -> str:
    return (
        f"GRPO: {summary['steps']} steps, held-out exact match "
        f"{summary['accuracy_before']:.3f} -> {summary['accuracy_after']:.3f}, rollouts "
        f"{100 * summary['rollout_share']:.0f}% of training time; "
        f"model in {summary['outputs']['model']}"
    )


def main(argv: list[str] | None = None) -> int:
    from zmaj_lm.config.posttrain import GRPOConfig
    from zmaj_lm.posttrain.cli import run_stage
    from zmaj_lm.posttrain.train import run_grpo

    status, line = run_stage(
        argv, __doc__.split("\n")[0], "runs/grpo", GRPOConfig, run_grpo, _report
    )
    print(line, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
