"""DataConfig -> tokenizer, prepared shards and loaders; the script flags -> DataConfig."""

import argparse
from itertools import islice
from pathlib import Path

import pytest

from zmaj_lm.config.data import DataConfig, SourceConfig, SyntheticConfig
from zmaj_lm.config.loading import ConfigError
from zmaj_lm.data.cli import add_data_arguments, data_config_from_args
from zmaj_lm.data.errors import ShardError
from zmaj_lm.data.pipeline import make_loader, prepare_data


def _cfg(tmp_path: Path, **kw: object) -> DataConfig:
    source = SourceConfig(
        kind="synthetic",
        num_documents=120,
        synthetic=SyntheticConfig(document_length=100),
        validation_fraction=0.2,
    )
    base: dict[str, object] = {
        "source": source,
        "data_dir": str(tmp_path / "d"),
        "vocab_size": 280,
        "seq_len": 32,
        "batch_size": 4,
    }
    return DataConfig.model_validate(base | kw)


def test_prepare_reuses_its_tokenizer_and_loaders_follow_the_config(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    tokenizer, manifest = prepare_data(cfg)
    assert tokenizer.vocab_size == 280
    again, manifest2 = prepare_data(cfg)
    assert again.fingerprint == tokenizer.fingerprint
    assert manifest2 == manifest
    train = make_loader(cfg, "train", tokenizer_fingerprint=tokenizer.fingerprint)
    assert train.infinite
    assert train.shuffle
    assert len(list(islice(train, 3 * train.batches_per_epoch))) == 3 * train.batches_per_epoch
    val = make_loader(cfg, "validation")
    assert not val.infinite
    assert not val.shuffle
    batches = list(val)
    assert len(batches) == len(val)
    tokens = sum(int((b.document_ids >= 0).sum()) for b in batches)
    assert tokens == manifest.split("validation").num_tokens


def test_changed_vocabulary_is_refused_until_overwrite(tmp_path: Path) -> None:
    prepare_data(_cfg(tmp_path))
    bigger = _cfg(tmp_path, vocab_size=300)
    with pytest.raises(ShardError, match=r"prepared with tokenizer"):
        prepare_data(bigger)
    tokenizer, manifest = prepare_data(bigger, overwrite=True)
    assert manifest.vocab_size == tokenizer.vocab_size == 300


def _parse(argv: list[str]) -> DataConfig:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser, prepare=True)
    return data_config_from_args(parser.parse_args(argv))


def test_flags_map_to_config_fields_over_a_yaml_file(tmp_path: Path) -> None:
    yaml = tmp_path / "run.yaml"
    yaml.write_text(
        "model: {n_layers: 2}\n"
        "data:\n  seq_len: 128\n  source: {kind: arithmetic, num_documents: 50}\n"
    )
    cfg = _parse(["--config", str(yaml), "--num-documents", "70", "--out", "x", "--add-bos"])
    assert cfg.seq_len == 128
    assert cfg.source.kind == "arithmetic"
    assert cfg.source.num_documents == 70
    assert cfg.data_dir == "x"
    assert cfg.add_bos
    cfg = _parse(["--source", "files", "--paths", "a.jsonl", "b.jsonl", "--no-streaming"])
    assert cfg.source.paths == ("a.jsonl", "b.jsonl")
    assert not cfg.source.streaming
    assert _parse(["--set", "source.arithmetic.max_operand=9"]).source.arithmetic.max_operand == 9
    assert _parse([]) == DataConfig()


def test_bad_flags_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^<arguments>: source.validation_fraction: "):
        _parse(["--validation-fraction", "1.5"])
    yaml = tmp_path / "bad.yaml"
    yaml.write_text("data:\n  packing: zigzag\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: packing: Input should be"):
        _parse(["--config", str(yaml)])


def test_config_rejects_a_vocabulary_smaller_than_bytes_plus_specials() -> None:
    with pytest.raises(ValueError, match=r"vocab_size 260 is below 256 bytes \+ 7 special"):
        DataConfig(vocab_size=260)
    assert DataConfig(vocab_size=260, special_tokens=("<|eos|>",)).vocab_size == 260
    assert DataConfig(vocab_size=260, tokenizer="tok.json").tokenizer == "tok.json"
