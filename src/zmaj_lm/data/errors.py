"""Errors of the data pipeline; each message is one line naming the file or field and the reason.

Scripts catch :class:`DataError`, print ``str(err)`` to stderr and exit with status 2.
"""


class DataError(ValueError):
    """Bad input to the data pipeline (a source, a tokenizer, a shard directory)."""


class SourceError(DataError):
    """A corpus cannot be read: missing file, unknown field, undecodable format."""


class TokenizerError(DataError):
    """A tokenizer cannot be trained, loaded or matched to prepared data."""


class ShardError(DataError):
    """Prepared shards are missing, truncated, corrupt or made with another tokenizer."""
