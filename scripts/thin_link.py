#!/usr/bin/env python3
"""A thin link on loopback: forward connections at a limited rate, count every byte, and cut on demand.

Stands for a roadside unit's 4G router in tests and benchmarks (tests/docker/test_fleet_delivery.py,
scripts/bench_rollout). Each ``--link`` forwards a listening address to a target: ``unix:/path`` (a
unit's Docker engine socket) or ``tcp:127.0.0.1:PORT`` (a registry). Every link has its own rate, in
each direction, shared by all its connections (a token bucket).

    scripts/thin_link.py --rate 2mbit --stats stats.json \\
        --link unit-1:unix:/tmp/u1/proxy.sock=unix:/tmp/u1/docker.sock \\
        --link registry:tcp:127.0.0.1:5001=tcp:127.0.0.1:5000

``--cut-after BYTES`` drops every connection of a link once that many bytes went towards its target
(``--cut-direction down``: came back from it, as a pull from a registry does; ``--cut-link NAME`` picks
the link, default all); with ``--down-after-cut`` the link then refuses new connections, as a router that
lost its signal, until the process is restarted. It prints ``ready`` once
it listens; ``--stats FILE`` gets each link's bytes up (towards the target) and down, as JSON, rewritten
while traffic flows and at exit (SIGTERM or SIGINT). The counts are the bytes written to the far side's
socket, including the part of a chunk that was in flight when a cut dropped its connection. A unix socket
it listens on is its owner's only (0600), as a Docker engine's socket is root's: whoever connects (the
tests, run as root) is the user who started it. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 16 << 10


def parse_rate(text: str) -> float:
    """Bytes per second of ``2mbit``, ``500kbit``, ``1gbit``, ``250kB`` or a plain number of bytes/s."""
    units = {"gbit": 1e9 / 8, "mbit": 1e6 / 8, "kbit": 1e3 / 8, "gb": 1e9, "mb": 1e6, "kb": 1e3, "b": 1.0}
    lowered = text.strip().lower()
    for suffix, factor in units.items():
        if lowered.endswith(suffix):
            return float(lowered[: -len(suffix)]) * factor
    return float(lowered)


class Bucket:
    """A token bucket: ``take(n)`` returns once ``n`` bytes may pass at ``rate`` bytes/s (burst ``CHUNK``)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = float(CHUNK)
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, count: int) -> None:
        if self.rate <= 0:
            return
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(float(CHUNK), self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= count:
                    self.tokens -= count
                    return
                await asyncio.sleep((count - self.tokens) / self.rate)


@dataclass
class Link:
    name: str
    listen: str
    target: str
    up: Bucket
    down: Bucket
    cut_after: int = 0
    cut_upward: bool = True  # --cut-after counts the bytes towards the target (False: from it)
    down_after_cut: bool = False
    bytes_up: int = 0
    bytes_down: int = 0
    connections: int = 0
    cut: bool = False
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    unsent: dict[asyncio.StreamWriter, int] = field(default_factory=dict)  # what a cut dropped, per writer
    server: asyncio.AbstractServer | None = None

    def stats(self) -> dict[str, object]:
        return {"up": self.bytes_up, "down": self.bytes_down, "connections": self.connections, "cut": self.cut}


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, _, rest = address.partition(":")
    if kind == "unix":
        return await asyncio.open_unix_connection(rest)
    host, _, port = rest.rpartition(":")
    return await asyncio.open_connection(host, int(port))


def _count(link: Link, upward: bool, sent: int) -> None:
    if upward:
        link.bytes_up += sent
    else:
        link.bytes_down += sent


async def _pump(link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upward: bool) -> None:
    """Copy ``reader`` to ``writer`` through the link's bucket, counting each chunk once the socket took it.

    The writer's transport buffers nothing beyond the chunk being written (its high-water mark is 0, so
    ``drain`` returns once the socket took all of it): a chunk is counted whole after ``drain``, and a chunk
    in flight when its connection drops is counted by what the socket took of it (:func:`_cut` notes the
    rest before the transport discards it).
    """
    bucket = link.up if upward else link.down
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            await bucket.take(len(data))
            if writer.is_closing() or (link.cut and link.down_after_cut):
                break
            writer.write(data)
            at_once = len(data) - writer.transport.get_write_buffer_size()  # what the socket took straight away
            try:
                await writer.drain()  # after a cut it returns (or raises) with the chunk's rest discarded
            except (ConnectionError, OSError):
                unsent = link.unsent.pop(writer, None)
                # Dropped by the far side, the transport discarded the rest unnoted: count what is known to be sent.
                _count(link, upward, len(data) - unsent if unsent is not None else at_once)
                raise
            unsent = link.unsent.pop(writer, None)
            if unsent is not None:  # cut mid-chunk: the socket took only the chunk's start
                _count(link, upward, len(data) - unsent)
                break
            _count(link, upward, len(data))
            counted = link.bytes_up if upward else link.bytes_down
            if upward == link.cut_upward and link.cut_after and not link.cut and counted >= link.cut_after:
                _cut(link)
                break
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()  # pass the end of the stream on: HTTP clients wait for it
        except (OSError, RuntimeError):
            pass


def _cut(link: Link) -> None:
    link.cut = True
    for writer in list(link.writers):
        transport = writer.transport
        if transport is not None:
            link.unsent[writer] = transport.get_write_buffer_size()  # abort() discards it: never sent
            transport.abort()  # both sides see the connection drop mid-way
    if link.down_after_cut and link.server is not None:
        link.server.close()


async def _serve(link: Link, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    if link.cut and link.down_after_cut:
        client_writer.transport.abort()
        return
    link.connections += 1
    try:
        target_reader, target_writer = await _open(link.target)
    except OSError:
        client_writer.transport.abort()
        return
    for writer in (client_writer, target_writer):
        writer.transport.set_write_buffer_limits(high=0)  # drain() waits for the socket to take the whole chunk
    link.writers.update((client_writer, target_writer))
    try:
        await asyncio.gather(_pump(link, client_reader, target_writer, True),
                             _pump(link, target_reader, client_writer, False))
    finally:
        link.writers.difference_update((client_writer, target_writer))
        for writer in (client_writer, target_writer):
            link.unsent.pop(writer, None)
        for writer in (client_writer, target_writer):
            writer.close()


async def _listen(link: Link) -> asyncio.AbstractServer:
    kind, _, rest = link.listen.partition(":")

    def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> asyncio.Task[None]:
        return asyncio.ensure_future(_serve(link, reader, writer))

    if kind == "unix":
        Path(rest).unlink(missing_ok=True)
        # Owner-only from the start: the socket reaches a Docker engine (root's, in effect). Setting the umask is
        # safe here: this process has one thread, and the asyncio loop is not serving yet.
        previous = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(handler, path=rest)
        finally:
            os.umask(previous)
        os.chmod(rest, 0o600)
        return server
    host, _, port = rest.rpartition(":")
    return await asyncio.start_server(handler, host, int(port), reuse_address=True)


def _write_stats(path: Path | None, links: list[Link]) -> None:
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({link.name: link.stats() for link in links}, indent=1))
    os.replace(tmp, path)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--link", action="append", required=True, metavar="NAME:LISTEN=TARGET",
                        help="e.g. unit-1:unix:/tmp/u1/proxy.sock=unix:/tmp/u1/docker.sock (repeatable)")
    parser.add_argument("--rate", default="2mbit", help="per link and direction (2mbit, 500kbit, 0 = unlimited)")
    parser.add_argument("--cut-after", type=int, default=0, metavar="BYTES", help="drop the link's connections after this")
    parser.add_argument("--cut-link", default="", metavar="NAME", help="the link --cut-after applies to (default: all)")
    parser.add_argument("--cut-direction", choices=("up", "down"), default="up",
                        help="the bytes --cut-after counts: towards the target (up) or from it (down)")
    parser.add_argument("--down-after-cut", action="store_true", help="refuse connections after the cut")
    parser.add_argument("--stats", type=Path, default=None, help="JSON file of each link's byte counts")
    args = parser.parse_args(argv)
    rate = parse_rate(args.rate)
    links = []
    for spec in args.link:
        name, _, addresses = spec.partition(":")
        listen, sep, target = addresses.partition("=")
        if not name or not sep:
            parser.error(f"--link {spec!r}: expected NAME:LISTEN=TARGET")
        cut = args.cut_after if args.cut_link in ("", name) else 0
        links.append(Link(name=name, listen=listen, target=target, up=Bucket(rate), down=Bucket(rate), cut_after=cut,
                          cut_upward=args.cut_direction == "up", down_after_cut=args.down_after_cut))
    for link in links:
        link.server = await _listen(link)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    last = None
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.2)
        except asyncio.TimeoutError:
            pass
        now = [link.stats() for link in links]
        if now != last:
            _write_stats(args.stats, links)
            last = now
    _write_stats(args.stats, links)
    for link in links:
        if link.server is not None:
            link.server.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
