"""A real RTSP camera for tests and benchmarks: GStreamer's RTSP server serving video files, looping.

Runs with Debian's ``/usr/bin/python3`` (PyGObject and GstRtspServer are system packages, not in the venv):

    apt-get install -y gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base \\
        gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav

Usage:
    /usr/bin/python3 scripts/rtsp_server.py [--host 127.0.0.1] [--port 0] [--no-loop] [--exit-with-stdin]
        [--auth-file FILE] NAME=FILE.mp4 [NAME=FILE.mp4 ...] [--launch NAME='GST-LAUNCH ... ! rtpXpay name=pay0']

Each ``NAME=FILE`` (an MP4 holding H.264) is served as ``rtsp://HOST:PORT/NAME`` by a shared media
factory, ``filesrc ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96``, over RTP/TCP or RTP/UDP as
the client asks. Like a camera: every client of a path joins the same live stream (no seeking), sent
at the file's frame rate (the server's sinks are synchronised to its clock), and the file plays again
from its first frame when it ends, timestamps running on (``--no-loop``: the stream ends there). A
client joining waits for the next key frame, so files with a short GOP suit best. ``--launch
NAME=DESCRIPTION`` serves any gst-launch description instead (its payloader named ``pay0``), e.g. a
codec a client cannot decode. A path nothing is served on answers 404 Not Found.

``--auth-file FILE`` makes every path require HTTP Basic authentication, as a camera with a password
does: FILE's first line is ``USERNAME:PASSWORD`` (the password may hold ``:``). Without credentials, or
with wrong ones, a client gets 401 Unauthorized. The password is read from the file, so it never shows
in this process's arguments (``ps``).

Port 0 (the default) takes a free port. Once the server listens it prints one JSON line on stdout,
``{"ready": true, "port": PORT, "urls": {NAME: URL}}``, and flushes it; errors go to stderr with
exit status 2 (bad arguments), 5 (GStreamer missing) or 1 (cannot listen). SIGTERM or SIGINT stops
it cleanly (exit 0), and so does the end of stdin with ``--exit-with-stdin``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def _gst():  # type: ignore[no-untyped-def]
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        sys.stderr.write(f"rtsp_server: GStreamer's RTSP server is not available to {sys.executable} ({exc}); "
                         "install gir1.2-gst-rtsp-server-1.0 python3-gi and the gstreamer1.0-plugins-* packages, "
                         "and run it with Debian's /usr/bin/python3\n")
        raise SystemExit(5) from None
    return GLib, Gst, GstRtspServer


def file_pipeline(path: str) -> str:
    """The launch description that serves an MP4/QuickTime file holding H.264."""
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    return (f'( filesrc location="{location}" ! qtdemux ! h264parse name=parse config-interval=-1 '
            "! rtph264pay name=pay0 pt=96 )")


def _named(spec: str, what: str) -> tuple[str, str]:
    name, sep, value = spec.partition("=")
    if not sep or not name or not value or "/" in name:
        raise SystemExit(f"rtsp_server: {what} {spec!r} is not NAME=VALUE (NAME: one path segment)")
    return name, value


def read_auth(path: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    """``(username, password)`` from the first line of ``path`` (``USERNAME:PASSWORD``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            line = handle.readline().rstrip("\r\n")
    except OSError as exc:
        parser.error(f"cannot read --auth-file {path}: {exc.strerror or exc}")
    username, sep, password = line.partition(":")
    if not sep or not username or not password:
        parser.error(f"--auth-file {path}: the first line must be USERNAME:PASSWORD, both non-empty")
    return username, password


def require_basic_auth(server, factories, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    """Every media factory of ``server`` answers only a client that sends ``username``/``password`` (Basic)."""
    _, Gst, GstRtspServer = _gst()
    role = "camera-user"
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, role)
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(username, password), token)
    server.set_auth(auth)  # no default token: a client without valid credentials has no role, so 401
    permissions = Gst.Structure.new_empty(role)
    permissions.set_value(GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    permissions.set_value(GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    for factory in factories:
        factory.add_role_from_structure(permissions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve video files as RTSP cameras (GStreamer RTSP server).")
    parser.add_argument("files", nargs="*", metavar="NAME=FILE",
                        help="serve FILE (MP4, H.264) as rtsp://HOST:PORT/NAME")
    parser.add_argument("--launch", action="append", default=[], metavar="NAME=DESCRIPTION",
                        help="serve a gst-launch description whose payloader is named pay0")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: the loopback address)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one; printed on the ready line)")
    parser.add_argument("--no-loop", action="store_true", help="end each stream at the end of its file")
    parser.add_argument("--exit-with-stdin", action="store_true",
                        help="stop when stdin closes (a test runner that dies takes its servers with it)")
    parser.add_argument("--auth-file", default=None, metavar="FILE",
                        help="require HTTP Basic authentication with the USERNAME:PASSWORD on FILE's first line")
    args = parser.parse_args(argv)
    auth = read_auth(args.auth_file, parser) if args.auth_file else None
    streams: dict[str, str] = {}
    files: set[str] = set()  # the streams that loop
    for spec in args.files:
        name, path = _named(spec, "source")
        if not os.path.isfile(path):
            parser.error(f"{path} is not a file")
        streams[name] = file_pipeline(os.path.abspath(path))
        files.add(name)
    for spec in args.launch:
        name, description = _named(spec, "--launch")
        streams[name] = f"( {description} )"
        files.discard(name)
    if not streams:
        parser.error("nothing to serve: pass NAME=FILE or --launch NAME=DESCRIPTION")

    GLib, Gst, GstRtspServer = _gst()
    Gst.init(None)

    class LoopingMedia(GstRtspServer.RTSPMedia):
        """Plays its file again from the start at the end: a segment seek on each SEGMENT_DONE.

        A non-flushing segment seek keeps running time (hence RTP timestamps) going on across the loop, so
        clients see one continuous stream; a flushing one arms it when the media is prepared. qtdemux starts
        each loop's running time at the last frame's time, not at its end (two frames would share a
        timestamp, and the stream would run one frame per loop fast): an offset on the parser's output pad
        moves each new loop to where the previous one ended.
        """

        def do_prepared(self) -> None:  # the pipeline is PAUSED with its first frame: arm the loop
            # The parser's segment (as sent: its pad's offset applied), the offset added since, and the running
            # time where the last frame ends.
            self.segment, self.shift, self.end = None, 0, 0
            parsed = self.get_element().get_by_name("parse").get_static_pad("src")
            parsed.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_DOWNSTREAM, self._continue)
            self.get_element().seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT, 0)
            self._wait_for_segments()

        def _wait_for_segments(self, timeout_s: float = 5.0) -> None:
            """Return once every stream has its segment again after the flushing seek (at most ``timeout_s``).

            The flush drops each stream's segment until the new one has come down the pipeline; a client's PLAY
            in that window makes the server ask the stream for its rate (gst_rtsp_media_get_rates), find none and
            abort on a g_assert (seen in CI: the camera vanished on its first client, "Connection refused" from
            then on). This runs on the thread answering the first client's DESCRIBE, so that client's PLAY
            cannot come before the segments have.
            """
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                streams = [self.get_stream(i) for i in range(self.n_streams())]
                if all(stream.get_rates()[0] for stream in streams if stream.is_complete() and stream.is_sender()):
                    return
                time.sleep(0.005)
            sys.stderr.write(f"rtsp_server: the streams had no segment {timeout_s:g} s after the loop's seek\n")

        def _continue(self, pad, info):  # type: ignore[no-untyped-def]
            if info.type & Gst.PadProbeType.BUFFER:
                buffer = info.get_buffer()
                if self.segment is not None and buffer.pts != Gst.CLOCK_TIME_NONE:
                    duration = buffer.duration if buffer.duration != Gst.CLOCK_TIME_NONE else 0
                    end = self.segment.to_running_time(Gst.Format.TIME, buffer.pts) + self.shift + duration
                    self.end = max(self.end, end)
            elif info.get_event().type == Gst.EventType.FLUSH_STOP:
                self.segment, self.shift, self.end = None, 0, 0
                pad.set_offset(0)
            elif info.get_event().type == Gst.EventType.SEGMENT:
                self.segment, self.shift = info.get_event().parse_segment().copy(), 0
                start = self.segment.to_running_time(Gst.Format.TIME, self.segment.start)
                if self.end > start:  # a new loop starting before the last one ended
                    self.shift = self.end - start
                    pad.set_offset(pad.get_offset() + self.shift)  # the segment is sent again, shifted
            return Gst.PadProbeReturn.OK

        def do_handle_message(self, message) -> bool:  # type: ignore[no-untyped-def]
            if message.type == Gst.MessageType.SEGMENT_DONE:
                self.get_element().seek_simple(Gst.Format.TIME, Gst.SeekFlags.SEGMENT, 0)
                return True
            return GstRtspServer.RTSPMedia.do_handle_message(self, message)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    factories = []
    for name, description in streams.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factories.append(factory)
        factory.set_launch(description)
        factory.set_shared(True)
        # A camera is live: a client joins the running stream. Publishing the clock with its offset makes the
        # media unseekable, so a second client's PLAY (Range: npt=0-) does not flush-seek everyone's stream.
        factory.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
        if name in files and not args.no_loop:
            factory.set_media_gtype(LoopingMedia)
        mounts.add_factory(f"/{name}", factory)
    if auth is not None:
        require_basic_auth(server, factories, *auth)
    try:
        attached = server.attach(None)
    except GLib.Error as exc:
        attached, why = 0, exc.message
    else:
        why = "the address is in use or not this machine's"
    port = server.get_bound_port() if attached else -1
    if port <= 0:
        sys.stderr.write(f"rtsp_server: cannot listen on {args.host} port {args.port}: {why}\n")
        return 1
    host = f"[{args.host}]" if ":" in args.host else args.host
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, lambda *_: (loop.quit(), False)[1])
    if args.exit_with_stdin:
        def on_stdin(fd: int, _condition: object) -> bool:
            if os.read(fd, 4096):
                return True
            loop.quit()  # end of file: the parent is gone
            return False

        GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, sys.stdin.fileno(), GLib.IOCondition.IN | GLib.IOCondition.HUP,
                              on_stdin)
    print(json.dumps({"ready": True, "port": port, "urls": {n: f"rtsp://{host}:{port}/{n}" for n in streams}}),
          flush=True)
    loop.run()
    # Leave without the interpreter's teardown: finalising GStreamer objects while a client's media pipeline
    # still streams (a UDP session, say) can crash in libgstrtspserver (SIGSEGV at exit, seen in CI), which
    # would turn a clean stop into exit -11. Nothing is left to write: the loop has stopped serving.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
