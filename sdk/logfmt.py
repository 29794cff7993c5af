"""stderr logging for a block process: constant messages, data in `extra` fields, printed key=value.

The sdk cannot import aiosd.logs (it ships alone), so this is the same format in a few lines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _fmt_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="\n'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    """`2026-11-27T00:00:00.123Z INFO sdk.server instance listening socket=/run/x.sock`"""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        line = " ".join([ts, record.levelname, record.name, record.getMessage()]
                        + [f"{k}={_fmt_value(v)}" for k, v in fields.items()])
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "INFO") -> None:
    """Send logs to stderr in key=value form, unless the block configured logging itself."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
