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
    iter_labelled,
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


def test_unset_source_field_keeps_the_fingerprint_of_older_directories() -> None:
    """Recorded before ``source_field`` existed: data prepared then is still recognised."""
    source = SourceConfig(kind="arithmetic", num_documents=123)
    old = "39b1671fbe1d62750c76ab8ba0ff79058bcd2639806b2f9356b2679529aa9caf"
    assert source_fingerprint(source) == old
    assert source_fingerprint(source.model_copy(update={"source_field": "meta.set"})) != old


def test_stdlib_labels_are_top_packages_then_other(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    sizes = {f"pkg{i:02d}": 1000 - 10 * i for i in range(stdlib.TOP_PACKAGES + 2)}
    for name, size in sizes.items():
        (root / name / "sub").mkdir(parents=True)
        (root / name / "__init__.py").write_text("#" * (size - 100))
        (root / name / "sub" / "deep.py").write_text("#" * 100)
    (root / "os.py").write_text("x = 1\n")
    (root / "zz_small.py").write_text("y = 2\n")
    (root / "pkg00" / "tests").mkdir()
    (root / "pkg00" / "tests" / "t.py").write_text("#" * 10_000)
    labels = {p.relative_to(root).as_posix(): lab for p, lab in stdlib.file_labels(root).items()}
    ranked = sorted(sizes, key=lambda k: -sizes[k])
    for name in ranked[: stdlib.TOP_PACKAGES]:
        assert labels[f"{name}/__init__.py"] == labels[f"{name}/sub/deep.py"] == name
    for name in ranked[stdlib.TOP_PACKAGES :]:
        assert labels[f"{name}/__init__.py"] == labels[f"{name}/sub/deep.py"] == "other"
    assert labels["os.py"] == labels["zz_small.py"] == "modules"
    assert "pkg00/tests/t.py" not in labels
    pairs = list(stdlib.iter_labelled(root))
    assert [t for t, _ in pairs] == list(stdlib.iter_documents(root))
    assert [lab for _, lab in pairs] == list(labels.values())


def test_real_stdlib_labels_are_bounded() -> None:
    root = stdlib.stdlib_root()
    labels = {p.relative_to(root).as_posix(): lab for p, lab in stdlib.file_labels().items()}
    assert labels["os.py"] == "modules"
    assert labels["asyncio/events.py"] == "asyncio"
    assert labels["email/message.py"] == "email"
    assert len(set(labels.values())) <= stdlib.TOP_PACKAGES + 2


def test_generated_corpora_labels() -> None:
    source = SourceConfig(kind="arithmetic", num_documents=300)
    pairs = list(iter_labelled(source))
    assert [t for t, _ in pairs] == list(iter_raw(source))
    problems = list(arithmetic.generate(source.arithmetic, source.seed, 300))
    assert [lab for _, lab in pairs] == [arithmetic.OP_LABELS[p.op] for p in problems]
    assert {lab for _, lab in pairs} == {"add", "sub", "mul"}
    assert all(("+" in str(t)) == (lab == "add") for t, lab in pairs)
    synth = SourceConfig(kind="synthetic", num_documents=5, synthetic={"document_length": 8})
    assert {lab for _, lab in iter_labelled(synth)} == {"synthetic"}
    capped = SourceConfig(kind="arithmetic", num_documents=300, max_documents=9)
    assert len(list(iter_labelled(capped))) == 9


def test_files_are_labelled_by_path_below_their_common_directory(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "de").mkdir()
    _write_jsonl(tmp_path / "en" / "part.jsonl", [{"text": "one"}, {"text": "two"}])
    _write_jsonl(tmp_path / "de" / "part.jsonl", [{"text": "eins"}])
    pattern = str(tmp_path / "*" / "part.jsonl")
    source = SourceConfig(kind="files", paths=(pattern,))
    assert list(iter_labelled(source)) == [
        ("eins", "de/part.jsonl"),
        ("one", "en/part.jsonl"),
        ("two", "en/part.jsonl"),
    ]
    (tmp_path / "a.txt").write_text("first\nsecond\n")
    (tmp_path / "b.txt").write_text("third\n")
    lines = SourceConfig(kind="files", paths=(str(tmp_path / "*.txt"),), text_unit="line")
    assert list(iter_labelled(lines)) == [
        ("first", "a.txt"),
        ("second", "a.txt"),
        ("third", "b.txt"),
    ]


def test_source_field_reads_nested_and_flat_columns(tmp_path: Path) -> None:
    path = tmp_path / "pile.jsonl"
    rows: list[object] = [
        {"text": "a", "meta": {"pile_set_name": "Pile-CC"}},
        {"text": "b", "meta": {"pile_set_name": "Github"}},
        {"text": "c", "meta": {"pile_set_name": None}},
        {"text": "d", "meta": {"pile_set_name": "  "}},
    ]
    _write_jsonl(path, rows)
    nested = SourceConfig(kind="files", paths=(str(path),), source_field="meta.pile_set_name")
    assert [lab for _, lab in iter_labelled(nested)] == ["Pile-CC", "Github", "unknown", "unknown"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": ["x", "y"], "src.name": ["web", "books"], "year": [1999, 2024]})
    pq.write_table(table, tmp_path / "f.parquet")
    flat = SourceConfig(kind="files", paths=(str(tmp_path / "f.parquet"),), source_field="src.name")
    assert [lab for _, lab in iter_labelled(flat)] == ["web", "books"]
    numbers = flat.model_copy(update={"source_field": "year"})
    assert [lab for _, lab in iter_labelled(numbers)] == ["1999", "2024"]


def test_bad_source_field_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    _write_jsonl(path, [{"text": "x", "meta": {"tags": ["a", "b"]}}])
    missing = SourceConfig(kind="files", paths=(str(path),), source_field="meta.set")
    with pytest.raises(SourceError, match=r"docs.jsonl: source_field 'meta.set' not found"):
        list(iter_labelled(missing))
    listy = SourceConfig(kind="files", paths=(str(path),), source_field="meta.tags")
    with pytest.raises(SourceError, match=r"source_field 'meta.tags' holds a list"):
        list(iter_labelled(listy))
    (tmp_path / "a.txt").write_text("x\n")
    text = SourceConfig(kind="files", paths=(str(tmp_path / "a.txt"),), source_field="s")
    with pytest.raises(SourceError, match=r"source_field needs json or parquet files"):
        list(iter_labelled(text))


def test_hub_rows_are_labelled_by_dataset_or_field(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    rows: list[object] = [{"story": "once", "genre": "fable"}, {"story": "upon", "genre": "myth"}]
    _write_jsonl(repo / "data" / "train.jsonl", rows)
    by_name = SourceConfig(kind="hf", name=str(repo), text_field="story")
    assert list(iter_labelled(by_name)) == [("once", str(repo)), ("upon", str(repo))]
    by_field = by_name.model_copy(update={"source_field": "genre"})
    assert list(iter_labelled(by_field)) == [("once", "fable"), ("upon", "myth")]
