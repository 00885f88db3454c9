"""The project's exceptions. Other libraries' errors are translated at the boundary.

StreamerError
├── Fatal            the worker cannot start or go on: bad config, bad model, broker refused.
│                    The message names the problem and the fix; the CLI prints it on one line.
├── Retriable        a service is unavailable for now (broker, Redis); retry policies act on it.
└── PoisonRecord     one input record cannot be scored; it goes to the DLQ and the partition
                     moves on.
"""


class StreamerError(Exception):
    """Base of every error the project raises on purpose."""


class Fatal(StreamerError):
    """Stop the worker: retrying cannot help, a person has to change something."""


class Retriable(StreamerError):
    """A transient failure of an external service."""


class PoisonRecord(StreamerError):
    """One record is malformed or rejected; it is dead-lettered, never retried."""


class OutputsLost(Retriable):
    """Rewind to the last commit: what was produced since is lost, aborted or unconfirmed."""
