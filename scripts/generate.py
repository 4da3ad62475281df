"""Generate text from a checkpoint, streaming it to stdout.

    uv run scripts/generate.py --checkpoint runs/pretrain --prompt "def " \
        [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]

``--checkpoint`` is a step directory, a ``checkpoints`` directory or a run directory (its latest
checkpoint is used). Temperature 0 is greedy decoding; generation stops at the tokenizer's EOS.
Bad input prints one line on stderr and exits with status 2.
"""

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step with torch.compile (a one-off cost of seconds to minutes; "
        "pays off for long generations)",
    )
    args = parser.parse_args(argv)

    import torch
    from pydantic import ValidationError

    from zmaj_lm.config.generation import SamplingConfig
    from zmaj_lm.config.loading import ConfigError
    from zmaj_lm.data.errors import DataError
    from zmaj_lm.data.tokenizer import Tokenizer
    from zmaj_lm.models.generation import generate
    from zmaj_lm.models.io import load_model
    from zmaj_lm.training.checkpoint import TOKENIZER_DIR, CheckpointError, resolve_checkpoint
    from zmaj_lm.utils.logging import setup_logging

    setup_logging("WARNING")
    try:
        ckpt = resolve_checkpoint(args.checkpoint)
        tokenizer = Tokenizer.load(ckpt / TOKENIZER_DIR)
        model = load_model(ckpt)
        prompt = tokenizer.encode(args.prompt)
        if tokenizer.bos_id is not None:
            prompt = [tokenizer.bos_id, *prompt]
        if not prompt:
            raise ValueError("--prompt: encodes to no tokens")
        room = model.config.max_seq_len - len(prompt)
        if room < 1:
            raise ValueError(
                f"--prompt: {len(prompt)} tokens leave no room in max_seq_len "
                f"{model.config.max_seq_len}"
            )
        sampling = SamplingConfig(
            max_new_tokens=min(args.max_new_tokens, room),
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            stop_token_ids=[tokenizer.eos_id],
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        print(f"error: --{str(err['loc'][0]).replace('_', '-')}: {err['msg']}", file=sys.stderr)
        return 2
    except (CheckpointError, ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    produced: list[int] = []
    shown = ""

    def stream(tokens: torch.Tensor, active: torch.Tensor) -> None:
        nonlocal shown
        if bool(active[0]):
            produced.append(int(tokens[0]))
            text = tokenizer.decode(produced)
            if not text.endswith("\ufffd"):
                sys.stdout.write(text[len(shown) :])
                sys.stdout.flush()
                shown = text

    sys.stdout.write(args.prompt)
    generator = torch.Generator().manual_seed(args.seed)
    generate(model, [prompt], sampling, generator=generator, on_tokens=stream, compile=args.compile)
    sys.stdout.write(tokenizer.decode(produced)[len(shown) :] + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
