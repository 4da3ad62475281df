"""Model benchmark: our Transformer against transformers' LlamaForCausalLM, in one process.

1. Training step (forward + backward, fp32, CPU) of the same shape on the same batch: tokens/s
   and peak allocator memory of each, and their ratio. Rounds alternate between the two models so
   machine noise hits both alike; the median round is reported.
2. Attention cost of document masking, forward only, for T = 256 .. 2048: plain causal SDPA
   (the floor), SDPA with a dense document mask, and compiled FlexAttention with a block mask.

    uv run python bench/model.py                    # both parts
    uv run python bench/model.py --part step --rounds 20
"""

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from zmaj_lm.config import ModelConfig
from zmaj_lm.models import Transformer
from zmaj_lm.models.backends import flex_attention, sdpa_attention
from zmaj_lm.models.masks import AttentionMask
from zmaj_lm.utils.flops import count_parameters, flops_per_token


def tiny_llama(vocab: int = 4096) -> ModelConfig:
    """The tiny preset's shape with an untied head (transformers' LlamaConfig default)."""
    return ModelConfig(
        vocab_size=vocab,
        d_model=256,
        n_layers=6,
        n_heads=4,
        n_kv_heads=4,
        d_ff=688,
        max_seq_len=1024,
        tie_embeddings=False,
        attention_backend="sdpa",
    )


def hf_llama(cfg: ModelConfig) -> torch.nn.Module:
    """transformers' Llama of the same shape, configured by the production export mapping."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from zmaj_lm.interop.families.llama import config_to_hf

    return LlamaForCausalLM(LlamaConfig(**config_to_hf(cfg), attn_implementation="sdpa"))


def peak_bytes(fn: Callable[[], None]) -> int:
    """Peak bytes held by torch's CPU allocator while ``fn`` runs (allocations minus frees)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start
    )
    live = peak = 0
    for e in events:
        live += e.cpu_memory_usage
        peak = max(peak, live)
    return peak


def bench_step(rounds: int, batch: int, seq: int, threads: int) -> None:
    torch.set_num_threads(threads)
    cfg = tiny_llama()
    torch.manual_seed(0)
    ours = Transformer(cfg)
    theirs = hf_llama(cfg)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    assert n_ours == n_theirs == count_parameters(cfg), (n_ours, n_theirs)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=g)
    inputs, labels = ids[:, :-1], ids[:, 1:]
    n_docs = 8
    doc = torch.arange(seq).div(seq // n_docs, rounding_mode="floor").expand(batch, seq)

    def step(model: torch.nn.Module, **kwargs: torch.Tensor) -> None:
        logits = model(inputs, **kwargs).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        model.zero_grad(set_to_none=True)

    runs: dict[str, Callable[[], None]] = {
        "transformers Llama (causal)": lambda: step(theirs),
        "zmaj-lm (causal)": lambda: step(ours),
        f"zmaj-lm (packed, {n_docs} docs/row)": lambda: step(ours, document_ids=doc),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():  # warm-up
        fn()
        fn()
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    memory = {name: peak_bytes(fn) for name, fn in runs.items()}

    tokens = batch * seq
    flops = flops_per_token(cfg, seq) * tokens
    ref = statistics.median(times["transformers Llama (causal)"])
    print(
        f"\nTraining step, fp32 CPU, {threads} threads: {n_ours / 1e6:.2f} M params, "
        f"B={batch}, T={seq}, median of {rounds} alternating rounds"
    )
    print(f"{'run':34} {'ms/step':>9} {'tokens/s':>9} {'GFLOP/s':>8} {'peak MiB':>9} {'speed':>7}")
    for name in runs:
        med = statistics.median(times[name])
        print(
            f"{name:34} {med * 1e3:9.1f} {tokens / med:9.0f} {flops / med / 1e9:8.1f} "
            f"{memory[name] / 2**20:9.1f} {ref / med:6.2f}x"
        )


def timed(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median milliseconds of ``repeats`` calls after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def bench_attention(batch: int, heads: int, head_dim: int, n_docs: int, threads: int) -> None:
    torch.set_num_threads(threads)
    print(
        f"\nDocument-masked attention forward, fp32 CPU: B={batch}, H={heads}, hd={head_dim}, "
        f"{n_docs} documents per row (ms, median of 5; flex excludes its one-off compile)"
    )
    print(
        f"{'T':>5} {'causal':>8} {'sdpa+mask':>10} {'flex':>8} {'mask build':>11} {'sdpa/flex':>10}"
    )
    kw: dict[str, Any] = {
        "window": None,
        "scale": head_dim**-0.5,
        "softcap": None,
        "dropout_p": 0.0,
    }
    for seq in (256, 512, 1024, 2048):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(batch, heads, seq, head_dim, generator=g) for _ in range(3))
        doc = torch.arange(seq).div(seq // n_docs, rounding_mode="floor").expand(batch, seq)

        causal = AttentionMask.from_document_ids(None, seq)
        t0 = time.perf_counter()
        packed = AttentionMask.from_document_ids(doc, seq)
        packed.block_mask(None, q.device)
        build_ms = (time.perf_counter() - t0) * 1e3
        packed.dense(None, q.device)
        with torch.no_grad():
            t_causal = timed(partial(sdpa_attention, q, k, v, causal, **kw))
            t_dense = timed(partial(sdpa_attention, q, k, v, packed, **kw))
            t_flex = timed(partial(flex_attention, q, k, v, packed, **kw))
        print(
            f"{seq:5} {t_causal:8.1f} {t_dense:10.1f} {t_flex:8.1f} {build_ms:11.1f} "
            f"{t_dense / t_flex:9.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["step", "attention", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.part in ("step", "all"):
        bench_step(args.rounds, args.batch, args.seq, args.threads)
    if args.part in ("attention", "all"):
        bench_attention(batch=4, heads=8, head_dim=64, n_docs=8, threads=args.threads)


if __name__ == "__main__":
    main()
