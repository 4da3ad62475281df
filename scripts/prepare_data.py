"""Tokenise a corpus into train/validation token shards with a manifest.

    uv run scripts/prepare_data.py --source stdlib --out data/stdlib [--tokenizer PATH]

Without ``--tokenizer``/``--tokenizer-repo`` it reuses ``OUT/tokenizer/tokenizer.json`` (when its
vocabulary size matches) or trains one (``--vocab-size``) on the source's train split. Re-running
is safe: finished shards are kept, damaged ones rebuilt; shards of another tokenizer or source
are refused unless ``--overwrite``. Flags are DataConfig fields (see ``zmaj_lm.data.cli``); bad
input prints one line to stderr and exits with status 2.
"""

import argparse
import sys
import time

from zmaj_lm.config.loading import ConfigError
from zmaj_lm.data.cli import add_data_arguments, data_config_from_args
from zmaj_lm.data.errors import DataError
from zmaj_lm.data.pipeline import prepare_data
from zmaj_lm.utils.logging import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_data_arguments(parser, prepare=True)
    parser.add_argument("--overwrite", action="store_true", help="replace existing shards")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    started = time.perf_counter()
    try:
        cfg = data_config_from_args(args)
        _, manifest = prepare_data(cfg, overwrite=args.overwrite)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or '<output>'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    train, val = manifest.split("train"), manifest.split("validation")
    print(
        f"{cfg.data_dir}: train {train.num_tokens} tokens / {train.num_documents} documents / "
        f"{len(train.shards)} shards; validation {val.num_tokens} tokens / "
        f"{val.num_documents} documents; skipped {manifest.skipped_empty} empty, "
        f"{manifest.skipped_undecodable} undecodable; {manifest.dtype}; "
        f"tokenizer {manifest.tokenizer_fingerprint[:12]}; {time.perf_counter() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
