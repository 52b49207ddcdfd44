"""Structured logs: one JSON object per line on stderr.

Every record carries the fields passed in ``extra=`` (topic, partition,
offset, reason, ...) as top-level keys, so a problem with an event can be
found by ``grep '"offset": 1234'`` or by any log shipper.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "t": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class ClientLogThrottle(logging.Filter):
    """At most one record per ``window_s`` for each kind of message from the
    Kafka client's loggers; the next one that passes says how many were held
    back (``suppressed``).

    While the broker is down kafka-python logs every failed reconnect and
    metadata refresh, ~10 lines a second: an hour's outage would bury
    everything else. A kind is the logger and the message template, so the
    first "Connection lost" and the first "Metadata refresh: failed" both get
    through at once.

    >>> f = ClientLogThrottle(window_s=30.0, clock=iter([0.0, 1.0, 2.0, 31.0]).__next__)
    >>> rec = lambda: logging.makeLogRecord({"name": "kafka.net", "msg": "Connection failed: %s", "args": ("x",)})
    >>> [f.filter(r) for r in (rec(), rec(), rec())]
    [True, False, False]
    >>> r = rec(); f.filter(r), r.suppressed
    (True, 2)
    """

    def __init__(
        self,
        window_s: float = 30.0,
        prefix: str = "kafka",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.prefix = prefix
        self.clock = clock
        self._seen: dict[
            tuple[str, str], tuple[float, int]
        ] = {}  # kind -> (last passed at, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == self.prefix or record.name.startswith(self.prefix + ".")):
            return True
        kind = (record.name, str(record.msg))
        now = self.clock()
        last = self._seen.get(kind)
        if last is not None and now - last[0] < self.window_s:
            self._seen[kind] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.suppressed = last[1]
        elif last is None and len(self._seen) >= 1024:
            self._seen.clear()  # bounded, should a client ever log text it formatted itself
        self._seen[kind] = (now, 0)
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ClientLogThrottle())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO (every connection); keep its warnings.
    logging.getLogger("kafka").setLevel(logging.WARNING)
