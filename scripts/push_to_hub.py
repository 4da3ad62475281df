"""Export a checkpoint to transformers format, write a model card, and upload it to the Hub.

    uv run scripts/push_to_hub.py --checkpoint DIR --repo-id ORG/NAME [--private] [--revision R]
        [--dry-run] [--out FOLDER] [--license L] [--base-model ID] [--dataset NAME ...]

The folder (default: DIR-hf beside the checkpoint) is prepared first: HF weights, config,
tokenizer, README.md with YAML metadata, and conversion_report.json. ``--dry-run`` stops there.
The token comes from HF_TOKEN or ``huggingface-cli login`` and is never printed. Bad input exits
with status 2, a failed verification or upload with status 1; local files are always kept.
"""

import argparse
import re
import sys
from pathlib import Path

from zmaj_lm.config.loading import ConfigError
from zmaj_lm.interop.convert import parse_size
from zmaj_lm.interop.hub import HubError, prepare_hub_folder, upload_folder
from zmaj_lm.interop.spec import ConversionError
from zmaj_lm.utils.logging import setup_logging

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="our checkpoint directory")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="branch to push to (created if missing)")
    parser.add_argument("--dry-run", action="store_true", help="prepare the folder, upload nothing")
    parser.add_argument("--out", help="folder to prepare (default: CHECKPOINT-hf)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--max-shard-size", help="shard weights above this size (e.g. 5GB)")
    parser.add_argument("--no-verify", action="store_true", help="skip the logits comparison")
    parser.add_argument("--license", default="apache-2.0", help="model card license")
    parser.add_argument("--base-model", help="model card base_model (default: the source repo)")
    parser.add_argument("--dataset", action="append", default=[], help="model card dataset")
    parser.add_argument("--tag", action="append", default=[], help="extra model card tag")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    ckpt = Path(args.checkpoint)
    if not _REPO_ID.match(args.repo_id):
        print(f"error: --repo-id: {args.repo_id!r} is not ORG/NAME", file=sys.stderr)
        return 2
    try:
        max_shard = parse_size(args.max_shard_size) if args.max_shard_size else None
    except ValueError as err:
        print(f"error: --max-shard-size: {err}", file=sys.stderr)
        return 2
    folder = Path(args.out) if args.out else ckpt.with_name(f"{ckpt.name}-hf")
    try:
        prepare_hub_folder(
            ckpt,
            folder,
            args.repo_id,
            verify=not args.no_verify,
            max_shard_bytes=max_shard,
            overwrite=args.overwrite,
            license=args.license,
            base_model=args.base_model,
            datasets=args.dataset,
            tags=args.tag,
        )
    except (ConversionError, ConfigError) as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"dry run: prepared {folder}; nothing uploaded")
        return 0
    try:
        url = upload_folder(folder, args.repo_id, private=args.private, revision=args.revision)
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"uploaded {folder} to {args.repo_id}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
