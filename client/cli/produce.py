"""``ferry produce``: one message per line of standard input."""

from __future__ import annotations

import sys

import click

from .common import CommandError, Context, check_partition, pass_ctx, translate_errors


def _acks(value: str):
    return "all" if value in ("all", "-1") else int(value)


@click.command("produce")
@click.argument("topic")
@click.option("-k", "--key-separator", default=None,
              help="Split each line at the first SEP into key and value (e.g. ':').")
@click.option("--acks", type=click.Choice(["0", "1", "all", "-1"]), default="all", show_default=True,
              help="0: fire and forget; 1: the broker appended it; all: appended and fsynced.")
@click.option("-p", "--partition", type=click.IntRange(min=0), default=None,
              help="Send every message to this partition (default: by key, or sticky).")
@click.option("-z", "--compression", type=click.Choice(["none", "gzip", "lz4", "zstd"]), default="none",
              show_default=True, help="Compress batches with this codec.")
@click.option("-H", "--header", "headers", multiple=True, metavar="KEY=VALUE",
              help="Add this header to every message (repeatable).")
@click.option("--linger-ms", type=click.IntRange(min=0), default=5, show_default=True,
              help="How long to wait to fill a batch.")
@pass_ctx
@translate_errors
def produce(ctx: Context, topic: str, key_separator: str | None, acks: str, partition: int | None,
            compression: str, headers: tuple[str, ...], linger_ms: int) -> None:
    """Send each line of standard input to TOPIC as one message.

    On a terminal it shows a `>` prompt; end with Ctrl-D. Unknown topics are
    created by the broker when it auto-creates topics (the default).

    \b
    Examples:
      ferry produce test
      echo "hello" | ferry produce test
      ferry produce orders --key-separator : <<< "user42:paid"
    """
    from client import Producer

    hdrs = []
    for h in headers:
        k, sep, v = h.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {h!r}", param_hint="-H/--header")
        hdrs.append((k, v.encode()))
    interactive = sys.stdin.isatty()
    failures: list[BaseException] = []

    def on_error(exc: BaseException) -> None:
        failures.append(exc)
        if interactive:
            click.echo(f"error: {exc}", err=True)

    producer = Producer(
        acks=_acks(acks),
        compression_type=None if compression == "none" else compression,
        linger_ms=linger_ms,
        **ctx.client_kwargs(),
    )
    sent = 0
    try:
        if partition is not None:
            check_partition(topic, partition, producer.partitions_for(topic))
        while True:
            if interactive:
                click.echo(">", nl=False)
                sys.stdout.flush()
            line = sys.stdin.buffer.readline()
            if not line:
                break
            line = line.rstrip(b"\r\n")
            key = None
            if key_separator is not None:
                k, sep, v = line.partition(key_separator.encode())
                if sep:
                    key, line = k, v
            fut = producer.send(topic, value=line, key=key, partition=partition, headers=hdrs or None)
            fut.add_errback(on_error)
            sent += 1
            if interactive:
                # a person typing expects each line delivered before the next prompt
                producer.flush(ctx.timeout_ms / 1000)
        producer.flush(ctx.timeout_ms / 1000)
    except KeyboardInterrupt:
        producer.flush(ctx.timeout_ms / 1000)
    finally:
        if interactive:
            click.echo()
        producer.close(ctx.timeout_ms / 1000)
    if failures:
        raise CommandError(f"{len(failures)} of {sent} message(s) failed: {failures[0]}")
