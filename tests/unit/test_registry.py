"""streamer.registry against a stand-in registry speaking the Confluent API (an HTTP server
holding subjects in memory, not a mock of the client): subject naming, framing, the
compatibility verdict and registration."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from streamer.registry import SchemaRegistry, frame, subject

SCORED = {"type": "record", "name": "Scored", "fields": [{"name": "score", "type": "double"}]}
WIDER = {**SCORED, "fields": [*SCORED["fields"], {"name": "reason", "type": "string", "default": ""}]}
BREAKING = {**SCORED, "fields": [{"name": "score", "type": "string"}]}


class StandIn(BaseHTTPRequestHandler):
    """Subjects → schema texts; "compatible" = every field of the latest version keeps its type."""

    subjects: ClassVar[dict[str, list[str]]] = {}

    def log_message(self, *_: Any) -> None:
        pass

    def reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if m := re.fullmatch(r"/compatibility/subjects/([^/]+)/versions/latest(\?.*)?", self.path):
            versions = self.subjects.get(m.group(1))
            if not versions:
                return self.reply(404, {"error_code": 40401, "message": "Subject not found"})
            old = {f["name"]: f["type"] for f in json.loads(versions[-1])["fields"]}
            new = {f["name"]: f["type"] for f in json.loads(body["schema"])["fields"]}
            return self.reply(200, {"is_compatible": all(new.get(n) == t for n, t in old.items())})
        if m := re.fullmatch(r"/subjects/([^/]+)/versions(\?.*)?", self.path):
            versions = self.subjects.setdefault(m.group(1), [])
            if body["schema"] not in versions:
                versions.append(body["schema"])
            return self.reply(200, {"id": 100 + versions.index(body["schema"])})
        self.reply(404, {"error_code": 404, "message": self.path})

    def do_GET(self) -> None:
        if self.path.startswith("/config"):
            return self.reply(200, {"compatibilityLevel": "BACKWARD"})
        self.reply(404, {"error_code": 40401, "message": "Subject not found"})


@pytest.fixture
def registry() -> Iterator[SchemaRegistry]:
    StandIn.subjects = {}
    server = HTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield SchemaRegistry(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()


def test_subjects_and_framing_follow_the_confluent_conventions() -> None:
    assert subject("payments.scored") == "payments.scored-value"
    assert frame(258, b"body") == b"\x00\x00\x00\x01\x02body"


def test_a_first_schema_is_compatible_and_registers(registry: SchemaRegistry) -> None:
    assert registry.incompatibility("scored", SCORED) is None
    first = registry.register("scored", SCORED)
    assert registry.register("scored", SCORED) == first  # the same schema keeps its id
    assert StandIn.subjects.keys() == {"scored-value"}


def test_an_incompatible_output_schema_gets_a_one_line_reason(registry: SchemaRegistry) -> None:
    registry.register("scored", SCORED)
    assert registry.incompatibility("scored", WIDER) is None
    reason = registry.incompatibility("scored", BREAKING)
    assert reason == "its output schema for scored is incompatible with subject scored-value (BACKWARD compatibility)"
