"""``ferry topic``: create, list, describe and delete topics."""

from __future__ import annotations

import click

from .common import (
    Context,
    json_option,
    parse_configs,
    pass_ctx,
    print_json,
    print_table,
    translate_errors,
)


def _admin(ctx: Context):
    from client import Admin

    return Admin(**ctx.client_kwargs())


@click.group("topic")
def topic() -> None:
    """Create, list, describe and delete topics."""


@topic.command("create")
@click.argument("names", nargs=-1, required=True)
@click.option("-p", "--partitions", type=click.IntRange(min=1), default=None,
              help="Number of partitions [default: the broker's default_partitions].")
@click.option("-r", "--replicas", type=click.IntRange(min=1, max=1), default=1, show_default=True,
              help="Replication factor (a single broker keeps one copy).")
@click.option("-c", "--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="Topic setting, e.g. -c retention_ms=86400000 (repeatable).")
@click.option("--dry-run", is_flag=True, help="Only validate the request.")
@json_option
@pass_ctx
@translate_errors
def create(ctx: Context, names, partitions, replicas, configs, dry_run, as_json) -> None:
    """Create one or more topics.

    \b
    Examples:
      ferry topic create orders -p 6
      ferry topic create audit -c retention_ms=-1 -c segment_bytes=104857600
    """
    from client import NewTopic

    cfg = parse_configs(configs)
    with _admin(ctx) as admin:
        admin.create_topics(
            [NewTopic(n, partitions or -1, replicas, cfg) for n in names], validate_only=dry_run
        )
    if as_json:
        print_json([{"topic": n, "created": not dry_run} for n in names])
    else:
        verb = "would create" if dry_run else "created"
        for n in names:
            click.echo(f"{verb} topic {n}")


@topic.command("list")
@click.option("-i", "--internal", is_flag=True, help="Also list internal topics (__consumer_offsets).")
@json_option
@pass_ctx
@translate_errors
def list_(ctx: Context, internal, as_json) -> None:
    """List topics with their partition counts."""
    with _admin(ctx) as admin:
        names = [n for n in admin.list_topics() if internal or not n.startswith("__")]
        described = admin.describe_topics(names) if names else []
    if as_json:
        print_json([{"topic": t.name, "partitions": t.num_partitions} for t in described])
        return
    print_table(["name", "partitions"], [(t.name, t.num_partitions) for t in described])


@topic.command("describe")
@click.argument("names", nargs=-1, required=True)
@json_option
@pass_ctx
@translate_errors
def describe(ctx: Context, names, as_json) -> None:
    """Show a topic's partitions (log start and end offsets) and its config."""
    with _admin(ctx) as admin:
        described = admin.describe_topics(list(names))
    if as_json:
        print_json([
            {
                "topic": t.name,
                "partitions": [p._asdict() for p in t.partitions],
                "config": t.configs,
            }
            for t in described
        ])
        return
    for i, t in enumerate(described):
        if i:
            click.echo()
        click.echo(f"NAME        {t.name}")
        click.echo(f"PARTITIONS  {t.num_partitions}")
        click.echo()
        print_table(
            ["partition", "leader", "log-start-offset", "log-end-offset", "records"],
            [(p.partition, p.leader, p.log_start_offset, p.log_end_offset,
              p.log_end_offset - p.log_start_offset) for p in t.partitions],
        )
        click.echo()
        print_table(["config", "value"], sorted(t.configs.items()))


@topic.command("alter-config")
@click.argument("name")
@click.argument("settings", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--delete", "to_reset", multiple=True, metavar="KEY",
              help="Reset this setting to the broker's default (repeatable).")
@click.option("--dry-run", is_flag=True, help="Only validate the change.")
@pass_ctx
@translate_errors
def alter_config(ctx: Context, name, settings, to_reset, dry_run) -> None:
    """Change a topic's settings; `ferry topic describe` shows the result.

    \b
    Examples:
      ferry topic alter-config orders retention.ms=86400000
      ferry topic alter-config sessions cleanup.policy=compact --delete retention.bytes
    """
    changes: dict = dict(parse_configs(settings))
    changes.update({key: None for key in to_reset})
    if not changes:
        raise click.UsageError("give at least one KEY=VALUE or --delete KEY")
    with _admin(ctx) as admin:
        admin.alter_configs({name: changes}, validate_only=dry_run)
    verb = "would alter" if dry_run else "altered"
    click.echo(f"{verb} topic {name}: " + ", ".join(
        f"{k}={'(default)' if v is None else v}" for k, v in changes.items()))


@topic.command("delete")
@click.argument("names", nargs=-1, required=True)
@json_option
@pass_ctx
@translate_errors
def delete(ctx: Context, names, as_json) -> None:
    """Delete topics and all their data."""
    with _admin(ctx) as admin:
        admin.delete_topics(list(names))
    if as_json:
        print_json([{"topic": n, "deleted": True} for n in names])
    else:
        for n in names:
            click.echo(f"deleted topic {n}")
