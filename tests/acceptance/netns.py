"""Hosts for a test: Linux network namespaces joined by a bridge on a private subnet.

``Network(prefix)`` makes a namespace ``<prefix>-net`` that holds a bridge, the switch;
``network.add(name)`` makes a host, a namespace ``<prefix>-<name>`` whose ``eth0`` has
the subnet's next address and is one end of a veth pair, the other end a port of the
bridge. The pairs are created inside the namespaces, never in the machine's own: the
hosts' traffic cannot reach the machine's interfaces or its services (its Postgres on
:5432 is not the db host's), and two runs at once, each with its own prefix, may both use
the same subnet.

Code runs on a host in two ways: ``host.call(fn, ...)`` runs ``fn`` in a thread of this
process that entered the host's namespace (setns(2) moves one thread: the sockets it
opens and the processes it starts belong to the namespace), and ``host.start(process)``
starts a :class:`tests.conftest.Process` there. ``host.cut()`` takes the host's switch
port down, as if its cable were pulled: its packets vanish and its sockets notice nothing
until their own timeouts; ``host.rejoin()`` brings the port back up.

``network.stop()`` stops the processes the hosts started; ``network.close()`` does too,
then kills whatever else still runs in the namespaces (``ip netns pids``: only processes
started there) and deletes them.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import Process

#: setns(2)'s flag for a network namespace.
CLONE_NEWNET = 0x40000000


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "no ip command (iproute2) on PATH"
    probe = f"aq{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    ip("netns", "del", probe)
    return None


def ip(*args: str) -> str:
    """Run ``ip *args``; its output.

    :raises RuntimeError: when it fails, with what it said.
    """
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _enter(namespace: str) -> None:
    """Move the calling thread into ``namespace`` (os.setns is Python 3.12's)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {namespace}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class Host:
    """A network namespace with one address on the network, and what runs in it."""

    def __init__(self, network: Network, name: str, address: str) -> None:
        self.network = network
        self.name = name
        self.namespace = f"{network.prefix}-{name}"
        self.address = address
        #: Its veth's end in the switch's namespace.
        self.port = f"p-{name}"[:15]
        self.processes: list[Process] = []
        self._thread = ThreadPoolExecutor(
            1, thread_name_prefix=self.namespace, initializer=_enter, initargs=(self.namespace,)
        )

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address}>"

    def call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` run inside the host's namespace; what it returns."""
        return self._thread.submit(fn, *args, **kwargs).result()

    def start(self, process: Process) -> Process:
        """Start ``process`` in the host's namespace; ``network.stop()`` stops it."""
        self.call(process.start)
        self.processes.append(process)
        return process

    def cut(self) -> None:
        """Take the host off the network: its switch port goes down."""
        ip("-n", self.network.switch, "link", "set", self.port, "down")

    def rejoin(self) -> None:
        """Put the host back on the network."""
        ip("-n", self.network.switch, "link", "set", self.port, "up")

    def stop(self) -> None:
        """Stop the processes the host started (at once: each may take seconds)."""
        with ThreadPoolExecutor(len(self.processes) or 1) as stopping:
            list(stopping.map(lambda process: process.stop(timeout=10), self.processes))

    def close(self) -> None:
        """End the thread that runs ``call``s in the namespace."""
        self._thread.shutdown()


class Network:
    """A switch and the hosts on it; ``subnet`` is the first three octets of a /24."""

    def __init__(self, prefix: str, subnet: str = "10.231.0") -> None:
        self.prefix = prefix
        self.subnet = subnet
        self.hosts: list[Host] = []
        self.namespaces: list[str] = []
        self.switch = f"{prefix}-net"
        try:
            self._namespace("net")
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _namespace(self, name: str) -> str:
        namespace = f"{self.prefix}-{name}"
        ip("netns", "add", namespace)
        self.namespaces.append(namespace)
        ip("-n", namespace, "link", "set", "lo", "up")
        return namespace

    def add(self, name: str) -> Host:
        """A new host on the switch, with the subnet's next address (``close`` deletes it
        even when this fails half-way)."""
        self._namespace(name)
        host = Host(self, name, f"{self.subnet}.{len(self.hosts) + 1}")
        self.hosts.append(host)
        ip("-n", self.switch, "link", "add", host.port, "type", "veth", "peer", "name", "eth0",
           "netns", host.namespace)  # fmt: skip
        ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        return host

    def stop(self) -> None:
        """Stop the processes every host started."""
        with ThreadPoolExecutor(len(self.hosts) or 1) as stopping:
            list(stopping.map(Host.stop, self.hosts))

    def close(self) -> None:
        """Stop every process started in the namespaces and delete them."""
        self.stop()
        for host in self.hosts:
            host.close()
        for namespace in self.namespaces:
            pids = [int(p) for p in ip("netns", "pids", namespace).split()]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while ip("netns", "pids", namespace).split() and time.monotonic() < deadline:
                time.sleep(0.05)
            ip("netns", "del", namespace)
