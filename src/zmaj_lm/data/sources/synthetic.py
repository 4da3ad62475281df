"""The ``synthetic`` corpus: text from a seeded sparse Markov chain with a known entropy rate.

Each state is one ASCII character. A state has ``branching`` successors (always including the
next state in a cycle, so the chain is irreducible) with Dirichlet-distributed probabilities.
Every document starts from the stationary distribution ``pi``, so each following symbol carries
exactly the entropy rate ``H = sum_i pi_i * H(P_i)`` nats on average. Because a symbol is one byte,
``H / ln 2`` is the best achievable bits per byte on the symbols after a document's first; under a
byte-level tokenizer without merges (``vocab_size = 256 + specials``) it is also nats per token.
A model trained on this corpus should approach ``H`` from above: a calibrated yardstick. Every
document has the source label :data:`LABEL`.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from zmaj_lm.config.data import SourceConfig, SyntheticConfig

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_BLOCK = 256
LABEL = "synthetic"
"""The one source label of this corpus."""


@dataclass(frozen=True)
class MarkovChain:
    """Transition matrix ``transition`` (K, K), rows summing to 1, and its stationary law (K,)."""

    transition: NDArray[np.float64]
    stationary: NDArray[np.float64]
    alphabet: str

    def entropy_rate(self) -> float:
        """Exact entropy rate in nats per symbol: ``sum_i pi_i * -sum_j P_ij log P_ij``."""
        p = self.transition
        logp = np.log(np.where(p > 0, p, 1.0))
        row_entropy = -(p * logp).sum(axis=1)
        return float(self.stationary @ row_entropy)

    def sample(self, n: int, length: int, rng: np.random.Generator) -> NDArray[np.int64]:
        """``n`` independent stationary sequences, states (n, length)."""
        k = len(self.alphabet)
        cum = np.cumsum(self.transition, axis=1)
        cum[:, -1] = 1.0
        out = np.empty((n, length), dtype=np.int64)
        cum_pi = np.cumsum(self.stationary)
        cum_pi[-1] = 1.0
        state = np.searchsorted(cum_pi, rng.random(n), side="right")
        out[:, 0] = state
        for t in range(1, length):
            u = rng.random(n)
            state = (u[:, None] >= cum[state]).sum(axis=1)
            np.minimum(state, k - 1, out=state)
            out[:, t] = state
        return out


def make_chain(cfg: SyntheticConfig, seed: int) -> MarkovChain:
    """The chain for ``cfg`` and ``seed`` (same inputs, same chain, on every machine)."""
    k = cfg.alphabet_size
    rng = np.random.default_rng([seed, 0x5EED])
    transition = np.zeros((k, k))
    for i in range(k):
        others = np.array([j for j in range(k) if j != (i + 1) % k])
        extra = rng.choice(others, size=cfg.branching - 1, replace=False)
        successors = np.concatenate([[(i + 1) % k], extra]).astype(np.int64)
        transition[i, successors] = rng.dirichlet(np.full(cfg.branching, cfg.concentration))
    a = np.vstack([transition.T - np.eye(k), np.ones((1, k))])
    b = np.zeros(k + 1)
    b[-1] = 1.0
    stationary = np.linalg.lstsq(a, b, rcond=None)[0]
    stationary = np.clip(stationary, 0.0, None)
    stationary /= stationary.sum()
    return MarkovChain(transition=transition, stationary=stationary, alphabet=ALPHABET[:k])


def entropy_rate(source: SourceConfig) -> float:
    """Exact entropy rate (nats per symbol = nats per byte) of the ``synthetic`` source."""
    return make_chain(source.synthetic, source.seed).entropy_rate()


def bits_per_byte(source: SourceConfig) -> float:
    """The entropy rate in bits per byte, comparable with a model's validation bpb."""
    return entropy_rate(source) / math.log(2)


def iter_documents(source: SourceConfig) -> Iterator[str]:
    """``source.num_documents`` documents of ``synthetic.document_length`` characters each.

    Documents are generated in blocks of 256 from ``default_rng([seed, block])``, so memory is
    flat; a block is always sampled whole, so any prefix of the stream is the same whatever
    ``num_documents`` is.
    """
    cfg = source.synthetic
    chain = make_chain(cfg, source.seed)
    table = np.frombuffer(chain.alphabet.encode("ascii"), dtype=np.uint8)
    for block, start in enumerate(range(0, source.num_documents, _BLOCK)):
        n = min(_BLOCK, source.num_documents - start)
        rng = np.random.default_rng([source.seed, block])
        states = chain.sample(_BLOCK, cfg.document_length, rng)[:n]
        chars = table[states]
        for row in chars:
            yield row.tobytes().decode("ascii")
