"""Training-step throughput, MFU and peak memory: our trainer against transformers' Llama.

    uv run python bench/train.py [--batch 8] [--seq 256] [--rounds 5] [--steps 5] [--threads 2]
                                 [--peak-gflops 200] [--optimizer adamw]

Same architecture both sides (the tiny preset: vocab 4096, d_model 256, 6 layers, SwiGLU 688,
tied embeddings), fp32, AdamW, random tokens of one document per row. Ours is a full
:func:`zmaj_lm.training.loop.train_step` (objective, token-weighted loss, clipping, scheduled lr,
optimizer); the reference is a plain transformers loop (forward with labels, backward, clip,
step). Rounds alternate between the two so that machine noise hits both alike; the median round
is reported. MFU uses the PaLM formula (``zmaj_lm.utils.flops``) and ``--peak-gflops`` (default:
the ~200 GFLOP/s fp32 peak measured on the 2-core CPU of DESIGN.md). Peak memory is the largest
resident-set growth sampled during each side's steps.
"""

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

from zmaj_lm.config.root import load_config
from zmaj_lm.config.training import TrainingConfig
from zmaj_lm.data.batch import Batch
from zmaj_lm.models.transformer import Transformer
from zmaj_lm.training.distributed import DistInfo
from zmaj_lm.training.loop import Run, TrainState, train_step
from zmaj_lm.training.objectives import PretrainObjective
from zmaj_lm.training.optim import build_optimizer
from zmaj_lm.utils.flops import count_parameters, flops_per_token

ROOT = Path(__file__).resolve().parent.parent


class PeakRSS:
    """Largest resident-set size above the value at entry, sampled every 5 ms."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0

    def __enter__(self) -> "PeakRSS":
        self.base = self.proc.memory_info().rss
        self.stop = False
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)
            time.sleep(0.005)

    def __exit__(self, *exc: Any) -> None:
        self.stop = True
        self.thread.join()


def timed(step: Callable[[], None], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peak-gflops", type=float, default=200.0)
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "muon", "lion"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import LlamaConfig, LlamaForCausalLM

    from zmaj_lm.interop.families.llama import config_to_hf

    cfg = load_config(ROOT / "configs/models/tiny.yaml", [f"model.max_seq_len={args.seq}"]).model
    B, T = args.batch, args.seq
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    labels = ids.clone()
    labels[:, :-1] = ids[:, 1:]
    labels[:, -1] = -100
    batch = Batch(
        input_ids=ids,
        labels=labels,
        document_ids=torch.zeros(B, T, dtype=torch.long),
        position_ids=torch.arange(T).expand(B, T).contiguous(),
        loss_mask=labels != -100,
    )

    torch.manual_seed(0)
    ours = Transformer(cfg)
    tcfg = TrainingConfig.model_validate(
        {"optimizer": {"name": args.optimizer, "lr": 1e-3}, "max_steps": 10**6}
    )
    run = Run(
        cfg=tcfg,
        model_cfg=cfg,
        model=ours,
        objective=PretrainObjective(),
        optimizer=build_optimizer(ours, tcfg.optimizer),
        train_loader=None,  # type: ignore[arg-type]
        dist=DistInfo(0, 1, 0, torch.device("cpu")),
    )
    state = TrainState(total_steps=10**6)

    def our_step() -> None:
        train_step(run, state, [batch])
        state.step += 1

    hf = LlamaForCausalLM(LlamaConfig(**config_to_hf(cfg), attn_implementation="sdpa"))
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)

    def hf_step() -> None:
        out = hf(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    for step in (our_step, hf_step, our_step, hf_step):
        step()
    ours_t, hf_t = [], []
    ours_mem, hf_mem = 0, 0
    for _ in range(args.rounds):
        with PeakRSS() as m:
            ours_t.append(timed(our_step, args.steps))
        ours_mem = max(ours_mem, m.peak)
        with PeakRSS() as m:
            hf_t.append(timed(hf_step, args.steps))
        hf_mem = max(hf_mem, m.peak)
    tokens = B * T
    fpt = flops_per_token(cfg, T)
    peak = args.peak_gflops * 1e9
    rows = []
    for name, times, mem in (("zmaj-lm", ours_t, ours_mem), ("transformers", hf_t, hf_mem)):
        tps = tokens / statistics.median(times)
        rows.append((name, tps, tps * fpt / peak, mem / 2**20))
    print(
        f"training step, {count_parameters(cfg) / 1e6:.2f}M params, B={B} T={T} fp32, "
        f"{args.optimizer}, {args.threads} threads, median of {args.rounds} rounds x "
        f"{args.steps} steps"
    )
    print(f"{'':14s} {'tokens/s':>10s} {'MFU':>7s} {'peak RSS growth':>16s}")
    for name, tps, mfu, mem in rows:
        print(f"{name:14s} {tps:10.0f} {mfu:7.1%} {mem:13.0f} MiB")
    print(f"ratio zmaj-lm / transformers tokens/s: {rows[0][1] / rows[1][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
