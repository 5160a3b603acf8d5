"""``ferry perf``: throughput and latency tests, shaped like Kafka's perf-test tools.

The measuring lives in ``client.perf`` (produce, consume) and
``client.perf_e2e`` (e2e); this module parses, shows progress on a terminal
and prints Kafka's summary line, or one JSON object with --json.
"""

from __future__ import annotations

import contextlib
import sys

import click

from ..accumulator import DEFAULT_BATCH_SIZE
from .common import CommandError, Context, json_option, pass_ctx, print_json, translate_errors

ACKS = click.Choice(["0", "1", "all", "-1"])


@contextlib.contextmanager
def _progress(total: int, what: str):
    """A rich progress bar on standard error when it is a terminal, else nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task(what, total=total)
    with bar:
        yield lambda done: bar.update(task, completed=done)


def _client(ctx: Context) -> dict:
    return ctx.client_kwargs()


def _show(result: dict, as_json: bool, text: str) -> None:
    if as_json:
        print_json(result)
    else:
        click.echo(text)


@click.group("perf")
def perf() -> None:
    """Measure throughput and latency (like Kafka's perf-test tools).

    \b
    Examples:
      ferry perf produce --topic bench --num-records 1000000 --record-size 100
      ferry perf consume --topic bench --num-records 1000000
      ferry perf e2e --topic lat --rate 5000 --duration 30
    """


@perf.command("produce")
@click.option("--topic", required=True, help="Topic to write to (auto-created if the broker allows).")
@click.option("--num-records", type=click.IntRange(min=1), required=True, help="Records to send.")
@click.option("--record-size", type=click.IntRange(min=0), default=100, show_default=True,
              help="Bytes of random value per record (no key).")
@click.option("--throughput", type=float, default=-1, show_default=True,
              help="Records/s to aim at, over all producers (-1: as fast as possible).")
@click.option("--acks", type=ACKS, default="1", show_default=True, help="Producer acks.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Producer batch_size in bytes.")
@click.option("--linger-ms", type=click.FloatRange(min=0), default=5, show_default=True,
              help="Producer linger_ms.")
@click.option("--compression", type=click.Choice(["none", "gzip", "lz4", "zstd"]), default="none",
              show_default=True, help="Producer compression_type.")
@click.option("--producers", type=click.IntRange(min=1, max=64), default=1, show_default=True,
              help="Producer processes, each sending its share of the records.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=600,
              show_default=True, help="Stop sending after this many seconds.")
@json_option
@pass_ctx
@translate_errors
def produce(ctx: Context, topic, num_records, record_size, throughput, acks, batch_size,
            linger_ms, compression, producers, timeout_s, as_json) -> None:
    """Send NUM_RECORDS random records and report records/s and ack latency.

    Prints kafka-producer-perf-test's summary line. Latency runs from send()
    to the acknowledgement, sampled on at most 20,000 records (every k-th).

    \b
    Examples:
      ferry perf produce --topic bench --num-records 1000000 --record-size 100
      ferry perf produce --topic bench --num-records 100000 --throughput 5000 --acks all
      ferry perf produce --topic bench --num-records 4000000 --producers 4 --json
    """
    from client.perf import ProduceSpec, run_produce, summary_line

    spec = ProduceSpec(
        topic=topic, num_records=num_records, record_size=record_size, throughput=throughput,
        acks=acks, batch_size=batch_size, linger_ms=linger_ms,
        compression=None if compression == "none" else compression,
        producers=producers, timeout_s=timeout_s,
    )
    with _progress(num_records, "producing") as progress:
        result = run_produce(spec, _client(ctx), progress)
    _show(result, as_json, summary_line(result))
    if result["errors"]:
        raise CommandError(f"{result['errors']} sampled record(s) not acknowledged: "
                           f"{result['error'] or 'see the broker log'}")
    if result["timed_out"]:
        raise CommandError(f"stopped after {timeout_s} s with {result['records']} records sent")


@perf.command("consume")
@click.option("--topic", required=True, help="Topic to read from its beginning.")
@click.option("--num-records", type=click.IntRange(min=1), required=True, help="Records to read.")
@click.option("-g", "--group", default=None, help="Consumer group id.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=10,
              show_default=True, help="Give up when no record arrives for this many seconds.")
@json_option
@pass_ctx
@translate_errors
def consume(ctx: Context, topic, num_records, group, timeout_s, as_json) -> None:
    """Read NUM_RECORDS records from the beginning and report records/s and MB/s.

    Iterates ConsumerRecord objects with the blocking Consumer. There is no
    per-record latency here (the JSON's latency_ms values are null): use
    `ferry perf e2e` for that.

    \b
    Examples:
      ferry perf consume --topic bench --num-records 1000000
      ferry perf consume --topic bench --num-records 1000000 --json
    """
    from client.perf import ConsumeSpec, run_consume

    spec = ConsumeSpec(topic=topic, num_records=num_records, group=group, idle_timeout_s=timeout_s)
    with _progress(num_records, "consuming") as progress:
        result = run_consume(spec, _client(ctx), progress)
    first = result["first_record_ms"]
    _show(result, as_json,
          f"{result['records']} records received, {result['records_per_sec']:.1f} records/sec "
          f"({result['mb_per_sec']:.2f} MB/sec), "
          + ("no record arrived." if first is None else f"first record after {first} ms."))
    if not result["complete"]:
        raise CommandError(
            f"only {result['records']} of {num_records} records arrived "
            f"(nothing for {timeout_s} s)"
        )


@perf.command("e2e")
@click.option("--topic", required=True, help="Topic to send through.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Records/s to send.")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True),
              required=True, help="Seconds to send for.")
@click.option("--record-size", type=click.IntRange(min=16), default=100, show_default=True,
              help="Bytes per record (16 of them carry the send time).")
@click.option("--acks", type=ACKS, default="1", show_default=True, help="Producer acks.")
@click.option("--consumer-api", type=click.Choice(["blocking", "asyncio"]), default="blocking",
              show_default=True,
              help="Consume with the blocking Consumer (I/O in its own thread) or the AsyncConsumer "
                   "(in the consuming process's event loop).")
@click.option("--producer-api", type=click.Choice(["blocking", "asyncio"]), default="blocking",
              show_default=True,
              help="Send with the blocking Producer (I/O in its own thread) or the AsyncProducer "
                   "(in the sending process's event loop).")
@json_option
@pass_ctx
@translate_errors
def e2e(ctx: Context, topic, rate, duration_s, record_size, acks, consumer_api, producer_api,
        as_json) -> None:
    """Send at RATE records/s with linger_ms=0; a consumer process times their arrival.

    Latency runs from just before send() to the consumer reaching the record;
    both processes read the machine-wide monotonic clock.

    \b
    Examples:
      ferry perf e2e --topic lat --rate 5000 --duration 30
      ferry perf e2e --topic lat --rate 5000 --duration 30 --consumer-api asyncio
      ferry perf e2e --topic lat --rate 5000 --duration 30 --producer-api asyncio --consumer-api asyncio
    """
    from client.perf import summary_line
    from client.perf_e2e import E2ESpec, run_e2e

    spec = E2ESpec(topic=topic, rate=rate, duration_s=duration_s, record_size=record_size, acks=acks,
                   consumer_api=consumer_api, producer_api=producer_api)
    with _progress(int(rate * duration_s), "sending") as progress:
        result = run_e2e(spec, _client(ctx), progress)
    _show(result, as_json,
          summary_line({**result, "records": result["sent"]})
          + f" {result['records']} received, {result['lost']} lost.")
    if result["lost"]:
        raise CommandError(f"{result['lost']} of {result['sent']} records did not arrive")
