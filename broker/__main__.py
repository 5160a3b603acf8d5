"""``python -m broker``: the same as ``ferry broker``."""

from .cli import broker_command

if __name__ == "__main__":
    broker_command(prog_name="ferry broker")
