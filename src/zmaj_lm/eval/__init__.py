"""Evaluation: token-weighted validation loss, perplexity and bits per byte."""

from zmaj_lm.eval.perplexity import EvalResult, bits_per_byte, document_lengths, evaluate

__all__ = ["EvalResult", "bits_per_byte", "document_lengths", "evaluate"]
