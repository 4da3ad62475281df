"""CPU speedrun: our pretraining recipe against a plain transformers baseline, same wall clock.

    uv run python bench/speedrun_cpu.py [--budget 150] [--config configs/pretrain/default.yaml]

Both run in this one process, one after the other, on the same prepared data (the stdlib corpus,
the 4096-token BPE of the config's ``data`` section) and are scored identically: validation
bits per byte over the whole validation split, rows of one document piece each (no packing, so
the baseline needs no document mask). Baseline: transformers ``LlamaForCausalLM`` (~6.5M
parameters, untied embeddings), AdamW lr 2e-3 constant, batches of 8 x 256 concatenated tokens, a
plain loop stopped after ``--budget`` seconds. Ours: the config's recipe with
``training.max_time_s = --budget``. Loading and batch building count against both budgets;
evaluation does not. The machine should be otherwise idle: timings on a shared CPU are noisy.

On a busy machine, compare at equal work instead of equal time: ``--baseline-steps 230
--ours-steps 115`` gives both ~470k training tokens (8 x 256 and 16 x 256 tokens per step), about
what 150 s buy either side on an idle 2-core CPU (DESIGN.md: ~3,100 tokens/s).
"""

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from zmaj_lm.config.root import load_config
from zmaj_lm.data.loader import PackedLoader
from zmaj_lm.eval.perplexity import evaluate
from zmaj_lm.training.distributed import DistInfo
from zmaj_lm.training.loop import TrainState, fit
from zmaj_lm.training.pretrain import (
    build_run,
    prepare_data,
    validation_bytes_per_token,
)
from zmaj_lm.utils.logging import setup_logging

ROOT = Path(__file__).resolve().parent.parent


class HFWrapper(torch.nn.Module):
    """Gives a transformers causal LM our forward signature (no document masking)."""

    def __init__(self, hf: torch.nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, input_ids: torch.Tensor, **_: Any) -> Any:
        class Out:
            pass

        out = Out()
        out.logits = self.hf(input_ids=input_ids).logits  # type: ignore[attr-defined]
        out.aux_loss = torch.zeros(())  # type: ignore[attr-defined]
        return out


def val_loader(data_dir: Path, fingerprint: str, seq_len: int) -> PackedLoader:
    return PackedLoader(
        data_dir,
        seq_len=seq_len,
        batch_size=16,
        packing="pad",
        infinite=False,
        split="validation",
        shuffle=False,
        tokenizer_fingerprint=fingerprint,
    )


def run_baseline(
    data_dir: Path, fingerprint: str, vocab: int, budget: float, seed: int, max_steps: int | None
) -> tuple[torch.nn.Module, int, int]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    hf_cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=608,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(hf_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loader = PackedLoader(
        data_dir,
        seq_len=256,
        batch_size=8,
        packing="concat",
        seed=seed,
        tokenizer_fingerprint=fingerprint,
    )
    start = time.perf_counter()
    steps = 0
    for batch in loader:
        out = model(input_ids=batch.input_ids, labels=batch.input_ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
        if steps % 20 == 0:
            print(f"  baseline step {steps} loss {out.loss.item():.3f}", file=sys.stderr)
        if max_steps is not None and steps >= max_steps:
            break
        if max_steps is None and time.perf_counter() - start > budget:
            break
    return model, n_params, steps


def score(model: torch.nn.Module, batches: PackedLoader, bytes_per_token: float | None) -> Any:
    return evaluate(model, batches, device=torch.device("cpu"), bytes_per_token=bytes_per_token)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=150.0, help="seconds of training each")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/pretrain/default.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--baseline-steps", type=int, help="fixed steps instead of the budget")
    parser.add_argument("--ours-steps", type=int, help="fixed steps instead of the budget")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of our config")
    args = parser.parse_args()
    setup_logging("WARNING")
    torch.set_num_threads(args.threads)
    budget = (
        [f"training.max_steps={args.ours_steps}", "training.max_time_s=null"]
        if args.ours_steps
        else [f"training.max_time_s={args.budget}"]
    )
    config = load_config(args.config, [*args.overrides, *budget, "training.eval.num_samples=0"])
    single = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    prepared = prepare_data(config.data, single)
    bpt = validation_bytes_per_token(prepared.manifest)
    fp = prepared.tokenizer.fingerprint
    results: dict[str, dict[str, float]] = {}

    if not args.skip_baseline:
        t = time.perf_counter()
        hf, n_params, steps = run_baseline(
            prepared.data_dir,
            fp,
            prepared.tokenizer.vocab_size,
            args.budget,
            config.training.seed,
            args.baseline_steps,
        )
        train_s = time.perf_counter() - t
        r = score(HFWrapper(hf), val_loader(prepared.data_dir, fp, 256), bpt)
        results["baseline (HF Llama, AdamW 2e-3)"] = {
            "params_M": n_params / 1e6,
            "steps": steps,
            "train_s": train_s,
            "val_loss": r.loss,
            "val_bpb": r.bits_per_byte or math.nan,
        }
        del hf

    if not args.skip_ours:
        t = time.perf_counter()
        run = build_run(config, prepared, single, out_dir=None)
        run.val_batches = None  # scored below, like the baseline
        state = TrainState()
        fit(run, state)
        train_s = time.perf_counter() - t
        r = score(run.model, val_loader(prepared.data_dir, fp, config.data.seq_len), bpt)
        results["ours (" + config.training.optimizer.name + ", " + str(args.config.name) + ")"] = {
            "params_M": sum(p.numel() for p in run.raw_model.parameters()) / 1e6,
            "steps": state.step,
            "train_s": train_s,
            "val_loss": r.loss,
            "val_bpb": r.bits_per_byte or math.nan,
        }

    mode = (
        f"fixed steps (baseline {args.baseline_steps}, ours {args.ours_steps})"
        if args.baseline_steps or args.ours_steps
        else f"{args.budget:.0f} s of training each"
    )
    print(f"\nCPU speedrun, {mode}, {args.threads} threads")
    print(f"{'run':48s} {'params':>7s} {'steps':>6s} {'train s':>8s} {'val loss':>9s} {'bpb':>7s}")
    for name, v in results.items():
        print(
            f"{name:48s} {v['params_M']:6.2f}M {v['steps']:6.0f} {v['train_s']:8.1f} "
            f"{v['val_loss']:9.4f} {v['val_bpb']:7.4f}"
        )
    if len(results) == 2:
        base, ours = list(results.values())
        print(
            f"bits per byte: ours {ours['val_bpb']:.4f} vs baseline {base['val_bpb']:.4f} "
            f"({(1 - ours['val_bpb'] / base['val_bpb']) * 100:+.1f}% better)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
