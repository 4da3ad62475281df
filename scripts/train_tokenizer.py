"""Train a byte-level BPE tokenizer on a corpus and save ``tokenizer.json``.

    uv run scripts/train_tokenizer.py --source stdlib --vocab-size 4096 --out DIR

Trains on the source's train split (at most ``--max-bytes`` of it). Bad input prints one line to
stderr and exits with status 2.
"""

import argparse
import sys
import time

from zmaj_lm.config.data import DEFAULT_SPECIAL_TOKENS
from zmaj_lm.config.loading import ConfigError
from zmaj_lm.data.cli import add_source_arguments, source_config_from_args
from zmaj_lm.data.errors import DataError
from zmaj_lm.data.sources import iter_texts
from zmaj_lm.data.tokenizer import train_bpe
from zmaj_lm.utils.logging import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_source_arguments(parser)
    parser.add_argument("--vocab-size", type=int, default=4096, help="ids including specials")
    parser.add_argument(
        "--special-tokens",
        nargs="+",
        default=list(DEFAULT_SPECIAL_TOKENS),
        help="special tokens, ids 0.. in this order",
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=4_000_000,
        help="train on at most this many UTF-8 bytes (0: all)",
    )
    parser.add_argument("--out", required=True, help="directory for tokenizer.json")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        source = source_config_from_args(args)
        started = time.perf_counter()
        tokenizer = train_bpe(
            iter_texts(source, "train"),
            args.vocab_size,
            args.special_tokens,
            max_bytes=args.max_bytes or None,
        )
        path = tokenizer.save(args.out)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(
        f"{path}: {tokenizer.vocab_size} ids, eos={tokenizer.eos_id}, bos={tokenizer.bos_id}, "
        f"pad={tokenizer.pad_id}, fingerprint {tokenizer.fingerprint[:12]}, "
        f"{time.perf_counter() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
