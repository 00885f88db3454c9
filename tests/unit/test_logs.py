import io
import logging
import os
import sys

import pytest

from streamer import logs
from streamer.logs import ABSL_PREAMBLE, CurrentStderr, RepeatFilter, log_native_lines


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


def test_one_line_per_kind_of_kafka_message_per_interval() -> None:
    clock = Clock()
    keep = RepeatFilter(10.0, clock)
    failure = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after {}ms in state UP)"
    fail = "FAIL [rdkafka#consumer-1] [thrd:127.0.0.1:1/bootstrap]: " + failure
    client = "kafka client: " + failure
    let_through = [keep.filter(record("streamer.kafka.consumer", fail.format(i))) for i in range(200)]
    let_through += [keep.filter(record("streamer.kafka.consumer", client.format(i))) for i in range(200)]
    assert sum(let_through) == 1  # the same failure, however librdkafka words and numbers it
    assert keep.filter(record("streamer.kafka.producer", "kafka producer: Broker: Message size too large"))

    clock.now = 10.5
    later = record("streamer.kafka.consumer", client.format(7))
    assert keep.filter(later)
    assert later.getMessage().endswith("(399 more like it held back)")


def test_other_loggers_are_never_held_back() -> None:
    keep = RepeatFilter(10.0, Clock())
    assert all(keep.filter(record("streamer.worker", "dead-lettered in[0]@1: PoisonRecord")) for _ in range(5))


NATIVE = f"""{ABSL_PREAMBLE}
I0000 00:00:1796105363.642114   16045 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796105363.680267   16045 cpu_feature_guard.cc:227] This TensorFlow binary is optimized.
To enable the following instructions: AVX2 AVX512F, rebuild TensorFlow.
W0000 00:00:1796105363.700000   16045 loader.cc:12] a warning
{{"level": "INFO", "message": "a line of this process's own log"}}
"""


@pytest.mark.parametrize(("least", "expected"), [("0", 3), ("1", 1), ("3", 0), ("junk", 3)])
def test_tensorflows_native_lines_become_records_above_its_level(
    least: str,
    expected: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", least)
    with caplog.at_level(logging.INFO, logger="tensorflow.native"):
        log_native_lines(NATIVE)
    records = [r for r in caplog.records if r.name == "tensorflow.native"]
    assert len(records) == expected
    assert all(ABSL_PREAMBLE not in r.getMessage() for r in records)
    if expected == 3:
        assert [r.levelno for r in records] == [logging.INFO, logging.INFO, logging.WARNING]
        assert (
            records[1]
            .getMessage()
            .endswith("optimized. To enable the following instructions: AVX2 AVX512F, rebuild TensorFlow.")
        )
    written = capsys.readouterr().err.splitlines()  # (other tests' handlers may write here too)
    assert '{"level": "INFO", "message": "a line of this process\'s own log"}' in written
    assert not [line for line in written if line.startswith(("I0000", "W0000", ABSL_PREAMBLE))]


def test_a_line_before_any_native_one_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with caplog.at_level(logging.INFO, logger="tensorflow.native"):
        log_native_lines("/x/y.py:3: DeprecationWarning: old\n")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "/x/y.py:3: DeprecationWarning: old")
    ]


def test_a_descriptor_2_that_cannot_be_copied_leaves_no_scratch_file_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorFlow is then imported with its lines going where they would have; the scratch file
    opened for them must not stay open for the life of the worker."""
    opened: list[int] = []
    scratch = logs._scratch_descriptor

    def opening() -> int:
        opened.append(scratch())
        return opened[-1]

    def refusing(descriptor: int) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(logs, "_scratch_descriptor", opening)
    monkeypatch.setattr(logs.os, "dup", refusing)
    logs.import_tensorflow()
    monkeypatch.undo()
    with pytest.raises(OSError):
        os.fstat(opened[0])


def test_records_go_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process CLI tests swap sys.stderr for a capture and close it afterwards: a handler
    holding the first one wrote every later record into a closed stream ("Logging error")."""
    handler = CurrentStderr()
    first, second = io.StringIO(), io.StringIO()
    for stream, message in ((first, "one"), (second, "two")):
        monkeypatch.setattr(sys, "stderr", stream)
        handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None))
    assert (first.getvalue(), second.getvalue()) == ("one\n", "two\n")
