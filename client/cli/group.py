"""``ferry group``: list, describe and delete consumer groups, and reset their offsets."""

from __future__ import annotations

import datetime

import click

from .common import Context, json_option, pass_ctx, print_json, print_table, translate_errors


def _admin(ctx: Context):
    from client import Admin

    return Admin(**ctx.client_kwargs())


def _dash(value) -> str:
    return "-" if value is None else str(value)


@click.group("group")
def group() -> None:
    """List, describe and delete consumer groups; see their lag; reset their offsets."""


@group.command("list")
@click.option("-s", "--state", "states", multiple=True,
              help="Only groups in this state (Empty, Stable, PreparingRebalance, ...; repeatable).")
@json_option
@pass_ctx
@translate_errors
def list_(ctx: Context, states, as_json) -> None:
    """List the consumer groups the broker knows: those with members or committed offsets."""
    with _admin(ctx) as admin:
        groups = admin.list_groups(states or None)
    if as_json:
        print_json([g._asdict() for g in groups])
        return
    print_table(["group", "state", "protocol-type"], [(g.group_id, g.state, g.protocol_type or "-") for g in groups])


@group.command("describe")
@click.argument("group_ids", metavar="GROUP...", nargs=-1, required=True)
@json_option
@pass_ctx
@translate_errors
def describe(ctx: Context, group_ids, as_json) -> None:
    """Show a group's members and, per partition, its committed offset and lag.

    LAG is the log end offset minus the committed offset. A partition with
    nothing committed shows CURRENT-OFFSET "-" and, as lag, every record in
    its log (log end minus log start).

    \b
    Examples:
      ferry group describe orders-service
      ferry group describe orders-service --json | jq '.[0].total_lag'
    """
    with _admin(ctx) as admin:
        described = [(d, admin.describe_group_lag(d.group_id, d)) for d in admin.describe_groups(list(group_ids))]
    if as_json:
        print_json([{
            "group": d.group_id, "state": d.state, "protocol_type": d.protocol_type, "protocol": d.protocol,
            "generation": d.generation, "coordinator": d.coordinator, "leader": d.leader,
            "total_lag": sum(r.lag for r in rows),
            "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                         "client_id": m.client_id, "host": m.client_host,
                         "partitions": [list(tp) for tp in sorted(m.assignment)]} for m in d.members],
            "partitions": [r._asdict() for r in rows],
        } for d, rows in described])
        return
    for i, (d, rows) in enumerate(described):
        if i:
            click.echo()
        click.echo(f"GROUP        {d.group_id}")
        click.echo(f"COORDINATOR  {d.coordinator}")
        click.echo(f"STATE        {d.state}")
        click.echo(f"PROTOCOL     {d.protocol or '-'}")
        click.echo(f"GENERATION   {d.generation}")
        click.echo(f"MEMBERS      {len(d.members)}")
        click.echo(f"TOTAL-LAG    {sum(r.lag for r in rows)}")
        if rows:
            click.echo()
            print_table(
                ["topic", "partition", "current-offset", "log-start-offset", "log-end-offset", "lag",
                 "member-id", "client-id", "host"],
                [(r.topic, r.partition, _dash(r.committed), r.log_start_offset, r.log_end_offset, r.lag,
                  _dash(r.member_id), _dash(r.client_id), _dash(r.client_host)) for r in rows],
            )
        if d.members:
            click.echo()
            print_table(
                ["member-id", "instance-id", "client-id", "host", "partitions"],
                [(m.member_id, _dash(m.group_instance_id), m.client_id, m.client_host,
                  _partitions(m.assignment)) for m in d.members],
            )


def _partitions(tps) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in sorted(tps):
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{t}:{','.join(map(str, ps))}" for t, ps in by_topic.items()) or "-"


@group.command("delete")
@click.argument("group_ids", metavar="GROUP...", nargs=-1, required=True)
@json_option
@pass_ctx
@translate_errors
def delete(ctx: Context, group_ids, as_json) -> None:
    """Delete groups that have no members, and their committed offsets."""
    with _admin(ctx) as admin:
        admin.delete_groups(list(group_ids))
    if as_json:
        print_json([{"group": g, "deleted": True} for g in group_ids])
    else:
        for g in group_ids:
            click.echo(f"deleted group {g}")


def _topic_spec(value: str):
    name, sep, parts = value.partition(":")
    if not sep:
        return name
    try:
        return name, [int(p) for p in parts.split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter(f"expected TOPIC or TOPIC:P,P,..., got {value!r}", param_hint="--topic") from None


def _timestamp_ms(value: str) -> int:
    try:
        ts = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 date and time: {value!r}", param_hint="--to-datetime") from None
    if ts.tzinfo is None:
        ts = ts.astimezone()  # a time without a zone is local time, as in Kafka's tool
    return int(ts.timestamp() * 1000)


@group.command("reset-offsets")
@click.argument("group_id", metavar="GROUP")
@click.option("-t", "--topic", "topics", multiple=True, required=True, metavar="TOPIC[:P,P...]",
              help="A topic, or some of its partitions (repeatable).")
@click.option("--to-earliest", is_flag=True, help="The start of each log.")
@click.option("--to-latest", is_flag=True, help="The end of each log (skip everything there now).")
@click.option("--to-offset", type=click.IntRange(min=0), default=None, help="This offset.")
@click.option("--to-datetime", default=None, metavar="ISO",
              help="The first record at or after this time, e.g. 2024-05-01T12:00:00Z.")
@click.option("--shift-by", type=int, default=None, help="Move the committed offsets by N (negative: back).")
@click.option("--execute", is_flag=True, help="Commit the new offsets (without it, only show them).")
@json_option
@pass_ctx
@translate_errors
def reset_offsets(ctx: Context, group_id, topics, to_earliest, to_latest, to_offset, to_datetime, shift_by,
                  execute, as_json) -> None:
    """Set where a group resumes reading. The group must have no members.

    Without --execute this is a dry run: it prints the new offsets and
    changes nothing. New offsets are kept within each log's start and end.

    \b
    Examples:
      ferry group reset-offsets billing --topic orders --to-earliest
      ferry group reset-offsets billing --topic orders:0,1 --shift-by -100 --execute
      ferry group reset-offsets billing --topic orders --to-datetime 2024-05-01T00:00:00Z --execute
    """
    chosen = [to_earliest, to_latest, to_offset is not None, to_datetime is not None, shift_by is not None]
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one of --to-earliest, --to-latest, --to-offset, "
                               "--to-datetime and --shift-by")
    how = {}
    if to_earliest or to_latest:
        how["to"] = "earliest" if to_earliest else "latest"
    elif to_offset is not None:
        how["offset"] = to_offset
    elif to_datetime is not None:
        how["timestamp_ms"] = _timestamp_ms(to_datetime)
    else:
        how["shift_by"] = shift_by
    specs = [_topic_spec(t) for t in topics]
    with _admin(ctx) as admin:
        plan = admin.reset_offsets(group_id, specs, execute=execute, **how)
    if as_json:
        print_json({"group": group_id, "executed": execute, "partitions": [r._asdict() for r in plan]})
        return
    print_table(["topic", "partition", "current-offset", "new-offset"],
                [(r.topic, r.partition, _dash(r.current), r.new) for r in plan])
    if not execute:
        click.echo("\n(dry run: nothing changed; add --execute to commit these offsets)")
