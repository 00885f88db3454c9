"""Logs: one JSON object per line (default), or plain text for a terminal (STREAMER_LOG_FORMAT=text).

Events of note pass `extra={"event": "...", ...}`; those keys become fields of the JSON line, so
a log pipeline can select `event == "dead_letter"` without parsing messages. Config values are
never logged, so neither are secrets.

librdkafka reports one failure many times: through its log callback and its error callback,
per client, per retry (an unreachable broker gave ~390 lines in 10 s). The Kafka clients'
lines are therefore kept to one per kind of message per `REPEAT_INTERVAL_S`; the next one after
the interval says how many like it were held back.

TensorFlow 2.21 logs through absl, which writes to file descriptor 2 before anything reads
TF_CPP_MIN_LOG_LEVEL: on a CPU with AVX512_VNNI its import alone wrote four plain lines into the
JSON stream. `import_tensorflow` therefore imports it with descriptor 2 pointed at a file and
passes what was written on as log records, dropping those below TF_CPP_MIN_LOG_LEVEL as
TensorFlow would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

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


class CurrentStderr(logging.StreamHandler[Any]):
    """Writes to `sys.stderr` as it is at each record, not as it was when logging was set up:
    a stream swapped in later (a test's capture, an embedding application's) is followed, and
    nothing is written to one after it was closed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure_logging() -> None:
    handler = CurrentStderr()
    handler.addFilter(RepeatFilter())
    if os.environ.get("STREAMER_LOG_FORMAT", "json") == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=os.environ.get("STREAMER_LOG_LEVEL", "INFO"), handlers=[handler], force=True)


# absl's severity letters: their rank as TF_CPP_MIN_LOG_LEVEL counts (0 INFO .. 3 FATAL), and level
NATIVE_SEVERITIES = {
    "I": (0, logging.INFO),
    "W": (1, logging.WARNING),
    "E": (2, logging.ERROR),
    "F": (3, logging.CRITICAL),
}
NATIVE_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]]+)\] (.*)")
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def import_tensorflow() -> None:
    """Import TensorFlow with what its native code writes meanwhile turned into log records (see
    the module docstring). Call it before the first module that imports TensorFlow."""
    sys.stderr.flush()
    captured = saved = -1  # nowhere to write, or no descriptor 2: its lines go where they would have
    with contextlib.suppress(OSError):
        captured = _scratch_descriptor()
        saved = os.dup(2)
    if saved < 0 and captured >= 0:
        os.close(captured)
    if saved >= 0:
        os.dup2(captured, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        if saved >= 0:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            os.lseek(captured, 0, os.SEEK_SET)
            with os.fdopen(captured, "rb") as written:
                log_native_lines(written.read().decode(errors="replace"))


def _scratch_descriptor() -> int:
    """A file in memory where Linux has them: a read-only root file system has no temp folder."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("tensorflow-import-lines")
    descriptor, path = tempfile.mkstemp()
    os.unlink(path)
    return descriptor


def log_native_lines(text: str) -> None:
    """absl lines at their severity, with the lines that follow one as part of it; a JSON line
    (this process's own log) as it was; anything before the first absl line as a warning."""
    setting = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "")
    least = int(setting) if setting.isdigit() else 0
    native = logging.getLogger("tensorflow.native")
    entries: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line == ABSL_PREAMBLE:
            continue
        match = NATIVE_LINE.match(line)
        if match:
            entries.append((match[1], f"{match[2]}] {match[3]}"))
        elif line.startswith("{"):
            print(line, file=sys.stderr)
        elif entries:  # the rest of a multi-line message
            entries[-1] = (entries[-1][0], f"{entries[-1][1]} {line.strip()}")
        else:
            entries.append(("W", line))
    for letter, message in entries:
        rank, level = NATIVE_SEVERITIES[letter]
        if rank >= least:
            native.log(level, message)
