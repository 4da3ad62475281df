"""Perplexity and bits per byte of a checkpoint on prepared data.

    uv run scripts/evaluate.py --checkpoint runs/pretrain --data data/stdlib \
        [--split validation] [--seq-len N] [--batch-size B] [--max-batches K] [--json]

``--data`` is a directory made by ``scripts/prepare_data.py`` (or the pretraining job) with the
same tokenizer as the checkpoint. The loss is token-weighted over the whole split (or the first
``--max-batches`` batches); bits per byte use the split's UTF-8 byte count from the manifest.
Bad input prints one line on stderr and exits with status 2.
"""

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory")
    parser.add_argument("--split", default="validation", choices=["train", "validation"])
    parser.add_argument("--seq-len", type=int, default=None, help="default: model max_seq_len")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    import torch

    from zmaj_lm.config.loading import ConfigError
    from zmaj_lm.data.errors import DataError
    from zmaj_lm.data.loader import PackedLoader
    from zmaj_lm.data.shards import read_manifest
    from zmaj_lm.data.tokenizer import Tokenizer
    from zmaj_lm.eval.perplexity import evaluate
    from zmaj_lm.models.io import load_model
    from zmaj_lm.training.checkpoint import TOKENIZER_DIR, CheckpointError, resolve_checkpoint
    from zmaj_lm.utils.logging import setup_logging

    setup_logging("WARNING")
    try:
        if args.batch_size < 1 or (args.max_batches is not None and args.max_batches < 1):
            raise ValueError("--batch-size and --max-batches must be >= 1")
        ckpt = resolve_checkpoint(args.checkpoint)
        model = load_model(ckpt)
        manifest = read_manifest(args.data)
        if manifest is None:
            raise ValueError(f"--data: {args.data}: no manifest.json (run prepare_data.py)")
        fingerprint = None
        if (ckpt / TOKENIZER_DIR).is_dir():
            fingerprint = Tokenizer.load(ckpt / TOKENIZER_DIR).fingerprint
        seq_len = args.seq_len or model.config.max_seq_len
        if seq_len > model.config.max_seq_len or seq_len < 2:
            raise ValueError(f"--seq-len: {seq_len} not in [2, {model.config.max_seq_len}]")
        loader = PackedLoader(
            args.data,
            seq_len=seq_len,
            batch_size=args.batch_size,
            infinite=False,
            shuffle=False,
            split=args.split,
            tokenizer_fingerprint=fingerprint,
        )
    except (CheckpointError, ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = manifest.split(args.split)
    supervised = info.num_tokens - info.num_documents
    bpt = info.num_bytes / supervised if supervised > 0 else None
    result = evaluate(
        model,
        loader,
        device=torch.device("cpu"),
        max_batches=args.max_batches,
        bytes_per_token=bpt,
        source_names=loader.source_names,
    )
    figures = {"checkpoint": str(ckpt), "split": args.split, **result.as_dict(prefix="")}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        bpb = f"  bits/byte {result.bits_per_byte:.4f}" if result.bits_per_byte else ""
        print(
            f"{ckpt} on {args.data} [{args.split}]: loss {result.loss:.4f} nats/token  "
            f"perplexity {result.perplexity:.2f}{bpb}  ({result.n_tokens} tokens)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
