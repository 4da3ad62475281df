"""Command-line flags of ``scripts/train_tokenizer.py`` and ``scripts/prepare_data.py``.

Every flag is a :class:`~zmaj_lm.config.data.DataConfig` field with dashes: ``--text-field`` sets
``source.text_field``, ``--vocab-size`` sets ``vocab_size``. Exceptions, for brevity: ``--source``
sets ``source.kind``, ``--source-seed`` sets ``source.seed`` and ``--out`` sets ``data_dir``.
``--config FILE`` reads the ``data:`` section of a YAML file first, flags then override it, and
``--set source.synthetic.alphabet_size=8`` reaches any other field. The config validates the
result, so a bad flag fails with the same one-line ``file: field: reason`` a bad YAML would.
"""

import argparse
from typing import Any, get_args

from zmaj_lm.config.data import DataConfig, FileFormat, SourceKind
from zmaj_lm.config.loading import apply_override, read_yaml, validate_config

ARGUMENTS = "<arguments>"

_SOURCE_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--source", "source.kind", {"choices": get_args(SourceKind), "help": "corpus kind"}),
    ("--name", "source.name", {"help": "Hub dataset name (--source hf)"}),
    ("--subset", "source.subset", {"help": "Hub dataset configuration (--source hf)"}),
    ("--split", "source.split", {"help": "Hub dataset split to read"}),
    ("--paths", "source.paths", {"nargs": "+", "help": "local files or globs (--source files)"}),
    ("--file-format", "source.file_format", {"choices": get_args(FileFormat)}),
    ("--text-unit", "source.text_unit", {"choices": ["document", "paragraph", "line"]}),
    ("--text-field", "source.text_field", {"help": "column holding the text"}),
    ("--source-field", "source.source_field", {"help": "column holding a source label"}),
    ("--streaming", "source.streaming", {"action": argparse.BooleanOptionalAction}),
    ("--source-seed", "source.seed", {"type": int, "help": "seed of generated corpora"}),
    ("--num-documents", "source.num_documents", {"type": int, "help": "generated documents"}),
    ("--max-documents", "source.max_documents", {"type": int, "help": "raw documents to read"}),
    ("--validation-fraction", "source.validation_fraction", {"type": float}),
]
_TOKENIZER_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--vocab-size", "vocab_size", {"type": int, "help": "ids of a trained tokenizer"}),
    ("--special-tokens", "special_tokens", {"nargs": "+", "help": "of a trained tokenizer"}),
    ("--tokenizer-train-bytes", "tokenizer_train_bytes", {"type": int}),
]
_PREPARE_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--out", "data_dir", {"help": "output directory (data_dir)"}),
    ("--tokenizer", "tokenizer", {"help": "tokenizer.json or a directory holding it"}),
    ("--tokenizer-repo", "tokenizer_repo", {"help": "Hub repository of the tokenizer"}),
    ("--tokenizer-revision", "tokenizer_revision", {}),
    ("--shard-tokens", "shard_tokens", {"type": int, "help": "tokens per shard"}),
    ("--add-bos", "add_bos", {"action": argparse.BooleanOptionalAction}),
    ("--num-workers", "num_workers", {"type": int, "help": "tokenising threads"}),
]


def _add(group: Any, flags: list[tuple[str, str, dict[str, Any]]]) -> None:
    for flag, field, kwargs in flags:
        if "action" not in kwargs and "choices" not in kwargs:
            kwargs = {"metavar": field.rsplit(".", 1)[-1].upper(), **kwargs}
        group.add_argument(flag, dest=field, default=argparse.SUPPRESS, **kwargs)


def add_data_arguments(parser: argparse.ArgumentParser, *, prepare: bool) -> None:
    """Source and tokenizer flags, plus output/shard flags when ``prepare``."""
    parser.add_argument("--config", help="YAML file whose data: section is the starting point")
    _add(parser.add_argument_group("source"), _SOURCE_FLAGS)
    _add(parser.add_argument_group("tokenizer"), _TOKENIZER_FLAGS)
    if prepare:
        _add(parser.add_argument_group("preparation"), _PREPARE_FLAGS)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any DataConfig field, dotted (e.g. source.synthetic.alphabet_size=8)",
    )


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    """The validated :class:`DataConfig` of ``--config`` plus flags (raises ConfigError)."""
    data: dict[str, Any] = {}
    where = ARGUMENTS
    if args.config:
        raw = read_yaml(args.config)
        data = raw.get("data", raw) if isinstance(raw.get("data", raw), dict) else {}
        where = str(args.config)
    given = vars(args)
    for _, field, _ in _SOURCE_FLAGS + _TOKENIZER_FLAGS + _PREPARE_FLAGS:
        if field in given:
            node = data
            *parents, leaf = field.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = given[field]
    for override in args.set:
        apply_override(data, override, where)
    return validate_config(DataConfig, data, where)
