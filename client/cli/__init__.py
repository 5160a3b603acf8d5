"""The ``ferry`` command line: the root group and its global options.

Subcommands live in the modules beside this one; ``ferry broker`` is loaded
from the broker package only when it is the command being run, so the client
commands never import the broker.
"""

from __future__ import annotations

import importlib

import click

from .common import DEFAULT_BOOTSTRAP, Context

_LAZY = {
    "broker": ("broker.cli", "broker_command"),
    "topic": ("client.cli.topic", "topic"),
    "produce": ("client.cli.produce", "produce"),
    "consume": ("client.cli.consume", "consume"),
    "group": ("client.cli.group", "group"),
    "perf": ("client.cli.perf", "perf"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(_LAZY))

    def get_command(self, ctx, name):
        if name in _LAZY:
            module, attr = _LAZY[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-b", "--bootstrap-server", envvar="FERRY_BOOTSTRAP_SERVER", default=DEFAULT_BOOTSTRAP,
    show_default=True, help="Broker address host:port [env FERRY_BOOTSTRAP_SERVER].",
)
@click.option("--client-id", default="ferry-cli", show_default=True, help="Client id sent to the broker.")
@click.option(
    "--request-timeout-ms", default=30000, show_default=True, type=click.IntRange(min=1),
    help="How long to wait for the broker before giving up.",
)
@click.version_option(package_name="ferry", prog_name="ferry")
@click.pass_context
def main(ctx: click.Context, bootstrap_server: str, client_id: str, request_timeout_ms: int) -> None:
    """Ferry: a partitioned message broker in pure Python.

    \b
    Quick start:
      ferry broker                        # start a broker on localhost:9092
      ferry produce test                  # type messages, one per line
      ferry consume test --from-beginning # read them back
      ferry topic list
      ferry group describe my-group       # members, committed offsets, lag
    """
    ctx.obj = Context(bootstrap_server=bootstrap_server, client_id=client_id, timeout_ms=request_timeout_ms)


def run() -> None:
    """Entry point of bin/ferry."""
    main(prog_name="ferry")
