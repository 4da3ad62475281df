"""Train a byte-level BPE tokenizer on a corpus and save ``tokenizer.json``.

    uv run scripts/train_tokenizer.py --source stdlib --vocab-size 4096 --out DIR

Trains on the source's train split (at most ``--tokenizer-train-bytes`` of it, 4 MB by default).
Flags are DataConfig fields (see ``zmaj_lm.data.cli``). Bad input prints one line to stderr and
exits with status 2.
"""

import argparse
import sys
import time

from zmaj_lm.config.loading import ConfigError
from zmaj_lm.data.cli import add_data_arguments, data_config_from_args
from zmaj_lm.data.errors import DataError
from zmaj_lm.data.sources import iter_texts
from zmaj_lm.data.tokenizer import train_bpe
from zmaj_lm.utils.logging import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_data_arguments(parser, prepare=False)
    parser.add_argument("--out", required=True, help="directory for tokenizer.json")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        cfg = data_config_from_args(args)
        started = time.perf_counter()
        tokenizer = train_bpe(
            iter_texts(cfg.source, "train"),
            cfg.vocab_size,
            cfg.special_tokens,
            max_bytes=cfg.tokenizer_train_bytes,
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
