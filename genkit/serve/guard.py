"""What one visitor of the sampler page may cost the server, bounded before Gradio sees the request.

``genkit serve`` puts the page on a network port, so anyone who reaches it can send anything.
These are the bounds, each a named constant so docs and tests can state them:

* **Request bodies** above :data:`MAX_REQUEST_BYTES` are refused with 413 by :class:`BodyLimit`,
  an ASGI middleware in front of everything else: Gradio never reads or parses them. A body with
  a ``Content-Length`` is judged by it (nothing is read); a chunked one is read up to the bound.
* **Sessions.** Gradio keeps, per session hash (which the client chooses), a copy of the page's
  component configuration holding that session's last inputs and outputs. The page needs none
  of it between events (every event sends all its inputs), so genkit lets Gradio keep only the
  :data:`SESSION_CAPACITY` most recently active sessions; an older one is dropped and, should its
  visitor come back, rebuilt from the page's defaults.
* **Connections** beyond :data:`MAX_CONNECTIONS` at once are answered 503 by the server (uvicorn's
  ``limit_concurrency``), which bounds the bodies and event streams in flight.
* **Sampling.** A model that declares its sampling cost (``sampling_cost``, docs/hooks.md) has each
  view's cost counted before anything is drawn (:meth:`genkit.Run.cost`): more than
  :data:`MAX_PASSES` network passes is refused in one line, as is a view one sample of which needs more
  than :data:`MAX_ROWS` rows in a network call; the view's network calls take at most :data:`MAX_ROWS`
  rows each (:meth:`genkit.Run.bounded`). A model without it keeps the page's own
  bounds (at most 64 samples a view, drawn 256 at a time).
* **Logs.** A refused request costs one short line on stderr (:func:`quiet_gradio_tracebacks`),
  never a traceback or the request's values; ``GENKIT_DEBUG=1`` shows Gradio's tracebacks again.

:func:`listen_urls` and :func:`exposure_warning` say where a server bound beyond the loopback
interface can be reached, and what that exposes.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
import time
import traceback
from typing import Any, Awaitable, Callable

#: the largest request body taken: generous for an image of a few MB uploaded through the page
MAX_REQUEST_BYTES = 8 * 1024 * 1024
#: sessions whose state Gradio keeps (least recently active dropped first)
SESSION_CAPACITY = 32
#: connections served at once; more are answered 503
MAX_CONNECTIONS = 256
#: network passes one view may take (a pass: one sample's row through the network once), for a model declaring its cost
MAX_PASSES = 16_384
#: rows one network call of a view may take
MAX_ROWS = 512
#: Gradio's modules that print a traceback for every request they refuse
GRADIO_MODULES_PRINTING_TRACEBACKS = ("gradio.queueing", "gradio.routes", "gradio.route_utils", "gradio.utils")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: a request body above ``limit`` bytes is answered 413 before the app sees it."""

    def __init__(self, app: Callable, limit: int = MAX_REQUEST_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _respond(send, 400, "Content-Length is not a number")
            elif int(declared) > self.limit:
                await _respond(send, 413, self.refusal())
            else:
                await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)
            return
        body, complete = await self._read_up_to_limit(receive)
        if not complete:
            await _respond(send, 413, self.refusal())
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_up_to_limit(self, receive: Receive) -> tuple[bytes, bool]:
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"", False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return b"", False
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts), True

    def refusal(self) -> str:
        return f"request body too large: the genkit sampler takes at most {self.limit // (1024 * 1024)} MiB per request"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then whatever the client sends next."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replayed


async def _respond(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class _OneLineTracebacks:
    """Stands in for the ``traceback`` module inside Gradio's request handling: ``print_exc`` writes
    one short line naming the error's type, not the traceback and the values it would repeat."""

    def __init__(self, stream=None):
        self._stream = stream
        self._last: BaseException | None = None  # Gradio reports one refusal at two levels: one line for both

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)

    def print_exc(self, *args: Any, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and exc is self._last:
            return
        self._last = exc
        stream = self._stream or sys.stderr
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        stream.write(f"{stamp} genkit serve: refused a request ({type(exc).__name__})\n")


def quiet_gradio_tracebacks(debug: bool | None = None) -> Callable[[], None]:
    """Make Gradio report a request it refuses (a bad value, a wrong number of inputs) in one line.

    Gradio prints a full traceback, with the offending values, for each such request: anyone who
    can reach the port could fill the log. With ``debug`` (default: ``GENKIT_DEBUG`` is set) the
    tracebacks stay. Returns a function that puts Gradio's own reporting back (for tests; the
    server keeps the quiet one).
    """
    if debug is None:
        debug = os.environ.get("GENKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    replaced = {}
    if not debug:
        shared = _OneLineTracebacks()  # one instance: a refusal Gradio reports twice is one line
        for name in GRADIO_MODULES_PRINTING_TRACEBACKS:
            module = sys.modules.get(name)
            if module is not None and getattr(module, "traceback", None) is traceback:
                replaced[module] = module.traceback
                module.traceback = shared

    def restore() -> None:
        for module, original in replaced.items():
            module.traceback = original
    return restore


# --- where the server can be reached -------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(address: str, port: int) -> str:
    return f"http://[{address}]:{port}/" if ":" in address else f"http://{address}:{port}/"


def listen_urls(host: str, port: int) -> list[str]:
    """The URLs a server bound to ``host`` answers at: one for a named address, and for a wildcard
    (``0.0.0.0``, ``::``, empty) the loopback one first, then one per address of this machine."""
    wildcard = host in ("", "0.0.0.0", "::")
    if not wildcard:
        return [_url(host, port)]
    addresses = ["127.0.0.1"] + [a for a in machine_addresses() if a != "127.0.0.1"]
    if host == "::":
        addresses.insert(1, "::1")
    return [_url(a, port) for a in addresses]


def machine_addresses() -> list[str]:
    """This machine's IPv4 addresses, one per interface (Linux), else those its host name resolves to."""
    found: list[str] = []
    try:
        import fcntl  # Unix only

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            for _, name in socket.if_nameindex():
                try:
                    request = struct.pack("256s", name.encode()[:15])
                    packed = fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
                except OSError:
                    continue
                found.append(socket.inet_ntoa(packed[20:24]))
    except (OSError, AttributeError, ImportError):
        pass
    if not found:
        try:
            found = [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
        except OSError:
            found = []
    return list(dict.fromkeys(a for a in found if not ipaddress.ip_address(a).is_loopback))


def exposure_warning(host: str, port: int) -> str | None:
    """The warning for a server reachable beyond this machine, or None on loopback."""
    if is_loopback(host):
        return None
    where = "every network interface" if host in ("", "0.0.0.0", "::") else host
    return (f"warning: --host {host or '0.0.0.0'} serves the page on {where}: anyone who can reach port {port} there "
            "can draw images from these runs (and read their settings); there is no login. Serve on 127.0.0.1 (the "
            "default) unless that is what you want")
