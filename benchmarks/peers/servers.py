"""Start and stop the peer brokers: loopback only, free ports, temporary data dirs.

Each ``start_*`` returns a ``Server`` (or raises ``Unavailable`` naming the
package to install). Servers listen on 127.0.0.1 and on ports picked free at
start, keep their data in a temporary directory, and are stopped (SIGTERM,
then SIGKILL after a bound) by ``Server.stop``, which also removes the
directory. Every process a server needs is started here, as a child, so
stopping it leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 90.0


class Unavailable(Exception):
    """The server cannot run here; the message says why and how to install it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Server:
    name: str
    port: int
    directory: Path
    procs: list = field(default_factory=list)  # started in order, stopped in reverse
    log: Path | None = None

    def wait_for(self, port: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise Unavailable(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if _port_open(port):
                return
            time.sleep(0.1)
        raise Unavailable(f"{self.name} did not listen on 127.0.0.1:{port} within {timeout:.0f} s:\n"
                          f"{self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 30.0) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _need(binary: str, install: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise Unavailable(f"skipped: {binary} not installed ({install})")
    return path


def _spawn(server: Server, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    log = open(server.log, "ab")  # noqa: SIM115 - the child keeps it
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=server.directory, env=env, start_new_session=True)
    finally:
        log.close()
    server.procs.append(proc)
    return proc


def start_redis() -> Server:
    """redis-server in memory only (no RDB snapshots, no AOF), as the published figures were."""
    binary = _need("redis-server", "apt-get install redis-server")
    server = Server("redis-server", free_port(), Path(tempfile.mkdtemp(prefix="peer-redis-")))
    server.log = server.directory / "redis.log"
    _spawn(server, [binary, "--bind", "127.0.0.1", "--port", str(server.port), "--save", "",
                    "--appendonly", "no", "--dir", str(server.directory), "--daemonize", "no",
                    "--protected-mode", "yes"])
    _started(server, server.port)
    return server


def start_nats() -> Server:
    """nats-server with JetStream, file storage in a temporary directory."""
    binary = _need("nats-server", "apt-get install nats-server")
    server = Server("nats-server", free_port(), Path(tempfile.mkdtemp(prefix="peer-nats-")))
    server.log = server.directory / "nats.log"
    _spawn(server, [binary, "-js", "-a", "127.0.0.1", "-p", str(server.port),
                    "-sd", str(server.directory / "store")])
    _started(server, server.port)
    return server


def start_rabbitmq() -> Server:
    """RabbitMQ with the stream plugin; its own epmd, all ports free ones on 127.0.0.1.

    The start script runs the VM as its child and stops it on SIGTERM.
    """
    _need("rabbitmq-server", "apt-get install rabbitmq-server")
    # Debian's /usr/sbin wrapper switches user and logs to /var/log; run the real script.
    script = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    binary = str(script) if script.exists() else shutil.which("rabbitmq-server")
    epmd = _need("epmd", "apt-get install erlang-base")
    d = Path(tempfile.mkdtemp(prefix="peer-rabbitmq-"))
    stream_port, amqp_port, dist_port, epmd_port = (free_port() for _ in range(4))
    server = Server("rabbitmq-server", stream_port, d)
    server.log = d / "rabbitmq.log"
    (d / "enabled_plugins").write_text("[rabbitmq_stream].\n")
    (d / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = 127.0.0.1:{amqp_port}\n"
        f"stream.listeners.tcp.1 = 127.0.0.1:{stream_port}\n"
        f"stream.advertised_host = 127.0.0.1\n"
        f"stream.advertised_port = {stream_port}\n"
        "loopback_users.guest = true\n"
    )
    (d / "rabbitmq-env.conf").write_text("")
    env = dict(
        os.environ,
        HOME=str(d),  # the Erlang cookie goes here
        ERL_EPMD_ADDRESS="127.0.0.1",
        ERL_EPMD_PORT=str(epmd_port),
        RABBITMQ_NODENAME=f"ferrybench{stream_port}@localhost",
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(amqp_port),
        RABBITMQ_DIST_PORT=str(dist_port),
        # The Erlang distribution listener on loopback only too; and no scheduler
        # busy-waiting (RabbitMQ's advice for hosts shared with other work), which
        # would otherwise take CPU from the client processes on a 2-core machine.
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
            f"-kernel inet_dist_use_interface {{127,0,0,1}} "
            f"-kernel inet_dist_listen_min {dist_port} -kernel inet_dist_listen_max {dist_port} "
            "+sbwt none +sbwtdcpu none +sbwtdio none"
        ),
        RABBITMQ_CONFIG_FILE=str(d / "rabbitmq"),
        RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
        RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
        RABBITMQ_LOG_BASE=str(d / "log"),
        RABBITMQ_LOGS="-",
        RABBITMQ_PID_FILE=str(d / "rabbitmq.pid"),
    )
    _spawn(server, [epmd, "-address", "127.0.0.1", "-port", str(epmd_port)], env)
    _started(server, epmd_port)
    _spawn(server, [binary], env)
    _started(server, stream_port)
    return server


def _started(server: Server, port: int) -> None:
    try:
        server.wait_for(port)
    except BaseException:
        server.stop()
        raise
