"""GRPO benchmark: where a step's time goes (rollouts vs. the policy update), and what batching
the rollouts buys.

1. A few GRPO steps of a tiny model through the real fit loop (``run_grpo`` on a random init):
   rollout seconds, update seconds and the rollout share (generation dominates GRPO time, TRL
   #2971).
2. Generating the same P x G completions in one batched ``generate`` call against one call per
   prompt group and one per completion: seconds of each and the ratios.

    uv run python bench/grpo.py [--steps 6] [--prompts 16] [--group 8]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from zmaj_lm.config.generation import SamplingConfig
from zmaj_lm.config.model import ModelConfig
from zmaj_lm.config.posttrain import GRPOConfig
from zmaj_lm.data.tokenizer import train_bpe
from zmaj_lm.models.generation import generate
from zmaj_lm.models.io import save_model
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.posttrain.train import run_grpo
from zmaj_lm.utils.logging import setup_logging


def model_config() -> ModelConfig:
    return ModelConfig(
        vocab_size=264,
        d_model=128,
        n_layers=3,
        n_heads=4,
        d_ff=384,
        max_seq_len=64,
        tie_embeddings=True,
    )


def rollout_share(steps: int, prompts: int, group: int, threads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        init = Path(tmp) / "init"
        torch.manual_seed(0)
        save_model(Transformer(model_config()), init)
        train_bpe(["0123456789+="], 263).save(init / "tokenizer")
        cfg = GRPOConfig.model_validate(
            {
                "data": {
                    "num_examples": 2000,
                    "arithmetic": {"max_operand": 999, "operations": ["+"]},
                },
                "loader": {"batch_size": prompts},
                "num_generations": group,
                "max_new_tokens": 6,
                "eval_problems": 1,
                "training": {
                    "max_steps": steps,
                    "device": "cpu",
                    "num_threads": threads,
                    "checkpoint": {"save_final": False},
                    "logging": {"progress_bar": False, "plot": False, "every": 100},
                    "eval": {"num_samples": 0},
                },
            }
        )
        s = run_grpo(cfg, init, Path(tmp) / "out", log_level="WARNING")
    update = s["train_time_s"]
    print(
        f"GRPO {steps} steps, {prompts} prompts x {group}: rollouts {s['rollout_time_s']:.2f}s, "
        f"update {update:.2f}s, rollout share {100 * s['rollout_share']:.0f}%"
    )


def batching(prompts: int, group: int) -> None:
    torch.manual_seed(0)
    model = Transformer(model_config()).eval()
    ids = [[1, *torch.randint(10, 200, (8,)).tolist()] for _ in range(prompts)]
    cfg = SamplingConfig(max_new_tokens=6, temperature=1.0)

    def timed(batches: list[list[list[int]]]) -> float:
        t0 = time.perf_counter()
        for b in batches:
            generate(model, b, cfg, generator=torch.Generator().manual_seed(0))
        return time.perf_counter() - t0

    everything = [[p for p in ids for _ in range(group)]]
    per_prompt = [[p] * group for p in ids]
    per_completion = [[p] for p in ids for _ in range(group)]
    timed(everything)
    t_all, t_prompt, t_one = timed(everything), timed(per_prompt), timed(per_completion)
    print(
        f"generate {prompts} x {group} completions: one batch {t_all:.3f}s, per prompt "
        f"{t_prompt:.3f}s ({t_prompt / t_all:.1f}x), per completion {t_one:.3f}s "
        f"({t_one / t_all:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    setup_logging("WARNING")
    torch.set_num_threads(args.threads)
    rollout_share(args.steps, args.prompts, args.group, args.threads)
    batching(args.prompts, args.group)


if __name__ == "__main__":
    main()
