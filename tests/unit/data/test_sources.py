"""Built-in corpora, local files through ``datasets``, and the hash split."""

import json
import math
from collections import Counter
from itertools import islice, pairwise
from pathlib import Path

import numpy as np
import pytest

from zmaj_lm.config.data import ArithmeticConfig, SourceConfig, SyntheticConfig
from zmaj_lm.data.errors import SourceError
from zmaj_lm.data.sources import (
    arithmetic,
    iter_raw,
    iter_texts,
    source_fingerprint,
    split_of,
    stdlib,
    synthetic,
)


def test_stdlib_is_real_source_without_test_suites() -> None:
    root = stdlib.stdlib_root()
    files = stdlib.stdlib_files()
    rels = [f.relative_to(root).parts for f in files]
    assert len(files) > 300
    assert not any(set(p[:-1]) & {"test", "tests", "idle_test", "site-packages"} for p in rels)
    assert ("json", "decoder.py") in rels
    total = sum(f.stat().st_size for f in files)
    assert 5e6 < total < 40e6


def test_split_is_deterministic_and_near_the_fraction() -> None:
    texts = [f"document {i}" for i in range(20_000)]
    splits = [split_of(t, 0.1) for t in texts]
    assert splits == [split_of(t, 0.1) for t in texts]
    share = splits.count("validation") / len(splits)
    assert abs(share - 0.1) < 0.01
    assert all(split_of(t, 0.0) == "train" for t in texts[:100])


def test_train_and_validation_partition_the_documents() -> None:
    source = SourceConfig(kind="arithmetic", num_documents=3000, validation_fraction=0.2)
    train = list(iter_texts(source, "train"))
    val = list(iter_texts(source, "validation"))
    assert sorted(train + val) == sorted(d for d in iter_raw(source) if d)
    assert not set(train) & set(val), "a duplicated problem never straddles the split"
    assert 0.1 < len(val) / 3000 < 0.3


def test_synthetic_entropy_rate_matches_empirical_estimate() -> None:
    """Plug-in conditional entropy of a long sample agrees with the exact rate."""
    source = SourceConfig(
        kind="synthetic",
        num_documents=200,
        synthetic=SyntheticConfig(alphabet_size=12, branching=5, document_length=1000),
        validation_fraction=0.0,
    )
    exact = synthetic.entropy_rate(source)
    pairs: Counter[tuple[str, str]] = Counter()
    for doc in iter_texts(source, "train"):
        pairs.update(pairwise(doc))
    firsts: Counter[str] = Counter()
    for (a, _), c in pairs.items():
        firsts[a] += c
    n = sum(pairs.values())
    empirical = -sum(c / n * math.log(c / firsts[a]) for (a, _), c in pairs.items())
    assert 0.5 < exact < math.log(5)
    assert empirical == pytest.approx(exact, abs=0.01)
    assert synthetic.bits_per_byte(source) == pytest.approx(exact / math.log(2))


def test_synthetic_depends_on_seed_and_is_reproducible() -> None:
    a = SourceConfig(kind="synthetic", num_documents=300)
    b = SourceConfig(kind="synthetic", num_documents=600)
    c = SourceConfig(kind="synthetic", num_documents=300, seed=1)
    docs_a = list(iter_raw(a))
    assert docs_a == list(islice(iter_raw(b), 300)), "a prefix does not depend on the count"
    assert docs_a != list(iter_raw(c))
    assert synthetic.entropy_rate(a) != synthetic.entropy_rate(c)
    assert all(len(d) == 512 and set(d) <= set(synthetic.ALPHABET[:16]) for d in docs_a)


def test_deterministic_chain_has_zero_entropy() -> None:
    cfg = SyntheticConfig(alphabet_size=5, branching=1, document_length=12)
    source = SourceConfig(kind="synthetic", num_documents=3, synthetic=cfg)
    assert synthetic.entropy_rate(source) == pytest.approx(0.0, abs=1e-12)
    for doc in iter_raw(source):
        assert doc is not None
        assert all((ord(b) - ord(a)) % 5 == 1 for a, b in pairwise(doc))


def test_arithmetic_problems_are_correct_and_wrong_answers_are_wrong() -> None:
    cfg = ArithmeticConfig(max_operand=20)
    rng = np.random.default_rng(0)
    problems = list(arithmetic.generate(cfg, seed=3, n=500))
    assert {p.op for p in problems} == {"+", "-", "*"}
    for p in problems:
        assert p.prompt.endswith("=")
        assert p.text == p.prompt + p.answer
        assert int(p.answer) == eval(p.prompt[:-1])
        assert arithmetic.is_correct(p, p.answer + "<|end|>")
        assert arithmetic.is_correct(p, " " + p.answer)
        wrong = arithmetic.wrong_answers(p, 4, rng)
        assert len(set(wrong)) == 4
        assert not any(arithmetic.is_correct(p, w) for w in wrong)
    assert not arithmetic.is_correct(problems[0], "no number")


def test_arithmetic_problems_split_like_documents() -> None:
    source = SourceConfig(kind="arithmetic", num_documents=500, validation_fraction=0.3)
    val = [p.text for p in arithmetic.iter_problems(source, "validation")]
    assert val == list(iter_texts(source, "validation"))


def _write_jsonl(path: Path, rows: list[object]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_local_jsonl_with_custom_field_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    _write_jsonl(path, [{"body": "alpha"}, {"body": ""}, {"body": None}, {"body": "beta"}])
    source = SourceConfig(kind="files", paths=(str(path),), text_field="body")
    assert list(iter_raw(source)) == ["alpha", "", None, "beta"]
    both = list(iter_texts(source, "train")) + list(iter_texts(source, "validation"))
    assert sorted(both) == ["alpha", "beta"]


def test_local_parquet_and_text(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one", "two"]}), tmp_path / "d.parquet")
    source = SourceConfig(kind="files", paths=(str(tmp_path / "*.parquet"),))
    assert list(iter_raw(source)) == ["one", "two"]
    (tmp_path / "a.txt").write_text("first doc\nline two\n")
    (tmp_path / "b.txt").write_text("second\n")
    whole = SourceConfig(kind="files", paths=(str(tmp_path / "*.txt"),))
    assert list(iter_raw(whole)) == ["first doc\nline two\n", "second\n"]
    lines = whole.model_copy(update={"text_unit": "line"})
    assert list(iter_raw(lines)) == ["first doc", "line two", "second"]


def test_missing_field_and_file_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    _write_jsonl(path, [{"content": "x"}])
    with pytest.raises(
        SourceError, match=r"docs.jsonl: text_field 'text' not found \(columns: content\)"
    ):
        list(iter_raw(SourceConfig(kind="files", paths=(str(path),))))
    with pytest.raises(SourceError, match=r"absent.jsonl: no such file"):
        list(iter_raw(SourceConfig(kind="files", paths=(str(tmp_path / "absent.jsonl"),))))
    weird = tmp_path / "docs.xyz"
    weird.write_text("x")
    with pytest.raises(SourceError, match=r"cannot infer the format"):
        list(iter_raw(SourceConfig(kind="files", paths=(str(weird),))))


def test_hub_dataset_offline_is_a_clear_error() -> None:
    source = SourceConfig(kind="hf", name="someone/not-a-cached-dataset")
    with pytest.raises(SourceError, match=r"someone/not-a-cached-dataset: cannot load dataset"):
        list(iter_raw(source))


def test_max_documents_limits_the_raw_stream() -> None:
    source = SourceConfig(kind="arithmetic", num_documents=100, max_documents=7)
    assert len(list(iter_raw(source))) == 7


def test_fingerprint_follows_the_documents_not_the_reading_mode(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    _write_jsonl(path, [{"text": "alpha"}])
    source = SourceConfig(kind="files", paths=(str(path),))
    fp = source_fingerprint(source)
    assert source_fingerprint(source.model_copy(update={"streaming": False})) == fp
    assert source_fingerprint(source.model_copy(update={"validation_fraction": 0.5})) != fp
    _write_jsonl(path, [{"text": "alpha"}, {"text": "beta"}])
    assert source_fingerprint(source) != fp
    stdlib_fp = source_fingerprint(SourceConfig(kind="stdlib"))
    assert stdlib_fp == source_fingerprint(SourceConfig(kind="stdlib"))
    assert stdlib_fp != source_fingerprint(SourceConfig(kind="stdlib", max_documents=5))


def test_hub_kind_reads_a_local_dataset_repository(tmp_path: Path) -> None:
    """``kind=hf`` goes through ``datasets.load_dataset(name, subset, split=...)``; a local
    directory laid out like a Hub dataset repository exercises that path offline."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    _write_jsonl(repo / "data" / "train.jsonl", [{"story": "once"}, {"story": "upon"}])
    _write_jsonl(repo / "data" / "test.jsonl", [{"story": "a time"}])
    source = SourceConfig(kind="hf", name=str(repo), split="test", text_field="story")
    assert list(iter_raw(source)) == ["a time"]
    train = SourceConfig(kind="hf", name=str(repo), text_field="story")
    assert list(iter_raw(train)) == ["once", "upon"]
