"""Pretrain a model from scratch: tokenizer, shards, training, evaluation, checkpoints.

    uv run scripts/pretrain.py [--config FILE] [--out DIR] [--resume] [key.path=value ...]
    torchrun --nproc_per_node=N scripts/pretrain.py --config FILE ...   # DDP / FSDP2

With no arguments it trains the tiny preset on the built-in stdlib corpus on CPU within about
five minutes (configs/pretrain/default.yaml) and writes OUT/checkpoints, OUT/metrics.jsonl,
OUT/train.log, OUT/loss_curve.png, OUT/samples.txt and OUT/summary.json. Bad configuration prints
one line per problem on stderr and exits with status 2.
"""

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "default.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="run config (YAML)")
    parser.add_argument("--out", type=Path, default=Path("runs/pretrain"), help="output dir")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.max_steps=50")
    args = parser.parse_args(argv)

    from zmaj_lm.config.loading import ConfigError
    from zmaj_lm.config.root import load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2

    from zmaj_lm.data.errors import DataError
    from zmaj_lm.training.checkpoint import CheckpointError
    from zmaj_lm.training.distributed import shutdown_distributed
    from zmaj_lm.training.loop import OutOfMemoryAdviceError, TrainingDivergedError
    from zmaj_lm.training.metrics import MissingDependencyError
    from zmaj_lm.training.pretrain import run_pretraining

    try:
        summary = run_pretraining(
            config,
            args.out,
            resume_run=args.resume,
            source=str(args.config),
            log_level=args.log_level,
        )
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (DataError, MissingDependencyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (CheckpointError, TrainingDivergedError, OutOfMemoryAdviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    shutdown_distributed()
    if "val_loss" in summary:
        bpb = summary.get("val_bpb")
        bpb_text = f", {bpb:.4f} bits per byte" if bpb is not None else ""
        print(
            f"validation loss {summary['val_loss']:.4f} nats/token "
            f"(perplexity {summary['val_ppl']:.2f}{bpb_text}) after {summary['steps']} steps; "
            f"outputs in {args.out}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
