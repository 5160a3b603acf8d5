"""What every ``ferry`` command shares: the context object, errors, output.

Each command only parses its arguments, calls one library function and renders
the result. Library errors become ``click.ClickException`` with a one-line
message and a named exit code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import click

from protocol.errors import ApiError, FerryError, GroupIdNotFoundError, UnknownTopicOrPartitionError

DEFAULT_BOOTSTRAP = "localhost:9092"

# Exit codes, named so scripts can tell failures apart.
EXIT_OK = 0
EXIT_ERROR = 1          # the broker refused the request, or it failed
EXIT_USAGE = 2          # a bad argument (click's own code)
EXIT_UNREACHABLE = 3    # no broker answered at the bootstrap address
EXIT_NOT_FOUND = 4      # the topic (or group) does not exist
EXIT_INTERRUPTED = 130  # Ctrl-C


class CommandError(click.ClickException):
    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Context:
    bootstrap_server: str
    client_id: str
    timeout_ms: int

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap_server,
            "client_id": self.client_id,
            "request_timeout_ms": self.timeout_ms,
        }


pass_ctx = click.make_pass_decorator(Context)


def check_partition(topic: str, partition: int, partitions: set[int] | None) -> None:
    """Raise a not-found CommandError unless ``partition`` is one of ``partitions``."""
    if partitions is None:
        raise CommandError(f"topic {topic!r} does not exist", EXIT_NOT_FOUND)
    if partition not in partitions:
        raise CommandError(
            f"topic {topic!r} has no partition {partition} (its partitions are 0-{max(partitions)})",
            EXIT_NOT_FOUND,
        )


def translate_errors(fn: Callable) -> Callable:
    """Turn library exceptions into one-line CLI errors with a named exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from client.errors import NoBrokersAvailable

        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            raise SystemExit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # the reader (e.g. `| head`) went away: stop quietly, as cat does
            sys.stderr.close()
            raise SystemExit(EXIT_OK) from None
        except NoBrokersAvailable as exc:
            raise CommandError(str(exc), EXIT_UNREACHABLE) from None
        except (UnknownTopicOrPartitionError, GroupIdNotFoundError) as exc:
            raise CommandError(str(exc), EXIT_NOT_FOUND) from None
        except ApiError as exc:
            name = exc.code.name if hasattr(exc.code, "name") else str(exc.code)
            raise CommandError(f"{name}: {exc}") from None
        except FerryError as exc:
            raise CommandError(str(exc)) from None

    return wrapper


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")(fn)


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A plain aligned table (no borders), like rpk's, readable in any terminal."""
    rows = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if title:
        click.echo(title)
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def parse_configs(pairs: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` to a dict; a pair without ``=`` is a usage error."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-c/--config")
        out[key.strip()] = value.strip()
    return out
