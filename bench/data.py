"""Data pipeline benchmark: tokenise + shard + pack, ours against transformers' ``run_clm`` recipe.

    uv run python bench/data.py                 # 1x, 3x, 10x the stdlib corpus (12 to 120 MB)
    uv run python bench/data.py --scales 1 --seq-len 512

Both pipelines read the same jsonl files (the stdlib corpus written 1 or 10 times) and use the same
byte-level BPE (ours trained here; transformers wraps its ``tokenizer.json`` in
``PreTrainedTokenizerFast``):

* ours: ``prepare_shards`` (threaded ``encode_batch``, uint16 shards + manifest), then one pass of
  ``PackedLoader`` (concat packing, the closest to ``group_texts``) producing every batch;
* reference: ``datasets.load_dataset("json")``, ``.map(tokenize_function, batched=True)``,
  ``.map(group_texts, batched=True)`` as in ``examples/pytorch/language-modeling/run_clm.py``,
  then a torch ``DataLoader`` with ``default_data_collator`` over every block.

Each (pipeline, scale) runs in its own process so peak memory is its own. Memory is sampled every
20 ms: ``rss`` is the resident set, ``anon`` is ``rss - shared`` (heap, excluding file pages that
memory-mapped reading brings in and the kernel may drop at will). Flat memory means the 10x peak
is close to the 1x peak.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

SEQ_LEN = 256
BATCH = 8


class PeakMemory:
    """Samples this process's memory in a background thread; peaks in MiB."""

    def __init__(self, interval: float = 0.02) -> None:
        self.proc = psutil.Process()
        self.rss = 0
        self.anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def sample(self) -> None:
        info = self.proc.memory_info()
        shared = getattr(info, "shared", 0)
        self.rss = max(self.rss, info.rss)
        self.anon = max(self.anon, info.rss - shared)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(interval)

    def __enter__(self) -> "PeakMemory":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def mib(self) -> dict[str, float]:
        return {"rss_mib": self.rss / 2**20, "anon_mib": self.anon / 2**20}


def run_ours(files: list[str], tokenizer_dir: str, work: Path, seq_len: int) -> dict[str, Any]:
    import datasets  # noqa: F401  (imported before timing, as the reference does)

    from zmaj_lm.config.data import SourceConfig
    from zmaj_lm.data.loader import PackedLoader
    from zmaj_lm.data.prepare import prepare_shards
    from zmaj_lm.data.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(tokenizer_dir)
    source = SourceConfig(kind="files", paths=tuple(files))
    base = PeakMemory()
    base.sample()
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        manifest = prepare_shards(source, tokenizer, work / "ours", num_workers=2)
        t1 = time.perf_counter()
        tokens = 0
        rows = 0
        for split in ("train", "validation"):
            loader = PackedLoader(
                work / "ours",
                split=split,
                seq_len=seq_len,
                batch_size=BATCH,
                packing="concat",
                infinite=False,
                verify_checksums=False,
            )
            for batch in loader:
                tokens += int((batch.document_ids >= 0).sum())
                rows += batch.input_ids.shape[0]
        t2 = time.perf_counter()
    total = manifest.split("train").num_tokens + manifest.split("validation").num_tokens
    assert tokens == total, (tokens, total)
    return {
        "tokens": total,
        "rows": rows,
        "tokenise_shard_s": t1 - t0,
        "pack_s": t2 - t1,
        "base_rss_mib": base.rss / 2**20,
        **mem.mib(),
    }


def run_reference(files: list[str], tokenizer_dir: str, work: Path, seq_len: int) -> dict[str, Any]:
    from itertools import chain

    import torch
    from datasets import load_dataset
    from transformers import PreTrainedTokenizerFast, default_data_collator

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(Path(tokenizer_dir) / "tokenizer.json"), eos_token="<|eos|>"
    )
    base = PeakMemory()
    base.sample()
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        raw = load_dataset("json", data_files=files, split="train", cache_dir=str(work / "hf"))

        def tokenize_function(examples: dict[str, list[str]]) -> Any:
            return tokenizer(examples["text"])

        tokenized = raw.map(tokenize_function, batched=True, remove_columns=["text"])
        tokens = sum(len(ids) for ids in tokenized["input_ids"])

        def group_texts(examples: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
            concatenated = {k: list(chain(*examples[k])) for k in examples}
            total_length = len(concatenated[next(iter(examples))])
            total_length = (total_length // seq_len) * seq_len
            result = {
                k: [t[i : i + seq_len] for i in range(0, total_length, seq_len)]
                for k, t in concatenated.items()
            }
            result["labels"] = result["input_ids"].copy()
            return result

        lm = tokenized.map(group_texts, batched=True)
        t1 = time.perf_counter()
        loader = torch.utils.data.DataLoader(
            lm, batch_size=BATCH, collate_fn=default_data_collator, shuffle=True
        )
        rows = 0
        packed = 0
        for batch in loader:
            rows += batch["input_ids"].shape[0]
            packed += batch["input_ids"].numel()
        t2 = time.perf_counter()
    return {
        "tokens": tokens,
        "packed_tokens": packed,
        "rows": rows,
        "tokenise_shard_s": t1 - t0,
        "pack_s": t2 - t1,
        "base_rss_mib": base.rss / 2**20,
        **mem.mib(),
    }


def worker(args: argparse.Namespace) -> None:
    files = json.loads(args.files)
    work = Path(args.work)
    fn = run_ours if args.worker == "ours" else run_reference
    result = fn(files, args.tokenizer, work, args.seq_len)
    print(json.dumps(result))


def make_corpus(directory: Path, scales: list[int]) -> tuple[dict[int, list[str]], int]:
    """The stdlib corpus as one jsonl file; scale k lists it k times (read k times)."""
    from zmaj_lm.config.data import SourceConfig
    from zmaj_lm.data.sources import iter_raw

    path = directory / "stdlib.jsonl"
    nbytes = 0
    with open(path, "w", encoding="utf-8") as f:
        for doc in iter_raw(SourceConfig(kind="stdlib")):
            if doc and doc.strip():
                nbytes += len(doc.encode())
                f.write(json.dumps({"text": doc}) + "\n")
    files: dict[int, list[str]] = {}
    for k in scales:
        copies = []
        for i in range(k):
            copy = directory / f"stdlib_{i:02d}.jsonl"
            if not copy.exists():
                os.link(path, copy)
            copies.append(str(copy))
        files[k] = copies
    return files, nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from loguru import logger

    from zmaj_lm.config.data import SourceConfig
    from zmaj_lm.data.sources import iter_texts
    from zmaj_lm.data.tokenizer import train_bpe

    logger.remove()
    with tempfile.TemporaryDirectory(prefix="zmaj-bench-data-") as tmp:
        root = Path(tmp)
        files, nbytes = make_corpus(root, args.scales)
        t0 = time.perf_counter()
        tokenizer = train_bpe(
            iter_texts(SourceConfig(kind="stdlib"), "train"), args.vocab_size, max_bytes=4_000_000
        )
        train_s = time.perf_counter() - t0
        tokenizer.save(root / "tok")
        print(
            f"corpus: stdlib, {nbytes / 1e6:.1f} MB per copy; tokenizer: {args.vocab_size} ids "
            f"trained on 4 MB in {train_s:.1f}s; seq_len {args.seq_len}, batch {BATCH}; "
            f"{psutil.cpu_count()} CPUs"
        )
        env = dict(os.environ, TOKENIZERS_PARALLELISM="true")
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for scale in args.scales:
            for impl in ("ours", "reference"):
                work = root / f"work_{impl}_{scale}"
                work.mkdir()
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    impl,
                    "--files",
                    json.dumps(files[scale]),
                    "--tokenizer",
                    str(root / "tok"),
                    "--work",
                    str(work),
                    "--seq-len",
                    str(args.seq_len),
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{impl} x{scale} failed")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                r["total_s"] = r["tokenise_shard_s"] + r["pack_s"]
                r["tokens_per_s"] = r["tokens"] / r["total_s"]
                results[impl, scale] = r
                print(
                    f"{impl:>9} x{scale:<3} {r['tokens'] / 1e6:7.2f} M tokens  "
                    f"tokenise+shard {r['tokenise_shard_s']:7.1f}s  pack {r['pack_s']:6.1f}s  "
                    f"{r['tokens_per_s'] / 1e6:6.2f} M tokens/s  peak rss {r['rss_mib']:7.0f} MiB "
                    f"(anon {r['anon_mib']:6.0f}, at start {r['base_rss_mib']:5.0f})",
                    flush=True,
                )
        print()
        for scale in args.scales:
            ours, ref = results["ours", scale], results["reference", scale]
            speedup = ours["tokens_per_s"] / ref["tokens_per_s"]
            print(
                f"x{scale}: throughput ours/reference {speedup:.2f}x"
                f"; peak rss ours/reference {ours['rss_mib'] / ref['rss_mib']:.2f}"
                f" (anon {ours['anon_mib'] / ref['anon_mib']:.2f})"
            )
        if len(args.scales) > 1:
            lo, hi = min(args.scales), max(args.scales)
            for impl in ("ours", "reference"):
                a, b = results[impl, lo], results[impl, hi]
                print(
                    f"{impl}: peak rss x{hi}/x{lo} = {b['rss_mib'] / a['rss_mib']:.2f}, "
                    f"anon x{hi}/x{lo} = {b['anon_mib'] / a['anon_mib']:.2f}"
                )


if __name__ == "__main__":
    main()
