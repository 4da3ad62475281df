"""loguru set-up shared by every script.

The library only calls ``logger.info`` and friends; scripts call :func:`setup_logging` once to pick
the console level and, optionally, a run log file.
"""

import sys
from pathlib import Path

from loguru import logger

_CONSOLE_FORMAT = "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message}"


def setup_logging(level: str = "INFO", log_file: str | Path | None = None) -> None:
    """Log to stderr at ``level`` and, when given, everything at DEBUG to ``log_file``."""
    logger.remove()
    logger.add(sys.stderr, level=level, format=_CONSOLE_FORMAT)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        logger.add(log_file, level="DEBUG", enqueue=False)
