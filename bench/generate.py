"""Generation benchmark: our KV-cached ``generate`` against transformers' ``generate``.

    uv run python bench/generate.py                    # 6.5 M-param Llama, 128 new tokens
    uv run python bench/generate.py --d-model 512 --layers 8 --rounds 5

One process: a random transformers ``LlamaForCausalLM`` is saved, converted with the production
path (``convert_from_hf``) and loaded as ours, so both run the same weights. Batch 1, greedy,
fp32, CPU, a 16-token prompt and 128 new tokens, no stop token. Rounds alternate between the two so
machine noise hits both alike; the median round is reported, with the ratio ours / transformers.
The outputs are asserted equal.

``--compile`` adds ours with ``generate(compile=True)`` and transformers with its own fast-decoding
recipe (static cache, compiled forward); each one-off compilation (the first call) is timed and
printed separately, not folded into tokens/s.
"""

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from zmaj_lm.config.generation import SamplingConfig
from zmaj_lm.interop import convert_from_hf
from zmaj_lm.models.generation import generate
from zmaj_lm.models.io import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=688)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--compile", action="store_true", help="also time generate(compile=True)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    hf_config = transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.d_model,
        intermediate_size=args.d_ff,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.prompt + args.new_tokens + 8,
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    n_params = sum(p.numel() for p in hf.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(Path(tmp) / "hf")
        convert_from_hf(Path(tmp) / "hf", Path(tmp) / "ours")
        ours = load_model(Path(tmp) / "ours").eval()

    prompt = torch.randint(
        0, args.vocab, (1, args.prompt), generator=torch.Generator().manual_seed(1)
    )
    sampling = SamplingConfig(temperature=0, max_new_tokens=args.new_tokens)

    def run_ours() -> list[int]:
        return generate(ours, [prompt[0].tolist()], sampling)[0]

    def run_hf(model: Any = hf, **kwargs: Any) -> list[int]:
        with torch.no_grad():
            out = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=0,
                **kwargs,
            )
        result: list[int] = out[0, args.prompt :].tolist()
        return result

    expected = run_hf()
    assert run_ours() == expected, "greedy outputs differ"
    runners: dict[str, Any] = {"ours": run_ours, "transformers": run_hf}
    compile_s: dict[str, float] = {}
    if args.compile:
        # transformers' own recipe for fast decoding: a static cache and a compiled forward.
        hf_compiled = copy.deepcopy(hf)
        hf_compiled.forward = torch.compile(hf_compiled.forward, dynamic=False)
        compiled: dict[str, Any] = {
            "ours compiled": lambda: generate(ours, [prompt[0].tolist()], sampling, compile=True)[
                0
            ],
            "transformers compiled": lambda: run_hf(hf_compiled, cache_implementation="static"),
        }
        for name, fn in compiled.items():
            start = time.perf_counter()
            assert fn() == expected, f"{name}: greedy outputs differ"
            compile_s[name] = time.perf_counter() - start
        runners.update(compiled)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rate = {k: args.new_tokens / statistics.median(v) for k, v in times.items()}
    print(
        f"Llama {n_params / 1e6:.1f} M params, fp32, batch 1, prompt {args.prompt}, "
        f"{args.new_tokens} new tokens, greedy, {torch.get_num_threads()} threads, "
        f"median of {args.rounds} rounds"
    )
    for name in runners:
        print(f"  {name:<22} {rate[name]:8.1f} tokens/s")
    pairs = [("ours", "transformers"), ("ours compiled", "transformers compiled")]
    pairs += [("ours compiled", "transformers")]
    for name, reference in pairs:
        if name in rate:
            print(f"  ratio {name} / {reference}: {rate[name] / rate[reference]:.2f}x")
    for name, seconds in compile_s.items():
        print(f"  {name}: first call (compilation + one generation) {seconds:.1f} s")


if __name__ == "__main__":
    main()
