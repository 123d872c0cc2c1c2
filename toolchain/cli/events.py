"""``toolchain events``: watch the vehicle counts that roadside units publish to an MQTT broker."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from toolchain.cli.output import app, console, json_option, safe
from toolchain.errors import BadInputError, MissingEnvironmentError, QualityGateError, ToolchainError
from toolchain.publish.messages import KINDS


# Problems that retrying cannot fix: the credentials file, the CA or the broker's rules must change first.
_CONFIG_PROBLEMS = ("username/password", "does not trust", "TLS", "client id", "subscription")


class TailTimeoutError(QualityGateError):
    """``--timeout`` ran out before the messages waited for arrived (exit 3, as a gate not met)."""


@click.group()
def events() -> None:
    """Watch the counts roadside units publish (serve --publish mqtt://...)."""


@events.command()
@click.argument("url", metavar="URL")
@click.option("--credentials", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="TOOLCHAIN_CAMERA_CREDENTIALS",
              help="The units' credentials file (JSON, or TOML): its broker table (username, password, ca) logs in; "
                   "keeps the password off the command line (env TOOLCHAIN_CAMERA_CREDENTIALS, as for serve).")
@click.option("--unit", default="+", show_default=True, metavar="NAME", help="Only this unit's messages (+: every unit).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS),
              help="Only messages of this kind (repeatable; default: all).")
@click.option("--count", "max_count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Exit (0) after N messages.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Stop after this long: exit 0 if a message arrived (with --count: all N), else 3.")
@click.option("--no-dedupe", is_flag=True, help="Show every delivery, the duplicates QoS 1 may bring included.")
@click.option("--client-id", default=None, metavar="ID",
              help="Ask the broker for a persistent session under this id: it keeps what arrives while this tail is "
                   "away, for the next run with the same id (default: a random id, a clean session).")
@json_option
@click.pass_context
def tail(ctx: click.Context, url: str, credentials: Path | None, unit: str, kinds: tuple[str, ...],
         max_count: int | None, timeout_s: float | None, no_dedupe: bool, client_id: str | None) -> None:
    """Print the messages units publish to the broker at URL, one line each, as they arrive.

    \b
    URL is the units' publish URL: mqtt://HOST[:PORT]/PREFIX (port 1883) or mqtts://HOST[:PORT]/PREFIX
    (TLS, port 8883); messages come from PREFIX/UNIT/KIND. A line per message: time, unit, seq, kind,
    and for a crossing its camera/line, direction, class and score, for an interval its counts per
    class. With the global --json: one JSON object per line (JSON Lines), each message as received,
    flushed at once so it can be piped. A message delivered twice (QoS 1 after a lost acknowledgement)
    is shown once: units number their messages per unit (seq); --no-dedupe shows every delivery.
    Runs until Ctrl-C, --count or --timeout.

    \b
    Exit codes: 0 done (--count reached, Ctrl-C, or --timeout after at least one message); 3 --timeout
    before any message (or before N with --count); 4 login refused, TLS failed (CA not trusted, no
    TLS on that port) or subscription refused: fix the credentials file or the URL; 5 broker
    unreachable (not running, wrong port, no route, plain mqtt:// to a TLS port).
    """
    from toolchain.publish.config import parse_publish_url
    from toolchain.publish.tail import Deduplicator, tail as run_tail
    from toolchain.serve.credentials import load_broker_credentials

    config = parse_publish_url(url)
    topic_filter = config.topic_filter(unit)  # checks --unit before anything connects
    broker = load_broker_credentials(credentials)
    as_json = app(ctx).json
    where = config.display_url
    stop = threading.Event()
    dedupe = None if no_dedupe else Deduplicator()
    state: dict[str, Any] = {"shown": 0, "duplicates": 0, "filtered": 0, "ready": 0, "units": set(), "fatal": None,
                             "timed_out": False, "pipe_closed": False, "last_warning": ""}

    def on_ready() -> None:
        state["ready"] += 1
        state["last_warning"] = ""  # a later outage is reported again
        again = " again" if state["ready"] > 1 else ""
        console.print(f"subscribed{again} to {safe(topic_filter)} on {safe(where)}; waiting for messages "
                      "(Ctrl-C stops)", highlight=False)

    def on_error(problem: str) -> None:
        if state["ready"] == 0 or any(marker in problem for marker in _CONFIG_PROBLEMS):
            state["fatal"] = problem  # before the first subscription, or a problem a retry cannot fix: stop
            stop.set()
        elif problem != state["last_warning"]:
            state["last_warning"] = problem
            console.print(f"[yellow]warning:[/yellow] {safe(problem)}", highlight=False)

    def on_message(message: dict[str, Any]) -> None:
        if stop.is_set():
            return  # --count reached or stopping: paho may hand over a few more from the same read
        if dedupe is not None and dedupe.is_duplicate(str(message["unit"]), int(message["seq"])):
            state["duplicates"] += 1
            return
        if kinds and message.get("kind") not in kinds:
            state["filtered"] += 1
            return
        try:
            _show(message, as_json)
        except BrokenPipeError:  # `| head -n 3` closed the pipe: that is a normal end
            state["pipe_closed"] = True
            stop.set()
            return
        state["shown"] += 1
        state["units"].add(str(message["unit"]))
        if max_count is not None and state["shown"] >= max_count:
            stop.set()

    def time_up() -> None:
        state["timed_out"] = True
        stop.set()

    timer = threading.Timer(timeout_s, time_up) if timeout_s is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        with _stop_on_signals(stop), _tail_warnings_on_console():
            run_tail(config, credentials=broker, on_message=on_message, stop=stop, unit=unit, dedupe=False,
                     client_id=client_id, on_ready=on_ready, on_error=on_error)
    finally:
        if timer is not None:
            timer.cancel()
    if state["pipe_closed"]:
        _quiet_stdout()
        return
    if state["fatal"] is not None:
        raise _connection_error(state["fatal"], config.tls, subscribed=state["ready"] > 0)
    shown = state["shown"]
    summary = f"{shown} message{'s' if shown != 1 else ''} from {len(state['units'])} unit(s)"
    extras = [f"{state['duplicates']} duplicate(s) dropped"] if state["duplicates"] else []
    extras += [f"{state['filtered']} of other kinds skipped"] if state["filtered"] else []
    if extras:
        summary += f" ({', '.join(extras)})"
    if state["timed_out"] and (shown == 0 or (max_count is not None and shown < max_count)):
        wanted = f"{max_count} message(s)" if max_count is not None else "a message"
        hint = ("the broker did not accept the subscription in time: check it is reachable" if not state["ready"] else
                "is the unit publishing (serve --publish, its /healthz publish section), and are URL, --unit and "
                "--kind right?")
        raise TailTimeoutError(f"waited {timeout_s:g} s for {wanted} on {topic_filter} at {where}, got {shown}: {hint}")
    if not as_json:
        console.print(f"stopped: {summary}", highlight=False)


def _show(message: dict[str, Any], as_json: bool) -> None:
    from toolchain.redaction import scrub_data

    if as_json:
        sys.stdout.write(json.dumps(scrub_data(message), separators=(",", ":"), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        console.print(describe(message), highlight=False, soft_wrap=True)


def _clock(moment: Any, *, with_date: bool = True) -> str:
    try:
        moment = float(moment)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", time.localtime(moment))
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"
    return f"{stamp}.{int(moment * 1000) % 1000:03d}" if with_date else stamp


def describe(message: dict[str, Any]) -> str:
    """One line (rich markup, every value from the unit made safe) for a message: time, unit, seq, kind, body."""
    kind = str(message.get("kind", ""))
    head = (f"{_clock(message.get('time'))}  [bold]{safe(message.get('unit', '?'))}[/bold]  "
            f"#{safe(message.get('seq', '?'))}  {safe(kind)}")
    if kind == "crossing":
        score = message.get("score")
        score_text = f"{score:.2f}" if isinstance(score, (int, float)) and not isinstance(score, bool) else safe(score)
        return (f"{head}  {safe(message.get('camera', '-'))}/{safe(message.get('line', '-'))} "
                f"{safe(message.get('direction', '-'))}  [cyan]{safe(message.get('class', '?'))}[/cyan] {score_text}")
    if kind == "interval":
        totals: dict[str, int] = {}
        for row in message.get("counts") or []:
            if isinstance(row, dict) and isinstance(row.get("count"), int) and row["count"]:
                cls = str(row.get("class", "?"))
                totals[cls] = totals.get(cls, 0) + row["count"]
        span = f"{_clock(message.get('start'), with_date=False)}-{_clock(message.get('end'), with_date=False)}"
        counted = ", ".join(f"[cyan]{safe(cls)}[/cyan] {n}" for cls, n in sorted(totals.items())) or "no vehicles"
        return f"{head}  {span}  {counted}"
    body = {k: v for k, v in message.items() if k not in ("schema", "unit", "seq", "kind", "time")}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"{head}  {safe(text if len(text) <= 120 else text[:117] + '...')}"


def _connection_error(problem: str, tls: bool, *, subscribed: bool) -> ToolchainError:
    """The error to exit with for a connection problem ``tail`` reported (already scrubbed, names what to check)."""
    text = problem
    for tail_text in ("; retrying", "; reconnecting"):
        if text.endswith(tail_text):
            text = text[: -len(tail_text)]
    if any(marker in problem for marker in _CONFIG_PROBLEMS):
        return BadInputError(text)
    if "closed the connection" in text or (not subscribed and text.startswith("lost the connection")):
        text += (": is it an MQTT broker, and does the URL's scheme match its listener (mqtts:// for a TLS port, "
                 "mqtt:// for a plain one)?" if not tls else ": check the port is the broker's TLS listener")
    elif text.startswith("could not connect") or text.startswith("lost the connection"):
        text += ": check the broker is running and reachable from here"
    return MissingEnvironmentError(text)


class _ConsoleWarnings(logging.Handler):
    """The subscriber's own warnings (a message that is not ours, skipped) on the console; its connection problems
    (logged as ``"%s"``) are left out: they reach ``on_error``, which prints or raises them once."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING and record.msg != "%s":
            console.print(f"[yellow]warning:[/yellow] {safe(record.getMessage())}", highlight=False)


@contextmanager
def _tail_warnings_on_console() -> Iterator[None]:
    logger = logging.getLogger("toolchain.publish.tail")
    handler = _ConsoleWarnings()
    logger.addHandler(handler)  # also keeps logging's last-resort handler from printing each problem a second time
    try:
        yield
    finally:
        logger.removeHandler(handler)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set ``stop``: tail then disconnects cleanly within a tenth of a second."""
    previous: dict[int, Any] = {}

    def handle(_signum: int, _frame: Any) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[signum] = signal.signal(signum, handle)
            except (ValueError, OSError):
                pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush to a closed pipe raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
