"""Conversion benchmark: time and peak memory of from-hf and to-hf on a ~1B-parameter checkpoint.

    uv run python bench/convert.py                  # Llama-3.2-1B shape, bf16, 1 GB input shards
    uv run python bench/convert.py --layers 4       # smaller, for a quick look

A random checkpoint with Llama-3.2-1B's shapes (1.24 B parameters, bf16, 2.5 GB) is written
directly as sharded safetensors, one shard in memory at a time. Then each step runs in its own
process, so its peak resident memory (``ru_maxrss`` from ``wait4``) is its own:

* ``from-hf``: ``scripts/convert.py from-hf`` (HF shards -> our checkpoint);
* ``to-hf``: ``scripts/convert.py to-hf`` with 1 GB output shards;
* reference: transformers ``from_pretrained(dtype=bfloat16)`` + ``save_pretrained`` of the same
  input, the closest thing transformers has to a re-save of a checkpoint.

Peak memory is also shown as a multiple of the model's size in bytes.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import torch

from zmaj_lm.interop.convert import write_hf_weights

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = """
import sys, torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
model.save_pretrained(sys.argv[2], max_shard_size="1GB")
"""


def hf_config(layers: int) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": layers,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "tie_word_embeddings": True,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "dtype": "bfloat16",
    }


def random_tensors(layers: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Llama-3.2-1B tensors in HF names, generated one at a time (bf16, std 0.02)."""
    d, kv, ff, vocab = 2048, 8 * 64, 8192, 128256
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)

    yield "model.embed_tokens.weight", rand(vocab, d)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "self_attn.q_proj.weight", rand(d, d)
        yield p + "self_attn.k_proj.weight", rand(kv, d)
        yield p + "self_attn.v_proj.weight", rand(kv, d)
        yield p + "self_attn.o_proj.weight", rand(d, d)
        yield p + "mlp.gate_proj.weight", rand(ff, d)
        yield p + "mlp.up_proj.weight", rand(ff, d)
        yield p + "mlp.down_proj.weight", rand(d, ff)
        yield p + "input_layernorm.weight", torch.ones(d, dtype=torch.bfloat16)
        yield p + "post_attention_layernorm.weight", torch.ones(d, dtype=torch.bfloat16)
    yield "model.norm.weight", torch.ones(d, dtype=torch.bfloat16)


def run(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; return wall seconds, the child's peak RSS and peak anonymous memory (GiB).

    RSS also counts the pages of memory-mapped safetensors files the child has read; those are
    page cache the kernel can drop. ``anon`` (RSS minus shared, sampled every 20 ms) is the memory
    the process really holds.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(proc.pid)
    peak_anon = 0
    while True:
        try:
            if watched.status() == psutil.STATUS_ZOMBIE:
                break
            info = watched.memory_info()
        except psutil.Error:
            break
        peak_anon = max(peak_anon, info.rss - info.shared)
        time.sleep(0.02)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr}")
    peak_rss = usage.ru_maxrss / 2**20
    return elapsed, peak_rss, peak_anon / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=16, help="16 is Llama-3.2-1B")
    parser.add_argument("--workdir", help="where to write the checkpoints (default: a temp dir)")
    parser.add_argument("--no-reference", action="store_true", help="skip transformers")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="zmaj-bench-convert-"))
    src, ours, back, ref = work / "hf", work / "ours", work / "back", work / "ref"
    for path in (src, ours, back, ref):
        shutil.rmtree(path, ignore_errors=True)
    src.mkdir(parents=True)
    start = time.perf_counter()
    write_hf_weights(random_tensors(args.layers), src, 1_000_000_000)
    (src / "config.json").write_text(json.dumps(hf_config(args.layers), indent=2))
    n_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    print(
        f"random Llama-3.2-1B-shaped checkpoint: {args.layers} layers, {n_bytes / 2**30:.2f} GiB "
        f"bf16 ({n_bytes / 2 / 1e9:.2f} B params), written in {time.perf_counter() - start:.1f} s"
    )
    script = [sys.executable, str(ROOT / "scripts" / "convert.py")]
    results = {
        "from-hf": run([*script, "from-hf", str(src), str(ours)]),
        "to-hf": run([*script, "to-hf", str(ours), str(back), "--max-shard-size", "1GB"]),
    }
    if not args.no_reference:
        results["transformers load+save"] = run(
            [sys.executable, "-c", REFERENCE, str(src), str(ref)]
        )
    model_gib = n_bytes / 2**30
    for name, (seconds, rss, anon) in results.items():
        print(
            f"  {name:<24} {seconds:7.1f} s   peak RSS {rss:6.2f} GiB ({rss / model_gib:.2f}x "
            f"model)   peak anon {anon:6.2f} GiB ({anon / model_gib:.2f}x model)"
        )
    if "transformers load+save" in results:
        ref_s, _, ref_anon = results["transformers load+save"]
        for name in ("from-hf", "to-hf"):
            seconds, _, anon = results[name]
            print(
                f"  {name} vs transformers: {ref_s / seconds:.2f}x faster, "
                f"{anon / ref_anon:.2f}x anonymous memory"
            )
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
