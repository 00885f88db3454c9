"""The `features:` section: where the entity state and stored features live in Redis, and how
long a batch may wait on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from pydantic import Field, SecretStr, field_validator
from redis.cluster import RedisCluster
from redis.connection import parse_url

from streamer.section import Section


class RedisTlsSettings(Section):
    ca_file: Path | None = Field(None, description="CA bundle that signed the server certificate.")
    cert_file: Path | None = Field(None, description="Client certificate, for mutual TLS.")
    key_file: Path | None = Field(None, description="Client private key, for mutual TLS.")


class FeatureStoreSettings(Section):
    url: str = Field("redis://127.0.0.1:6379/0", description="redis:// or rediss:// (TLS) address.")
    username: str | None = Field(None, description="ACL user for AUTH.")
    password: SecretStr | None = Field(None, description="AUTH password; prefer STREAMER_FEATURES__PASSWORD.")
    tls: RedisTlsSettings | None = Field(None, description="TLS files; the url must be rediss://.")
    cluster: bool = Field(False, description="Redis Cluster: snapshot writes go as one script call per hash slot.")
    key_prefix: str = Field(
        "streamer", description="Prefix of every key the worker writes; one per consumer group (state is per group)."
    )
    partition_key: str | None = Field(
        None,
        description="Input field the input topic is keyed by (default: event.entity_field). Aggregates must be over "
        "it: only then is each entity's state owned by one partition and exact under replay.",
    )
    ttl_s: float = Field(
        7 * 86400,
        ge=0,
        description="An entity's state snapshot expires between this and twice this after its last write; 0 = never.",
    )
    timeout_ms: float = Field(100, gt=0, description="Socket timeout of one Redis call.")
    max_stall_ms: float = Field(
        250, gt=0, description="Upper bound a batch waits on Redis, retries included, before using defaults."
    )
    retries: int = Field(2, ge=0, description="Retries of a failed round trip within max_stall_ms.")
    breaker_open_s: float = Field(5, gt=0, description="After retries fail, skip Redis this long, then probe.")

    def client(self) -> redis.Redis | RedisCluster:
        """A client as this section describes it (AUTH, TLS, cluster); it connects on first use."""
        options: dict[str, Any] = {
            "username": self.username,
            "password": self.password.get_secret_value() if self.password else None,
            "socket_timeout": self.timeout_ms / 1000,
            "socket_connect_timeout": self.timeout_ms / 1000,
        }
        if self.tls is not None:
            options |= {
                "ssl_ca_certs": str(self.tls.ca_file) if self.tls.ca_file else None,
                "ssl_certfile": str(self.tls.cert_file) if self.tls.cert_file else None,
                "ssl_keyfile": str(self.tls.key_file) if self.tls.key_file else None,
            }
        factory = RedisCluster.from_url if self.cluster else redis.Redis.from_url
        return factory(self.url, **options)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        """Checked here, not on first connect, so a typo is one line at start-up. The URL can hold
        a password, and redis-py's messages can quote parts of it: none of it is repeated."""
        try:
            parse_url(url)
        except ValueError as exc:
            problem = "its scheme" if "scheme" in str(exc) else "its host, port or credentials"
            raise ValueError(
                f"not a valid Redis URL ({problem}); use redis://[user:password@]host[:port][/db], rediss:// "
                "for TLS or unix:///path.sock, and put the password in features.password"
            ) from None
        return url
