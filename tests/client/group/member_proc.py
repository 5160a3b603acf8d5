"""A consumer group member in its own process, for tests that SIGKILL one.

Usage: python -m tests.client.group.member_proc BOOTSTRAP TOPIC GROUP

Prints ``assigned P,P,...`` whenever its assignment changes and ``record
VALUE`` for each record it processed, flushing every line, until killed.
It commits its positions after each poll's records (auto-commit off).
"""

from __future__ import annotations

import sys

from client import Consumer

from .helpers import FAST


def main() -> None:
    bootstrap, topic, group = sys.argv[1:4]
    consumer = Consumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **FAST)
    last = None
    while True:
        records = consumer.poll(50)
        for recs in records.values():
            for r in recs:
                print("record", r.value.decode(), flush=True)
        if records:
            consumer.commit()
        assigned = sorted(tp.partition for tp in consumer.assignment())
        if assigned != last:
            last = assigned
            print("assigned", ",".join(map(str, assigned)), flush=True)


if __name__ == "__main__":
    main()
