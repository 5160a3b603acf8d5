"""``ferry broker``: run a broker in the foreground.

The options are generated from ``BrokerConfig``, one per field, so the flag,
the config-file key and the environment variable of a setting cannot drift
apart: ``--data-dir``, ``data_dir``, ``FERRY_DATA_DIR``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from . import config as cfgmod


def _options(fn):
    for f in reversed(dataclasses.fields(cfgmod.BrokerConfig)):
        flag = "--" + f.name.replace("_", "-")
        env = cfgmod.ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata['help']} [default: {f.default}; env {env}]"
        if f.type in (bool, "bool"):
            opt = click.option(flag + "/--no-" + f.name.replace("_", "-"), f.name, default=None, help=help_text)
        else:
            kind = {"int": int, "str": str, "Path": click.Path(path_type=Path)}.get(f.type, f.type)
            if kind is Path:
                kind = click.Path(path_type=Path)
            opt = click.option(flag, f.name, type=kind, default=None, help=help_text)
        fn = opt(fn)
    return fn


@click.command("broker")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
    default=None, help="TOML file of settings (keys as the flags, with underscores) [env FERRY_CONFIG].",
)
@_options
def broker_command(config_file: Path | None, **flags) -> None:
    """Run a Ferry broker in the foreground until Ctrl-C or SIGTERM.

    \b
    Examples:
      ferry broker                          # localhost:9092, data in ./ferry-data
      ferry broker --port 9093 --data-dir /var/lib/ferry
      FERRY_DEFAULT_PARTITIONS=4 ferry broker
      ferry broker --host 0.0.0.0           # reachable from other machines
    """
    try:
        config = cfgmod.load(flags, config_file=config_file)
    except cfgmod.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    from .server import run

    try:
        run(config)
    except OSError as exc:
        raise click.ClickException(f"cannot start the broker: {exc.strerror or exc}") from None
