"""``genkit serve``: the interactive sampler page for trained runs (needs the ``serve`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genkit.cli import console
from genkit.cli.sampling_flags import SAMPLE_OPT


def serve(
    ctx: typer.Context,
    run: list[Path] = typer.Option(..., "--run", "-r", help="Run folder written by `genkit train` (repeatable: "
                                                            "a picker chooses between them)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on: 127.0.0.1 is this machine only; "
                                                         "0.0.0.0 (or ::) every interface, with a warning."),
    port: int = typer.Option(7860, "--port", "-p", help="Port to listen on."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    sample_opt: Optional[list[str]] = SAMPLE_OPT,
) -> None:
    """Open an interactive sampler page for trained runs: attributes, seed, the model's sampling options, grids.

    The models' sampling options given as flags (--temperature, --guidance, ...) set the page's
    starting values. Runs offline (no analytics, CDN or share tunnel) and serves until Ctrl-C.
    """
    from genkit.cli.sampling_flags import given_options
    from genkit.sampling.run import load_run
    from genkit.serve.app import check_port, serve as serve_pages
    from genkit.serve.guard import exposure_warning, is_loopback, listen_urls
    from genkit.serve.layout import import_gradio
    from genkit.serve.page import RunPage, page_labels

    directories = [Path(d) for d in run]
    runs = [load_run(d, device=device) for d in directories]  # every folder checked before the server starts
    declared = {name: option for r in runs for name, option in r.sampling_options.items()}
    models = ", ".join(dict.fromkeys(r.config.model.name for r in runs))
    given = given_options(ctx.args, sample_opt, declared, models, "serve")
    labels = page_labels(directories)
    public = not is_loopback(host)  # visitors from elsewhere see each run by its label, not by the server's path
    pages = [RunPage(r, label, {k: v for k, v in given.items() if k in r.sampling_options},
                     run_path=label if public else None) for r, label in zip(runs, labels)]
    check_port(host, port)
    import_gradio()
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
