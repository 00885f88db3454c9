"""Logs: one JSON object per line (default), or plain text for a terminal (STREAMER_LOG_FORMAT=text).

Events of note pass `extra={"event": "...", ...}`; those keys become fields of the JSON line, so
a log pipeline can select `event == "dead_letter"` without parsing messages. Config values are
never logged, so neither are secrets.

librdkafka reports one failure many times: through its log callback and its error callback,
per client, per retry (an unreachable broker gave ~390 lines in 10 s). The Kafka clients'
lines are therefore kept to one per kind of message per `REPEAT_INTERVAL_S`; the next one after
the interval says how many like it were held back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {key: value for key, value in vars(record).items() if key not in _STANDARD}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


REPEAT_INTERVAL_S = 10.0
KAFKA_LOGGERS = "streamer.kafka"
# librdkafka's "FAIL [rdkafka#consumer-1] [thrd:…]: " prefix and our "kafka client: " name the
# same failure differently; numbers (ports, ms, ids) vary between repeats of one failure.
_PREFIX = re.compile(r"^(?:[A-Z]+ \[rdkafka#[^\]]*\] \[thrd:[^\]]*\]: |kafka [a-z]+: )")
_NUMBER = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Lets through the first line of each kind per interval, for the Kafka clients' loggers."""

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._kinds: dict[str, tuple[float, int]] = {}  # kind → (last let through, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(KAFKA_LOGGERS):
            return True
        kind = _NUMBER.sub("#", _PREFIX.sub("", record.getMessage()))
        now = self.clock()
        last = self._kinds.get(kind)
        if last is not None and now - last[0] < self.interval_s:
            self._kinds[kind] = (last[0], last[1] + 1)
            return False
        if len(self._kinds) > 1000:  # kinds are few; this bounds a pathological stream of distinct ones
            self._kinds.clear()
        self._kinds[kind] = (now, 0)
        if last is not None and last[1]:
            record.msg, record.args = f"{record.getMessage()} ({last[1]} more like it held back)", None
        return True


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFilter())
    if os.environ.get("STREAMER_LOG_FORMAT", "json") == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=os.environ.get("STREAMER_LOG_LEVEL", "INFO"), handlers=[handler], force=True)
