"""Tokenizer training, round trips, special tokens, saving/loading and the Hub path (offline)."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmaj_lm.config.data import DEFAULT_SPECIAL_TOKENS
from zmaj_lm.data.errors import TokenizerError
from zmaj_lm.data.tokenizer import Tokenizer, train_bpe


def test_trained_tokenizer_has_specials_and_size(tokenizer: Tokenizer) -> None:
    assert tokenizer.vocab_size == 512
    assert [tokenizer.token_to_id(t) for t in DEFAULT_SPECIAL_TOKENS] == list(range(7))
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2)
    assert tokenizer.token_to_id("<|nope|>") is None


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_decode_inverts_encode_for_any_text(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, special=False)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text


def test_merges_compress_and_batch_matches_single(tokenizer: Tokenizer) -> None:
    text = "def function(self, value):\n    return self.value + value\n"
    ids = tokenizer.encode(text)
    assert len(ids) < len(text.encode()) / 2
    assert tokenizer.encode_batch([text, "x = 1"]) == [ids, tokenizer.encode("x = 1")]


def test_special_strings_are_ids_only_when_asked(tokenizer: Tokenizer) -> None:
    text = "<|user|>hi<|end|>"
    special = tokenizer.encode(text)
    assert special[0] == tokenizer.token_to_id("<|user|>")
    assert special[-1] == tokenizer.token_to_id("<|end|>")
    plain = tokenizer.encode(text, special=False)
    assert not set(plain) & set(range(len(DEFAULT_SPECIAL_TOKENS)))
    assert tokenizer.decode(plain) == text


def test_save_load_round_trip_keeps_fingerprint(tokenizer: Tokenizer, tmp_path: Path) -> None:
    path = tokenizer.save(tmp_path / "tok")
    for target in (tmp_path / "tok", path):
        loaded = Tokenizer.load(target)
        assert loaded.fingerprint == tokenizer.fingerprint
        assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (1, 2, 0)
        assert loaded.encode("import os\n") == tokenizer.encode("import os\n")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|eos|>"
    assert "<|assistant|>" in config["additional_special_tokens"]


def test_fingerprint_distinguishes_tokenizers(tokenizer: Tokenizer) -> None:
    other = train_bpe(["aaa bbb ccc " * 50], 300)
    assert other.fingerprint != tokenizer.fingerprint


def test_transformers_reads_the_saved_tokenizer(tokenizer: Tokenizer, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "class A:\n    pass\n"
    assert hf(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text)
    assert hf.eos_token_id == tokenizer.eos_id


def test_special_tokens_named_in_config_win(tmp_path: Path, tokenizer: Tokenizer) -> None:
    tokenizer.save(tmp_path)
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token"] = {"content": "<|end|>"}
    config_path.write_text(json.dumps(config))
    assert Tokenizer.load(tmp_path).eos_id == tokenizer.token_to_id("<|end|>")


def test_vocab_too_small_is_refused() -> None:
    with pytest.raises(TokenizerError, match=r"vocab_size: 200 is below"):
        train_bpe(["abc"], 200)


def test_tokenizer_without_eos_is_refused() -> None:
    with pytest.raises(TokenizerError, match=r"no EOS token"):
        train_bpe(["abc"], 300, special_tokens=["<|pad|>"])


def test_missing_and_corrupt_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"no such tokenizer file"):
        Tokenizer.load(tmp_path / "absent")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match=r"not a valid tokenizer.json"):
        Tokenizer.load(bad)


def _fake_hub_cache(cache: Path, repo_id: str, tokenizer: Tokenizer) -> None:
    """The layout huggingface_hub uses for a cached repository snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    tokenizer.save(repo / "snapshots" / commit)


def test_from_hub_uses_the_offline_cache(tmp_path: Path, tokenizer: Tokenizer) -> None:
    _fake_hub_cache(tmp_path, "someone/tiny", tokenizer)
    loaded = Tokenizer.from_hub("someone/tiny", cache_dir=tmp_path)
    assert loaded.fingerprint == tokenizer.fingerprint
    assert loaded.eos_id == tokenizer.eos_id


def test_from_hub_offline_without_cache_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"someone/absent: cannot fetch tokenizer.json"):
        Tokenizer.from_hub("someone/absent", cache_dir=tmp_path)


def test_training_is_deterministic() -> None:
    """Re-running a recipe retrains the same tokenizer, so its shards stay valid."""
    texts = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(300)]
    assert train_bpe(texts, 400).fingerprint == train_bpe(texts, 400).fingerprint
