"""``genkit serve``: the interactive sampler page for trained runs (needs the ``serve`` extra)."""

from __future__ import annotations

from pathlib import Path

import typer

from genkit.cli import console


def serve(
    run: list[Path] = typer.Option(..., "--run", "-r", help="Run folder written by `genkit train` (repeatable: "
                                                            "a picker chooses between them)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on: 127.0.0.1 is this machine only; "
                                                         "0.0.0.0 (or ::) every interface, with a warning."),
    port: int = typer.Option(7860, "--port", "-p", help="Port to listen on."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Open an interactive sampler page for trained runs: attributes, seed, temperature, grids.

    Runs offline (no analytics, CDN or share tunnel) and serves until Ctrl-C.
    """
    from genkit.runs import load_run
    from genkit.serve_app import RunPage, check_port, import_gradio, page_labels, serve as serve_pages
    from genkit.serve_guard import exposure_warning, is_loopback, listen_urls

    directories = [Path(d) for d in run]
    runs = [load_run(d, device=device) for d in directories]  # every folder checked before the server starts
    check_port(host, port)
    import_gradio()
    labels = page_labels(directories)
    public = not is_loopback(host)  # visitors from elsewhere see each run by its label, not by the server's path
    pages = [RunPage(r, label, run_path=label if public else None) for r, label in zip(runs, labels)]
    urls = listen_urls(host, port)
    warning = exposure_warning(host, port)

    def ready() -> None:
        if warning:
            console.err.print(warning, highlight=False, markup=False)
        console.err.print(f"serving {len(pages)} run(s) at {', '.join(urls)} (Ctrl-C stops)", highlight=False,
                          markup=False)
        console.out.print(urls[0], highlight=False)

    serve_pages(pages, host=host, port=port, on_ready=ready)
    console.err.print("stopped", highlight=False, markup=False)
