"""Command-line arguments shared by ``scripts/train_tokenizer.py`` and ``scripts/prepare_data.py``.

Flags are :class:`~zmaj_lm.config.data.SourceConfig` field names with dashes (``--text-field``),
except ``--source`` for ``kind``; nested fields are set with ``--set synthetic.alphabet_size=8``.
Values are validated by the config itself, so a bad flag fails with the same one-line
``<arguments>: field: reason`` message a bad YAML file would.
"""

import argparse
from typing import Any, get_args

from zmaj_lm.config.data import FileFormat, SourceConfig, SourceKind
from zmaj_lm.config.loading import apply_override, validate_config

ARGUMENTS = "<arguments>"


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the source flags to ``parser``."""
    g = parser.add_argument_group("source")
    g.add_argument("--source", choices=get_args(SourceKind), default="stdlib", help="corpus kind")
    g.add_argument("--name", help="Hub dataset name (--source hf)")
    g.add_argument("--subset", help="Hub dataset configuration (--source hf)")
    g.add_argument("--split", default="train", help="Hub dataset split to read")
    g.add_argument("--paths", nargs="+", default=[], help="local files or globs (--source files)")
    g.add_argument("--file-format", choices=get_args(FileFormat), help="format of --paths")
    g.add_argument("--text-unit", choices=["document", "paragraph", "line"], default="document")
    g.add_argument("--text-field", default="text", help="column holding the text")
    g.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--seed", type=int, default=0, help="seed of generated corpora")
    g.add_argument("--num-documents", type=int, help="documents of generated corpora")
    g.add_argument("--max-documents", type=int, help="read at most this many raw documents")
    g.add_argument("--validation-fraction", type=float, help="share of documents for validation")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other source field, dotted (e.g. synthetic.alphabet_size=8)",
    )


def source_config_from_args(args: argparse.Namespace) -> SourceConfig:
    """The validated :class:`SourceConfig` of parsed flags (raises ConfigError)."""
    data: dict[str, Any] = {
        "kind": args.source,
        "name": args.name,
        "subset": args.subset,
        "split": args.split,
        "paths": list(args.paths),
        "file_format": args.file_format,
        "text_unit": args.text_unit,
        "text_field": args.text_field,
        "streaming": args.streaming,
        "seed": args.seed,
        "max_documents": args.max_documents,
    }
    if args.num_documents is not None:
        data["num_documents"] = args.num_documents
    if args.validation_fraction is not None:
        data["validation_fraction"] = args.validation_fraction
    for override in args.set:
        apply_override(data, override, ARGUMENTS)
    return validate_config(SourceConfig, data, ARGUMENTS)
