"""Byte-level BPE tokenizers: train with the ``tokenizers`` library, load any ``tokenizer.json``.

:class:`Tokenizer` is a thin wrapper around ``tokenizers.Tokenizer`` that knows its BOS/EOS/PAD
ids and a fingerprint (sha256 of its canonical ``tokenizer.json``), which every shard manifest
records so that data prepared with one tokenizer is never read with another.

``encode`` never adds special tokens: documents get BOS/EOS from the preparation step, so the same
rule holds for our tokenizers and for Hub tokenizers whose post-processor would add a BOS.
Training uses a byte-level alphabet of all 256 bytes, so every string is encodable and
``decode(encode(text)) == text``.
"""

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import tokenizers
from loguru import logger
from tokenizers import decoders, models, pre_tokenizers, trainers

from zmaj_lm.config.data import DEFAULT_SPECIAL_TOKENS
from zmaj_lm.data.errors import TokenizerError
from zmaj_lm.utils.io import atomic_write_json, atomic_write_text

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

_BOS_NAMES = ("<|bos|>", "<s>", "<|begin_of_text|>", "<bos>", "[BOS]", "<|startoftext|>")
_EOS_NAMES = ("<|eos|>", "<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[EOS]", "<|im_end|>")
_PAD_NAMES = ("<|pad|>", "<pad>", "[PAD]", "<|padding|>", "<|finetune_right_pad_id|>")


def _token_name(value: Any) -> str | None:
    """A special-token entry of ``tokenizer_config.json``: a string or ``{"content": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus its special-token ids and fingerprint.

    ``bos_id`` and ``pad_id`` may be None (GPT-2 has neither); ``eos_id`` is required because
    every prepared document ends with it.
    """

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        source: str = "<memory>",
    ) -> None:
        self._tok = tokenizer
        self._plain: tokenizers.Tokenizer | None = None
        self.source = source
        self.bos_token = self._resolve(bos_token, _BOS_NAMES)
        self.eos_token = self._resolve(eos_token, _EOS_NAMES)
        self.pad_token = self._resolve(pad_token, _PAD_NAMES)
        if self.eos_token is None:
            raise TokenizerError(
                f"{source}: no EOS token: add one of {', '.join(_EOS_NAMES)} or name it as "
                "eos_token in tokenizer_config.json"
            )
        self._json = tokenizer.to_str()
        self.fingerprint = hashlib.sha256(self._json.encode("utf-8")).hexdigest()
        """sha256 of the canonical ``tokenizer.json`` text (what :meth:`save` writes)."""

    def _resolve(self, explicit: str | None, candidates: Sequence[str]) -> str | None:
        if explicit is not None:
            if self._tok.token_to_id(explicit) is None:
                raise TokenizerError(f"{self.source}: special token {explicit!r} not in vocabulary")
            return explicit
        for name in candidates:
            if self._tok.token_to_id(name) is not None:
                return name
        return None

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the embedding needs at least this many rows)."""
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def eos_id(self) -> int:
        """Id appended to every document."""
        assert self.eos_token is not None
        return self._id(self.eos_token)

    @property
    def bos_id(self) -> int | None:
        """Id optionally prepended to documents; None when the vocabulary has no BOS."""
        return None if self.bos_token is None else self._id(self.bos_token)

    @property
    def pad_id(self) -> int | None:
        """Id for padding generation batches; None when the vocabulary has no PAD."""
        return None if self.pad_token is None else self._id(self.pad_token)

    def _id(self, token: str) -> int:
        tid = self._tok.token_to_id(token)
        assert tid is not None
        return int(tid)

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The wrapped ``tokenizers.Tokenizer``."""
        return self._tok

    def token_to_id(self, token: str) -> int | None:
        """Id of ``token`` (e.g. ``"<|user|>"``), or None when it is not in the vocabulary."""
        tid = self._tok.token_to_id(token)
        return None if tid is None else int(tid)

    def _plain_tokenizer(self) -> tokenizers.Tokenizer:
        """A copy that encodes special-token strings found in raw text as ordinary text."""
        if self._plain is None:
            plain = tokenizers.Tokenizer.from_str(self._json)
            plain.encode_special_tokens = True
            self._plain = plain
        return self._plain

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of ``text`` without added BOS/EOS.

        ``special=True`` turns special-token strings in ``text`` (``"<|user|>"``) into their ids,
        as chat formatting needs; ``special=False`` encodes them as plain text, as raw corpora
        need (a Python file mentioning ``<|eos|>`` must not end its document early).
        """
        tok = self._tok if special else self._plain_tokenizer()
        return list(tok.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str], *, special: bool = True) -> list[list[int]]:
        """:meth:`encode` for many texts; releases the GIL, so threads tokenise in parallel."""
        tok = self._tok if special else self._plain_tokenizer()
        return [list(e.ids) for e in tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; byte-level decoding restores the original string exactly."""
        return str(self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``directory`` (atomically).

        The config names the special tokens so that ``transformers.AutoTokenizer`` and
        :meth:`load` both recover them. Returns the path of ``tokenizer.json``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / TOKENIZER_FILE, self._json)
        specials = [t.content for t in self._tok.get_added_tokens_decoder().values() if t.special]
        named = {self.bos_token, self.eos_token, self.pad_token}
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "additional_special_tokens": [t for t in specials if t not in named],
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000,
        }
        atomic_write_json(directory / TOKENIZER_CONFIG_FILE, config)
        return directory / TOKENIZER_FILE

    @classmethod
    def _from_files(
        cls, tokenizer_file: Path, config_file: Path | None, source: str
    ) -> "Tokenizer":
        try:
            tok = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TokenizerError(f"{tokenizer_file}: not a valid tokenizer.json: {reason}") from exc
        names: dict[str, str | None] = {}
        if config_file is not None and config_file.is_file():
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise TokenizerError(f"{config_file}: unreadable tokenizer config: {exc}") from exc
            if not isinstance(config, dict):
                raise TokenizerError(f"{config_file}: expected a JSON object")
            for key in ("bos_token", "eos_token", "pad_token"):
                name = _token_name(config.get(key))
                if name is not None and tok.token_to_id(name) is not None:
                    names[key] = name
        return cls(tok, source=source, **names)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Tokenizer":
        """Load a ``tokenizer.json`` file, or a directory holding one (and its config)."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerError(f"{path}: no such tokenizer file")
        return cls._from_files(path, path.with_name(TOKENIZER_CONFIG_FILE), str(path))

    @classmethod
    def from_hub(
        cls,
        repo_id: str,
        revision: str | None = None,
        *,
        cache_dir: str | Path | None = None,
    ) -> "Tokenizer":
        """Fetch ``tokenizer.json`` (and its config, when present) of a Hub repository.

        Uses ``huggingface_hub``'s cache; with ``HF_HUB_OFFLINE=1`` only cached files are used.
        """
        from huggingface_hub import hf_hub_download

        try:
            tokenizer_file = hf_hub_download(
                repo_id, TOKENIZER_FILE, revision=revision, cache_dir=cache_dir
            )
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TokenizerError(f"{repo_id}: cannot fetch {TOKENIZER_FILE}: {reason}") from exc
        config_file: Path | None
        try:
            config_file = Path(
                hf_hub_download(
                    repo_id, TOKENIZER_CONFIG_FILE, revision=revision, cache_dir=cache_dir
                )
            )
        except Exception:
            logger.debug(
                "{}: no {}; special tokens guessed by name", repo_id, TOKENIZER_CONFIG_FILE
            )
            config_file = None
        return cls._from_files(Path(tokenizer_file), config_file, repo_id)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token!r}, "
            f"eos={self.eos_token!r}, pad={self.pad_token!r}, fingerprint={self.fingerprint[:12]})"
        )


def _limit_bytes(texts: Iterable[str], max_bytes: int | None) -> Iterator[str]:
    total = 0
    for text in texts:
        if max_bytes is not None and total >= max_bytes:
            return
        total += len(text.encode("utf-8"))
        yield text


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] | None = None,
    *,
    max_bytes: int | None = None,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer on ``texts`` (GPT-2 pre-tokenisation, 256-byte alphabet).

    ``vocab_size`` counts the 256 byte tokens, the merges and ``special_tokens`` (default:
    :data:`~zmaj_lm.config.data.DEFAULT_SPECIAL_TOKENS`, ids 0.. in that order). ``max_bytes``
    stops reading ``texts`` once that many UTF-8 bytes were seen: merges learnt on a few MB are
    nearly as good as on the whole corpus and training time is proportional to the input.
    """
    specials = list(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
    if len(set(specials)) != len(specials):
        raise TokenizerError(f"special_tokens: duplicates in {specials}")
    minimum = 256 + len(specials)
    if vocab_size < minimum:
        raise TokenizerError(
            f"vocab_size: {vocab_size} is below 256 bytes + {len(specials)} special tokens "
            f"= {minimum}"
        )
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_limit_bytes(texts, max_bytes), trainer=trainer)
    result = Tokenizer(tok, source="<trained>")
    logger.info("trained byte-level BPE: {} ids, {} special", result.vocab_size, len(specials))
    return result
