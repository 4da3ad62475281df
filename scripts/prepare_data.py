"""Tokenise a corpus into train/validation token shards with a manifest.

    uv run scripts/prepare_data.py --source stdlib --out data/stdlib [--tokenizer PATH]

Without ``--tokenizer``/``--tokenizer-repo`` it reuses ``OUT/tokenizer/tokenizer.json`` or trains
one (``--vocab-size``) on the source's train split. Re-running is safe: finished shards are kept,
damaged ones rebuilt. Bad input prints one line to stderr and exits with status 2.
"""

import argparse
import sys
import time
from pathlib import Path

from zmaj_lm.config.data import DEFAULT_SPECIAL_TOKENS
from zmaj_lm.config.loading import ConfigError
from zmaj_lm.data.cli import add_source_arguments, source_config_from_args
from zmaj_lm.data.errors import DataError
from zmaj_lm.data.prepare import TOKENIZER_DIR, prepare_shards
from zmaj_lm.data.sources import iter_texts
from zmaj_lm.data.tokenizer import TOKENIZER_FILE, Tokenizer, train_bpe
from zmaj_lm.utils.logging import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_source_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory")
    tok = parser.add_argument_group("tokenizer")
    tok.add_argument("--tokenizer", help="tokenizer.json or a directory holding it")
    tok.add_argument("--tokenizer-repo", help="Hub repository to take the tokenizer from")
    tok.add_argument("--tokenizer-revision", help="revision of --tokenizer-repo")
    tok.add_argument("--vocab-size", type=int, default=4096, help="when training a tokenizer")
    tok.add_argument(
        "--tokenizer-train-bytes",
        type=int,
        default=4_000_000,
        help="train the tokenizer on at most this many bytes (0: all)",
    )
    parser.add_argument("--shard-tokens", type=int, default=1 << 22, help="tokens per shard")
    parser.add_argument("--add-bos", action="store_true", help="prepend BOS to every document")
    parser.add_argument("--num-workers", type=int, default=2, help="tokenising threads")
    parser.add_argument("--overwrite", action="store_true", help="replace existing shards")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.shard_tokens < 1 or args.num_workers < 1:
        print("error: <arguments>: --shard-tokens and --num-workers must be >= 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        source = source_config_from_args(args)
        out = Path(args.out)
        if args.tokenizer:
            tokenizer = Tokenizer.load(args.tokenizer)
        elif args.tokenizer_repo:
            tokenizer = Tokenizer.from_hub(args.tokenizer_repo, args.tokenizer_revision)
        elif (out / TOKENIZER_DIR / TOKENIZER_FILE).is_file() and not args.overwrite:
            tokenizer = Tokenizer.load(out / TOKENIZER_DIR)
        else:
            tokenizer = train_bpe(
                iter_texts(source, "train"),
                args.vocab_size,
                DEFAULT_SPECIAL_TOKENS,
                max_bytes=args.tokenizer_train_bytes or None,
            )
        manifest = prepare_shards(
            source,
            tokenizer,
            out,
            shard_tokens=args.shard_tokens,
            add_bos=args.add_bos,
            num_workers=args.num_workers,
            overwrite=args.overwrite,
        )
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    train, val = manifest.split("train"), manifest.split("validation")
    print(
        f"{out}: train {train.num_tokens} tokens / {train.num_documents} documents / "
        f"{len(train.shards)} shards; validation {val.num_tokens} tokens / "
        f"{val.num_documents} documents; skipped {manifest.skipped_empty} empty, "
        f"{manifest.skipped_undecodable} undecodable; {manifest.dtype}; "
        f"tokenizer {manifest.tokenizer_fingerprint[:12]}; {time.perf_counter() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
