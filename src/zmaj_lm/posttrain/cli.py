"""Shared command-line handling of the post-training scripts (``scripts/sft.py`` etc.).

Arguments: ``--init CKPT`` (required), ``--config FILE`` (a YAML file with the stage's
sections), ``--out DIR``, ``--resume``, ``--export-hf``, then dotted overrides such as
``training.max_steps=50``. Bad input prints one line per problem on stderr and exits with
status 2; no traceback. The library never prints: :func:`run_stage` returns the status and the
line to show, and the script prints it.

Under ``torchrun`` every rank runs :func:`run_stage`; after a successful job the ranks meet at a
barrier and leave the process group (after a failure it is left alone, as in
``scripts/pretrain.py``).
"""

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

C = TypeVar("C", bound=BaseModel)


def stage_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--init", type=Path, required=True, help="checkpoint to start from")
    parser.add_argument("--config", type=Path, default=None, help="stage config (YAML)")
    parser.add_argument("--out", type=Path, default=Path(default_out), help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    parser.add_argument("--export-hf", action="store_true", help="also write OUT/hf")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.max_steps=50")
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (config, data, checkpoint), not a bug."""
    from zmaj_lm.config.loading import ConfigError
    from zmaj_lm.data.errors import DataError
    from zmaj_lm.interop.chat_template import ChatTemplateError
    from zmaj_lm.interop.spec import ConversionError
    from zmaj_lm.posttrain.chat import ChatError
    from zmaj_lm.posttrain.examples import ExampleError

    return (
        ConfigError,
        DataError,
        ChatError,
        ChatTemplateError,
        ExampleError,
        ConversionError,
        FileNotFoundError,
    )


def run_stage(
    argv: list[str] | None,
    description: str,
    default_out: str,
    config_cls: type[C],
    job: Callable[..., dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
) -> tuple[int, str]:
    """Parse, load and validate the config, run ``job``; returns the exit status and the line
    to print (the error for status 2, on stderr; else ``report(summary)``)."""
    args = stage_parser(description, default_out).parse_args(argv)
    from zmaj_lm.config.loading import load_config_as

    errors = user_errors()
    try:
        if not (args.init / "config.yaml").is_file():
            raise FileNotFoundError(f"{args.init}: --init: no config.yaml (not a checkpoint)")
        config = load_config_as(config_cls, args.config, args.overrides)
        summary = job(
            config,
            args.init,
            args.out,
            resume_run=args.resume,
            export_hf=args.export_hf,
            log_level=args.log_level,
        )
    except errors as exc:
        return 2, f"error: {exc}"
    from zmaj_lm.training.distributed import shutdown_distributed

    shutdown_distributed()
    return 0, report(summary)
