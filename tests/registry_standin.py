"""A stand-in Schema Registry: an HTTP server on a free loopback port that speaks the part of the
Confluent REST API the worker and the tests use, holding subjects in memory. No real registry
runs here (docker/README.md says why), and a mock of the client would test nothing of the wire.

Served: register (`POST /subjects/<s>/versions`, refused with 409 when the subject's level does
not accept the schema), test compatibility against the latest version, subject and global
compatibility levels (`GET`/`PUT /config[/<s>]`), schemas by id (`GET /schemas/ids/<id>`; ids
are global, so one schema under two subjects has one id, as in Confluent's registry), and
optional HTTP basic auth. Compatibility follows Avro's resolution of records of named fields:
a reader field must be in the writer with a type it can read (the same primitive, a promotion,
or a union holding it), or have a default. Enough to refuse the incompatible evolutions the
tests make; not a reference implementation.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

PROMOTIONS = {"int": {"long", "float", "double"}, "long": {"float", "double"}, "float": {"double"}}


def _base(avro_type: Any) -> Any:
    """A primitive with a logical type reads as the primitive."""
    if isinstance(avro_type, dict) and avro_type.get("type") in PROMOTIONS.keys() | {"string", "boolean", "bytes"}:
        return avro_type["type"]
    return avro_type


def type_reads(reader: Any, writer: Any) -> bool:
    """Can a field of type `reader` read every value written as `writer`?"""
    reader, writer = _base(reader), _base(writer)
    if isinstance(writer, list):
        return all(type_reads(reader, branch) for branch in writer)
    if isinstance(reader, list):
        return any(type_reads(branch, writer) for branch in reader)
    return bool(reader == writer or (writer in PROMOTIONS and reader in PROMOTIONS[writer]))


def record_reads(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    written = {field["name"]: field["type"] for field in writer["fields"]}
    return reader.get("name") == writer.get("name") and all(
        type_reads(field["type"], written[field["name"]]) if field["name"] in written else "default" in field
        for field in reader["fields"]
    )


def compatible(level: str, new: dict[str, Any], old: list[dict[str, Any]]) -> bool:
    """`new` against the subject's versions `old` (oldest first) under a Confluent level."""
    against = old if level.endswith("_TRANSITIVE") else old[-1:]
    kind = level.removesuffix("_TRANSITIVE")
    backward = kind in ("BACKWARD", "FULL")
    forward = kind in ("FORWARD", "FULL")
    return all(
        (not backward or record_reads(new, version)) and (not forward or record_reads(version, new))
        for version in against
    )


class StandInRegistry:
    def __init__(self, user_info: str | None = None, level: str = "BACKWARD") -> None:
        """`user_info` ("user:password"): every request must carry it as HTTP basic auth."""
        self.schemas: list[str] = []  # id - 1 → schema text
        self.subjects: dict[str, list[int]] = {}  # subject → ids of its versions, oldest first
        self.levels: dict[str, str] = {}  # subject → its own compatibility level
        self.level = level  # the global one
        self.auth = None if user_info is None else "Basic " + base64.b64encode(user_info.encode()).decode()
        self.lock = threading.Lock()  # the server answers each request on its own thread
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @contextmanager
    def running(self) -> Iterator[StandInRegistry]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    def versions(self, subject: str) -> list[dict[str, Any]]:
        return [json.loads(self.schemas[i - 1]) for i in self.subjects.get(subject, [])]

    def register(self, subject: str, text: str) -> tuple[int, dict[str, Any]]:
        new = json.loads(text)
        if text not in self.schemas:
            self.schemas.append(text)
        schema_id = self.schemas.index(text) + 1
        ids = self.subjects.setdefault(subject, [])
        if schema_id in ids:
            return 200, {"id": schema_id}
        if ids and not compatible(self.levels.get(subject, self.level), new, self.versions(subject)):
            return 409, {"error_code": 409, "message": "Schema being registered is incompatible with an earlier schema"}
        ids.append(schema_id)
        return 200, {"id": schema_id}

    def answer(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, object]:
        path = unquote(path.split("?")[0])
        if method == "POST" and (m := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
            return self.register(m.group(1), body["schema"])
        if method == "POST" and (m := re.fullmatch(r"/compatibility/subjects/([^/]+)/versions/latest", path)):
            if not self.subjects.get(m.group(1)):
                return 404, {"error_code": 40401, "message": "Subject not found"}
            level = self.levels.get(m.group(1), self.level)
            return 200, {"is_compatible": compatible(level, json.loads(body["schema"]), self.versions(m.group(1))[-1:])}
        if m := re.fullmatch(r"/config(?:/([^/]+))?", path):
            if method == "PUT":
                if m.group(1) is None:
                    self.level = body["compatibility"]
                else:
                    self.levels[m.group(1)] = body["compatibility"]
                return 200, {"compatibility": body["compatibility"]}
            if m.group(1) is None:
                return 200, {"compatibilityLevel": self.level}
            if m.group(1) not in self.levels:
                return 404, {"error_code": 40408, "message": "Subject does not have subject-level compatibility"}
            return 200, {"compatibilityLevel": self.levels[m.group(1)]}
        if method == "GET" and (m := re.fullmatch(r"/schemas/ids/(\d+)", path)):
            if not 0 < int(m.group(1)) <= len(self.schemas):
                return 404, {"error_code": 40403, "message": "Schema not found"}
            return 200, {"schema": self.schemas[int(m.group(1)) - 1]}
        return 404, {"error_code": 404, "message": f"not served by the stand-in: {method} {path}"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                reply: object
                if registry.auth is not None and self.headers.get("Authorization") != registry.auth:
                    status, reply = 401, {"error_code": 401, "message": "Unauthorized"}
                else:
                    with registry.lock:
                        status, reply = registry.answer(self.command, self.path, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _serve

        return Handler
