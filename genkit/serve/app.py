"""``genkit serve``'s server: the page of :mod:`genkit.serve.layout` behind uvicorn, offline, bounded.

No analytics, no fonts or scripts from a CDN, no share tunnel; images travel inside the page as
data URLs, Gradio's file, upload and proxy routes are closed, so no request reads or writes a
file, and what one visitor can cost is bounded before Gradio reads the request
(:mod:`genkit.serve.guard`). :func:`serve_folders` is the same server for a Space's ``app.py``.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any, Sequence

from genkit.errors import GenkitError, UsageError
from genkit.serve.layout import build_page, demo_for, import_gradio, offline_theme
from genkit.serve.page import RunPage, page_labels

__all__ = ["CLOSED_ROUTES", "build_app", "check_port", "demo_for", "launch_options", "serve", "serve_folders"]

#: Gradio routes that read, write or fetch files or expose developer tools; the page needs none of them.
CLOSED_ROUTES = ("/file=", "/file/", "/upload", "/proxy=", "/stream/", "/run-history", "/vibe", "/dev/",
                 "/monitoring", "/process_recording", "/profiling", "/custom_component", "/login", "/logout",
                 "/deep_link")


def launch_options() -> dict[str, Any]:
    """``Blocks.launch`` keywords for the offline look: system fonts, no footer links, no SSR, no share link,
    and Gradio's per-session state capped as under ``genkit serve``."""
    from genkit.serve.guard import SESSION_CAPACITY

    gr = import_gradio()
    return {"theme": offline_theme(gr), "footer_links": [], "ssr_mode": False, "share": False,
            "state_session_capacity": SESSION_CAPACITY}


def serve_folders(directories: Sequence[str | Path], device: str = "auto", host: str | None = None,
                  port: int | None = None) -> None:
    """Serve the page for these run folders as ``genkit serve`` does (its bounds and closed routes), until Ctrl-C.

    For a Hugging Face Space's ``app.py``: the host and port default to ``GRADIO_SERVER_NAME`` and
    ``GRADIO_SERVER_PORT`` (which Spaces set), else 127.0.0.1:7860. A bad folder or a taken port
    is one line on stderr and exit code 2, as on the command line.
    """
    import sys

    from genkit.sampling.run import load_run

    host = host if host is not None else os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    try:
        port = port if port is not None else int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
        directories = [Path(d) for d in directories]
        runs = [load_run(d, device=device) for d in directories]
        check_port(host, port)
        import_gradio()
    except (GenkitError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code if isinstance(exc, GenkitError) else 2) from None
    pages = [RunPage(r, label) for r, label in zip(runs, page_labels(directories))]
    serve(pages, host=host, port=port,
          on_ready=lambda: print(f"serving {len(pages)} run(s) on {host}:{port} (Ctrl-C stops)", file=sys.stderr))


# --- the server -----------------------------------------------------------------------------

def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken (or a host that cannot be bound) before anything starts."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is outside 1-65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host!r} cannot be resolved ({exc.strerror}); use 127.0.0.1 or an address "
                         "of this machine") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(f"--host {host} is not an address of this machine; use 127.0.0.1 (this machine only), "
                                 "0.0.0.0 (every interface) or one of its own addresses") from None
            raise UsageError(f"port {port} on {host} is not free ({exc.strerror}); pass --port with a free port, "
                             "or stop the server using it") from None


def build_app(pages: Sequence[RunPage]):
    """The ASGI app: the Gradio page with its file, upload and proxy routes closed."""
    gr = import_gradio()
    import fastapi
    from fastapi.responses import PlainTextResponse

    from genkit.serve.guard import MAX_REQUEST_BYTES, SESSION_CAPACITY, BodyLimit

    app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def close_file_routes(request, call_next):
        path = request.url.path
        if any(part in path for part in CLOSED_ROUTES):
            return PlainTextResponse("not served: the genkit sampler reads and writes no files", status_code=403)
        return await call_next(request)

    demo = build_page(pages)
    demo.state_session_capacity = SESSION_CAPACITY  # read when mounted: the sessions whose state Gradio keeps
    mounted = gr.mount_gradio_app(app, demo, path="", footer_links=[], allowed_paths=[], ssr_mode=False,
                                  show_error=False, max_file_size=1, pwa=False, mcp_server=False,
                                  theme=offline_theme(gr), enable_monitoring=False)
    limited = BodyLimit(mounted, MAX_REQUEST_BYTES)  # outermost: a large body is refused before anything reads it
    limited.blocks = demo  # the Gradio Blocks it serves (its per-session state, for tests)
    return limited


def serve(pages: Sequence[RunPage], host: str = "127.0.0.1", port: int = 7860, on_ready=None,
          threads: int = 1) -> None:
    """Serve the page until Ctrl-C (which returns normally).

    Each request runs with ``threads`` intra-op threads (default 1): a page's request is small
    (at most 64 images), Gradio runs concurrent requests in their own threads, and torch's
    multi-threaded kernels stall on small tensors when other processes hold the cores (a
    16-image 64x64 grid measured 46 ms on one thread against 266 ms on two on a loaded 2-core
    machine; see benchmarks/serve.py).
    """
    import tempfile

    import torch

    from genkit.serve.guard import MAX_CONNECTIONS, quiet_gradio_tracebacks

    torch.set_num_threads(threads)

    with tempfile.TemporaryDirectory(prefix="genkit-serve-") as scratch:
        os.environ["GRADIO_TEMP_DIR"] = scratch  # gradio's own scratch space, private and removed on exit
        app = build_app(pages)
        quiet_gradio_tracebacks()
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                limit_concurrency=MAX_CONNECTIONS)
        server = uvicorn.Server(config)
        if on_ready is not None:
            original = server.startup

            async def startup(*args, **kwargs):
                await original(*args, **kwargs)
                if server.started:
                    on_ready()
            server.startup = startup
        try:
            server.run()
        except KeyboardInterrupt:
            pass
