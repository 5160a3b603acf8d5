"""The broker's configuration: one frozen dataclass, four sources, one name each.

A setting named ``data_dir`` is the ``--data-dir`` flag, the ``data_dir`` key
of the TOML file given with ``--config``, and the ``FERRY_DATA_DIR``
environment variable. Precedence, lowest first: the defaults below, the file,
the environment, the flags. The per-topic settings here (``segment_bytes``,
``retention_ms`` ...) are the defaults new topics get; a topic can override
each with ``ferry topic create -c key=value``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "FERRY_"


class ConfigError(ValueError):
    """A setting has an unknown name or an invalid value."""


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class BrokerConfig:
    host: str = _opt("127.0.0.1", "Address to listen on; 0.0.0.0 exposes the broker to the network.")
    port: int = _opt(9092, "TCP port to listen on (0 picks a free one).")
    data_dir: Path = _opt(Path("ferry-data"), "Directory holding the topic logs.")
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR.")
    broker_id: int = _opt(0, "This broker's node id, reported in metadata.")
    advertised_host: str = _opt("", "Host name clients are told to use (default: the listen host).")
    advertised_port: int = _opt(0, "Port clients are told to use, e.g. behind a proxy (0: the listen port).")
    auto_create_topics: bool = _opt(True, "Create unknown topics on produce or metadata requests.")
    default_partitions: int = _opt(1, "Partitions of auto-created topics and of topics created without -p.")
    max_frame_size: int = _opt(104857600, "Largest request frame accepted, in bytes.")
    max_message_bytes: int = _opt(1048588, "Default largest record batch a topic accepts, in bytes.")
    segment_bytes: int = _opt(1073741824, "Default segment file size before a new one is started.")
    segment_ms: int = _opt(604800000, "Default age after which a new segment is started.")
    retention_ms: int = _opt(604800000, "Default time to keep closed segments (-1: forever).")
    retention_bytes: int = _opt(-1, "Default size a partition may keep (-1: unlimited).")
    flush_interval_messages: int = _opt(-1, "Default: fsync after this many messages (-1: leave it to the OS).")
    flush_interval_ms: int = _opt(-1, "Default: fsync data older than this (-1: leave it to the OS).")
    retention_check_interval_ms: int = _opt(300000, "How often retention looks for segments to delete.")
    log_cleaner_interval_ms: int = _opt(15000, "How often the cleaner looks for compacted topics to clean.")
    log_cleaner_io_max_bytes_per_second: int = _opt(-1, "Cap on the cleaner's disk reads plus writes (-1: unlimited).")
    log_cleaner_dedupe_buffer_size: int = _opt(134217728, "Memory for the cleaner's key map, in bytes; bounds how much of a log one pass cleans.")
    max_connections: int = _opt(10000, "Connections accepted at once; more are closed at accept.")
    max_inflight_requests: int = _opt(64, "Requests a connection may have in progress before the broker stops reading from it.")
    shutdown_timeout_ms: int = _opt(10000, "How long a graceful shutdown waits for requests in progress.")
    group_min_session_timeout_ms: int = _opt(6000, "Shortest session timeout a consumer group member may ask for.")
    group_max_session_timeout_ms: int = _opt(1800000, "Longest session timeout a consumer group member may ask for.")
    group_initial_rebalance_delay_ms: int = _opt(300, "How long the first rebalance of an empty group waits for more members; each new member extends the wait (0: no wait).")
    offsets_retention_minutes: int = _opt(10080, "Committed offsets of a group with no members are deleted this long after it became empty.")
    offsets_retention_check_interval_ms: int = _opt(600000, "How often the broker looks for expired committed offsets.")

    def __post_init__(self) -> None:
        for name in ("retention_check_interval_ms", "log_cleaner_interval_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.log_cleaner_dedupe_buffer_size < 1024:
            raise ConfigError("log_cleaner_dedupe_buffer_size must be at least 1024")
        for name in ("port", "advertised_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} must be 0-65535, not {getattr(self, name)}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}")
        if self.default_partitions < 1:
            raise ConfigError("default_partitions must be at least 1")
        if self.max_frame_size < 1024:
            raise ConfigError("max_frame_size must be at least 1024")
        for name in ("max_connections", "max_inflight_requests", "max_message_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("group_min_session_timeout_ms", "offsets_retention_minutes",
                     "offsets_retention_check_interval_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.group_max_session_timeout_ms < self.group_min_session_timeout_ms:
            raise ConfigError("group_max_session_timeout_ms must not be below group_min_session_timeout_ms")
        if self.group_initial_rebalance_delay_ms < 0:
            raise ConfigError("group_initial_rebalance_delay_ms must not be negative")

    @property
    def advertised(self) -> str:
        if self.advertised_host:
            return self.advertised_host
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    def topic_defaults(self) -> dict[str, str]:
        """The broker-wide defaults for per-topic settings, as config strings."""
        return {
            name: str(getattr(self, name))
            for name in (
                "max_message_bytes",
                "segment_bytes",
                "segment_ms",
                "retention_ms",
                "retention_bytes",
                "flush_interval_messages",
                "flush_interval_ms",
            )
        }


FIELDS = {f.name: f for f in dataclasses.fields(BrokerConfig)}


def _coerce(name: str, value: Any) -> Any:
    f = FIELDS[name]
    kind = f.type if isinstance(f.type, type) else {"str": str, "int": int, "bool": bool, "Path": Path}[f.type]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind is Path:
            return Path(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid value {value!r} for {name}") from None


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for name in FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in environ and environ[key] != "":
            out[name] = _coerce(name, environ[key])
    return out


def from_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    return {k: _coerce(k, v) for k, v in data.items()}


def load(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> BrokerConfig:
    """Merge defaults, file, environment and ``overrides`` (flags; None values skipped).

    Raises ConfigError for unknown names or bad values.
    """
    merged: dict[str, Any] = {}
    env = os.environ if environ is None else environ
    file = config_file
    if file is None and env.get(ENV_PREFIX + "CONFIG"):
        file = Path(env[ENV_PREFIX + "CONFIG"])
    if file is not None:
        merged.update(from_file(file))
    merged.update(from_env(env))
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in FIELDS:
            raise ConfigError(f"unknown setting {k}")
        merged[k] = _coerce(k, v)
    return BrokerConfig(**merged)


def markdown_table() -> str:
    """The README's configuration table rows, one per setting."""
    rows = []
    for f in dataclasses.fields(BrokerConfig):
        default = f.default if f.default != "" else '""'
        if isinstance(default, bool):
            default = str(default).lower()
        rows.append(
            f"| `{f.name}` | `--{f.name.replace('_', '-')}` | `{ENV_PREFIX}{f.name.upper()}` "
            f"| `{default}` | {f.metadata['help']} |"
        )
    return "\n".join(rows)
