"""Show which tokens SFT would supervise: the rendered conversations with assistant spans marked.

    uv run scripts/audit_sft.py --init CKPT [--config FILE] [-n 5] [--split train]
                                [key.path=value ...]

Each example is printed as rendered by the chat template, with the supervised text between
[[ and ]], followed by the count of supervised tokens. Examples with no supervised token (after
truncation to loader.seq_len) are refused: they are listed and the exit status is 2.
"""

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", type=Path, required=True, help="checkpoint or tokenizer dir")
    parser.add_argument("--config", type=Path, default=None, help="SFT config (YAML)")
    parser.add_argument("-n", type=int, default=5, help="examples to show")
    parser.add_argument("--split", choices=["train", "validation"], default="train")
    parser.add_argument("overrides", nargs="*", help="dotted overrides")
    args = parser.parse_args(argv)

    from zmaj_lm.config.loading import load_config_as
    from zmaj_lm.config.posttrain import SFTConfig
    from zmaj_lm.data.tokenizer import Tokenizer
    from zmaj_lm.posttrain.chat import ChatFormat, audit_text
    from zmaj_lm.posttrain.cli import user_errors
    from zmaj_lm.posttrain.examples import sft_examples

    try:
        cfg = load_config_as(SFTConfig, args.config, args.overrides)
        tok_dir = args.init / "tokenizer" if (args.init / "tokenizer").is_dir() else args.init
        tokenizer = Tokenizer.load(tok_dir)
        chat = ChatFormat.from_config(tokenizer, cfg.chat, tok_dir)
        refused: list[str] = []
        shown = 0
        for i, ex in enumerate(sft_examples(cfg.data, args.split)):
            tokenized = chat.tokenize(ex.messages)
            kept = sum(tokenized.target[1 : cfg.loader.seq_len])
            if kept == 0:
                refused.append(f"example {i}: no supervised token within {cfg.loader.seq_len}")
            if shown < args.n:
                print(f"--- example {i}: {len(tokenized.ids)} tokens, {kept} supervised")
                print(audit_text(tokenized))
                shown += 1
            elif refused and len(refused) >= 20:
                break
            if i >= max(args.n, 1000):
                break
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if refused:
        for line in refused:
            print(f"refused: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
