"""``ferry consume``: print a topic's messages as they arrive."""

from __future__ import annotations

import datetime
import json
import re

import click

from .common import Context, check_partition, pass_ctx, translate_errors

FORMATS = {
    "value": "%v",
    "kv": "%k\t%v",
    "full": "%t\t%p\t%o\t%d\t%k\t%v",
}
_FIELD = re.compile(r"%([tpodTkvh%])")


def _text(data) -> str:
    if data is None:
        return ""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("utf-8", errors="backslashreplace")
    return str(data)


def render(record, template: str) -> str:
    """Fill a --format template with one record's fields."""

    def field(match: re.Match) -> str:
        c = match.group(1)
        if c == "t":
            return record.topic
        if c == "p":
            return str(record.partition)
        if c == "o":
            return str(record.offset)
        if c == "d":
            return str(record.timestamp)
        if c == "T":
            ts = datetime.datetime.fromtimestamp(record.timestamp / 1000, datetime.timezone.utc)
            return ts.isoformat(timespec="milliseconds")
        if c == "k":
            return _text(record.key)
        if c == "v":
            return _text(record.value)
        if c == "h":
            return ",".join(f"{k}={_text(v)}" for k, v in (record.headers or ()))
        return "%"

    return _FIELD.sub(field, template.replace("\\t", "\t").replace("\\n", "\n"))


def as_json(record) -> str:
    return json.dumps({
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": None if record.key is None else _text(record.key),
        "value": None if record.value is None else _text(record.value),
        "headers": [[k, None if v is None else _text(v)] for k, v in (record.headers or ())],
    })


@click.command("consume")
@click.argument("topics", nargs=-1, required=True)
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message, not at the end.")
@click.option("-n", "--max-messages", type=click.IntRange(min=1), default=None,
              help="Exit after printing this many messages.")
@click.option("--timeout-ms", type=click.IntRange(min=0), default=None,
              help="Exit when no message arrives for this long.")
@click.option("-g", "--group", default=None, help="Consumer group id.")
@click.option("-p", "--partition", "partitions", type=click.IntRange(min=0), multiple=True,
              help="Read only this partition (repeatable).")
@click.option("-o", "--offset", type=click.IntRange(min=0), default=None,
              help="Start at this offset (with --partition).")
@click.option("-f", "--format", "fmt", default="value", show_default=True,
              help="value, kv, full, or a template: %t topic, %p partition, %o offset, "
                   "%d timestamp (ms), %T timestamp (ISO), %k key, %v value, %h headers.")
@click.option("--json", "as_json_lines", is_flag=True, help="Print one JSON object per message.")
@pass_ctx
@translate_errors
def consume(ctx: Context, topics: tuple[str, ...], from_beginning: bool, max_messages: int | None,
            timeout_ms: int | None, group: str | None, partitions: tuple[int, ...], offset: int | None,
            fmt: str, as_json_lines: bool) -> None:
    """Print messages of TOPICS, one per line, until Ctrl-C.

    Without --from-beginning it starts at the end, printing only new messages.

    \b
    Examples:
      ferry consume test --from-beginning
      ferry consume test -n 10 --format full
      ferry consume orders -f '%p/%o %k=%v' --timeout-ms 5000
    """
    from client import Consumer, TopicPartition

    if offset is not None and not partitions:
        raise click.UsageError("--offset needs --partition")
    template = FORMATS.get(fmt, fmt)
    consumer = Consumer(
        bootstrap_servers=ctx.bootstrap_server,
        client_id=ctx.client_id,
        request_timeout_ms=ctx.timeout_ms,
        group_id=group,
        auto_offset_reset="earliest" if from_beginning else "latest",
        consumer_timeout_ms=timeout_ms if timeout_ms is not None else float("inf"),
    )
    try:
        if partitions:
            for t in topics:
                found = consumer.partitions_for_topic(t)
                for p in partitions:
                    check_partition(t, p, found)
            tps = [TopicPartition(t, p) for t in topics for p in partitions]
            consumer.assign(tps)
            if offset is not None:
                for tp in tps:
                    consumer.seek(tp, offset)
            elif from_beginning:
                consumer.seek_to_beginning(*tps)
        else:
            for t in topics:
                if consumer.partitions_for_topic(t) is None:
                    click.echo(f"topic {t!r} does not exist yet: waiting for it", err=True)
            consumer.subscribe(list(topics))
        printed = 0
        for record in consumer:
            click.echo(as_json(record) if as_json_lines else render(record, template))
            printed += 1
            if max_messages is not None and printed >= max_messages:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
