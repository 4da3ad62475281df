"""Convert checkpoints between Hugging Face format and ours.

    uv run scripts/convert.py from-hf SRC OUT [--verify] [--allow-pickle] [--revision R]
    uv run scripts/convert.py to-hf CKPT OUT [--verify] [--max-shard-size 5GB] [--family llama]

SRC is a local HF directory or a Hub repo id (only safetensors, config and tokenizer files are
downloaded). ``--verify`` runs both models on a probe batch and writes OUT/conversion_report.json;
the command fails (status 1) when the logits differ by more than ``--tolerance``. Bad input prints
one line per problem to stderr and exits with status 2.
"""

import argparse
import json
import sys
from pathlib import Path

from zmaj_lm.config.loading import ConfigError
from zmaj_lm.interop.convert import HF_SOURCE_NAME, convert_from_hf, convert_to_hf, parse_size
from zmaj_lm.interop.families import FAMILIES
from zmaj_lm.interop.spec import ConversionError
from zmaj_lm.utils.logging import setup_logging


def _verify(ours: Path, hf: Path, out: Path, family: str, direction: str, tol: float) -> int:
    from zmaj_lm.interop.verify import verify_conversion, write_report

    report = verify_conversion(ours, hf, tolerance=tol)
    report.family, report.direction = family, direction
    path = write_report(report, out)
    if not report.passed:
        print(
            f"error: {path}: verification failed: max |logit diff| {report.max_abs_logit_diff:.3g}"
            f" > {tol:g}; first diverging: {report.first_diverging}",
            file=sys.stderr,
        )
        return 1
    print(f"verified: max |logit diff| {report.max_abs_logit_diff:.3g} <= {tol:g} ({path})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from_hf = sub.add_parser("from-hf", help="HF directory or Hub id -> our checkpoint")
    from_hf.add_argument("src", help="local HF directory or Hub repo id (org/name)")
    from_hf.add_argument("out", help="our checkpoint directory to write")
    from_hf.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    from_hf.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept pytorch_model*.bin (loaded with torch.load(weights_only=True))",
    )
    to_hf = sub.add_parser("to-hf", help="our checkpoint -> HF directory")
    to_hf.add_argument("ckpt", help="our checkpoint directory (model.safetensors + config.yaml)")
    to_hf.add_argument("out", help="HF directory to write")
    to_hf.add_argument("--max-shard-size", help="split weights into shards of this size (5GB)")
    to_hf.add_argument(
        "--family", choices=sorted(FAMILIES), help="export as this family (checked, not trusted)"
    )
    for p in (from_hf, to_hf):
        p.add_argument("--verify", action="store_true", help="compare logits with transformers")
        p.add_argument("--tolerance", type=float, default=1e-4, help="max |logit diff| (fp32)")
        p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
        p.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    out = Path(args.out)
    max_shard = None
    if getattr(args, "max_shard_size", None):
        try:
            max_shard = parse_size(args.max_shard_size)
        except ValueError as err:
            print(f"error: --max-shard-size: {err}", file=sys.stderr)
            return 2
    try:
        if args.command == "from-hf":
            convert_from_hf(
                args.src,
                out,
                allow_pickle=args.allow_pickle,
                overwrite=args.overwrite,
                revision=args.revision,
            )
            if args.verify:
                src = Path(args.src)
                if not src.is_dir():
                    from zmaj_lm.interop.convert import resolve_source

                    src = resolve_source(args.src, revision=args.revision)
                family = json.loads((out / HF_SOURCE_NAME).read_text())["model_type"]
                return _verify(out, src, out, family, "from-hf", args.tolerance)
        else:
            family = convert_to_hf(
                args.ckpt,
                out,
                max_shard_bytes=max_shard,
                family=args.family,
                overwrite=args.overwrite,
            )
            if args.verify:
                return _verify(Path(args.ckpt), out, out, family, "to-hf", args.tolerance)
    except (ConversionError, ConfigError) as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
