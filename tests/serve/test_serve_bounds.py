"""What a visitor of `genkit serve` may cost it (genkit/serve/guard.py), and where it can be reached.

Every request goes to 127.0.0.1 only, in bounded loops: the page served in this process by
uvicorn in a thread, or the Space layout of docs/serve.md started as `python app.py`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

import genkit
from conftest import interrupt
from genkit.cli.app import build_app as build_cli

pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed")

from genkit.serve import guard as serve_guard  # noqa: E402
from genkit.serve.app import build_app  # noqa: E402
from genkit.serve.page import RunPage, page_labels  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GRID = ["shape::circle", "any", "on", "any", "any", "any"]  # shape, color, then large, left, top, outline


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(pages):
    """The page's ASGI app served by uvicorn on 127.0.0.1 in a thread: ``(url, app)``."""
    import uvicorn

    app = build_app(pages)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           limit_concurrency=serve_guard.MAX_CONNECTIONS))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/", app
    finally:
        server.should_exit = True
        thread.join(30)


def _event(url: str, data: list, session: str, api_name: str = "run") -> dict:
    """One event as the browser sends it (queue/join, then its event stream): the completed message."""
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        dependencies = json.load(response)["dependencies"]
    index = next(d.get("id", i) for i, d in enumerate(dependencies) if d.get("api_name") == api_name)
    body = json.dumps({"data": data, "fn_index": index, "session_hash": session, "event_data": None}).encode()
    join = urllib.request.Request(url + "gradio_api/queue/join", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(join, timeout=60) as response:
        response.read()
    stream = url + "gradio_api/queue/data?" + urllib.parse.urlencode({"session_hash": session})
    with urllib.request.urlopen(stream, timeout=60) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_completed":
                return json.loads(line[5:])
    raise AssertionError("the event never completed")


def _status(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def page(tiny_run) -> RunPage:
    return RunPage(genkit.load_run(tiny_run, device="cpu"), "tiny")


# --- 2. sessions, bodies, logs and files -------------------------------------------------------------

def test_gradio_keeps_state_for_a_bounded_number_of_sessions(page, monkeypatch):
    monkeypatch.setattr(serve_guard, "SESSION_CAPACITY", 4)
    with serving([page]) as (url, app):
        for visitor in range(12):
            message = _event(url, [*GRID, 1, visitor, "off", 1.0], f"visitor-{visitor}")
            assert message["success"] and message["output"]["data"][0] == "", message
        sessions = app.blocks.state_holder.session_data
        assert len(sessions) <= 4 and "visitor-11" in sessions and "visitor-0" not in sessions
        # a visitor whose state was dropped keeps using the page: every event sends all its inputs
        assert _event(url, [*GRID, 2, 5, "off", 1.0], "visitor-0")["success"]


def test_large_bodies_are_refused_before_gradio_reads_them_and_the_server_keeps_serving(page):
    with serving([page]) as (url, _):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        declared = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        declared.putrequest("POST", "/gradio_api/queue/join")
        declared.putheader("Content-Type", "application/json")
        declared.putheader("Content-Length", str(20_000_000))  # declared, never sent
        declared.endheaders()
        response = declared.getresponse()
        assert response.status == 413 and b"at most 8 MiB" in response.read()
        declared.close()

        chunked = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        chunks = (b"x" * (1 << 20) for _ in range(9))  # 9 MiB without a Content-Length
        chunked.request("POST", "/gradio_api/queue/join", body=chunks, encode_chunked=True,
                        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        assert chunked.getresponse().status == 413
        chunked.close()
        assert _event(url, [*GRID, 1, 0, "off", 1.0], "after")["success"]


def test_a_huge_value_is_neither_echoed_nor_logged_and_a_refused_request_is_one_line(page, capfd):
    restore = serve_guard.quiet_gradio_tracebacks()
    try:
        with serving([page]) as (url, _):
            capfd.readouterr()
            huge = "x" * 1_000_000  # within the body bound: the page itself must refuse it
            message = _event(url, [huge, *GRID[1:], 1, 0, "off", 1.0], "huge")
            status = message["output"]["data"][0]
            assert "(1000000 characters) is not a value of" in status and len(json.dumps(message)) < 5000
            wrong = _event(url, [1, 2], "wrong")  # too few inputs: Gradio's own check refuses it
            assert not wrong["success"] and wrong["output"].get("error") is None
            seed = _event(url, [*GRID, 1, 10**23, "off", 1.0], "seed")["output"]["data"][0]
            assert "seed 100000000000000000000000 must be a whole number from 0 to" in seed
            err = capfd.readouterr().err
    finally:
        restore()
    assert "Traceback" not in err and "xxxxxxxxxx" not in err
    refused = [line for line in err.splitlines() if "genkit serve: refused a request" in line]
    assert len(refused) == 1 and refused[0].endswith("(ValueError)"), err


def test_no_route_writes_into_the_scratch_folder(page, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(scratch))
    with serving([page]) as (url, _):
        assert _event(url, [*GRID, 1, 0, "off", 1.0], "linked")["success"]
        assert _status(url + "gradio_api/deep_link?session_hash=linked") == 403
        assert _status(url + "gradio_api/upload", method="POST") == 403
    assert [p for p in scratch.rglob("*") if p.is_file()] == []


# --- 9. the page's temperature and seed boxes ---------------------------------------------------------

def test_whatever_the_temperature_and_seed_boxes_send_the_page_answers_with_a_view_or_one_message(page):
    import warnings

    answered = refused = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a huge temperature draws NaN pixels, shown as black
        for temperature in (1.0, 1e308, 1e-308, float("inf"), float("nan"), -1, "1e999", None, [], True):
            for seed in (0, 2**63 - 1, 2**63, -1, 1.5, 1e300, float("nan"), "7", None, [1]):
                try:
                    view = page.grid("large", 2, seed, "off", {"temperature": temperature})
                except genkit.UsageError as exc:
                    assert "\n" not in str(exc) and len(str(exc)) < 300
                    refused += 1
                else:
                    assert view.html.startswith('<div class="genkit-grid">')
                    answered += 1
    assert answered >= 4 and refused > 80


# --- beyond loopback: URLs, the warning, no server paths ----------------------------------------------

def _serve_cli(args, monkeypatch):
    """`genkit serve ARGS` up to the point where the server would start: (result, the pages it would serve)."""
    seen = {}

    def serve(pages, host, port, on_ready=None, **_):
        seen["pages"] = pages
        on_ready()
    monkeypatch.setattr("genkit.serve.app.serve", serve)
    return CliRunner().invoke(build_cli(), ["serve", *args]), seen.get("pages")


def test_binding_beyond_loopback_prints_every_url_and_a_warning_and_shows_no_server_path(tiny_run, monkeypatch):
    port = _free_port()
    result, pages = _serve_cli(["--run", str(tiny_run), "--host", "0.0.0.0", "--port", str(port)], monkeypatch)
    assert result.exit_code == 0, result.output
    err = " ".join(result.stderr.split())
    assert f"warning: --host 0.0.0.0 serves the page on every network interface: anyone who can reach port {port}" \
           in err and "there is no login" in err
    assert f"http://127.0.0.1:{port}/" in err
    for address in serve_guard.machine_addresses():
        assert f"http://{address}:{port}/" in err
    assert result.stdout.strip() == f"http://127.0.0.1:{port}/"
    view = pages[0].grid("large", 2, 0, "off")
    assert view.command.startswith(f"genkit sample --run {tiny_run.name} ") and str(tiny_run.parent) not in view.command
    local, pages = _serve_cli(["--run", str(tiny_run), "--port", str(_free_port())], monkeypatch)
    assert local.exit_code == 0 and "warning" not in local.stderr
    assert pages[0].grid("large", 2, 0, "off").command.startswith(f"genkit sample --run {tiny_run} ")


def test_ipv6_urls_are_bracketed_and_a_host_of_another_machine_is_refused(tiny_run, monkeypatch):
    assert serve_guard.listen_urls("::1", 8000) == ["http://[::1]:8000/"]
    assert serve_guard.listen_urls("::", 8000)[:2] == ["http://127.0.0.1:8000/", "http://[::1]:8000/"]
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            pass
        else:
            result, _ = _serve_cli(["--run", str(tiny_run), "--host", "::1", "--port", str(_free_port())], monkeypatch)
            assert result.exit_code == 0 and result.stdout.strip().startswith("http://[::1]:"), result.output
    result, _ = _serve_cli(["--run", str(tiny_run), "--host", "203.0.113.7", "--port", str(_free_port())], monkeypatch)
    assert result.exit_code == 2 and "--host 203.0.113.7 is not an address of this machine" in \
        " ".join(result.stderr.split())


def test_page_labels_never_show_more_of_a_path_than_tells_runs_apart(tmp_path):
    a, b = tmp_path / "x" / "a" / "run", tmp_path / "x" / "b" / "run"
    assert page_labels([a, b]) == ["a/run", "b/run"]
    assert page_labels([a, tmp_path / "other"]) == ["run", "other"]


# --- 3. the Space layout of docs/serve.md starts ------------------------------------------------------

def _space_from_docs(space: Path, run: Path) -> list[str]:
    """Build the Space repository docs/serve.md lays out, copying from ``run`` only the files it lists."""
    text = (ROOT / "docs" / "serve.md").read_text()
    section = text[text.index("## Publishing a run as a Hugging Face Space"):]
    layout = re.search(r"^```\n(.*?)^```", section, re.S | re.M).group(1)
    app = re.search(r"^```python\n(.*?)^```", section, re.S | re.M).group(1)
    files = []
    for line in layout.splitlines():
        name, _, rest = line.partition(" ")
        if name == "app.py":
            (space / "app.py").write_text(app)
        elif name == "requirements.txt":
            (space / name).write_text(rest.strip() + "\n")
        elif name.endswith("/"):
            (space / name).mkdir(parents=True)
            for listed in rest.split():
                shutil.copy(run / listed, space / name / listed)
                files.append(f"{name}{listed}")
    return files


@pytest.mark.slow
def test_the_space_layout_in_the_docs_starts_offline_and_serves_a_grid(tiny_run, tmp_path):
    space = tmp_path / "space"
    space.mkdir()
    copied = _space_from_docs(space, tiny_run)
    assert "runs/shapes/model.safetensors" in copied and not any("loss.safetensors" in f for f in copied)
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1", "no_proxy": "*"}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                if _status(url) == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "the Space's app.py did not start"
            time.sleep(0.5)
        message = _event(url, [*GRID, 4, 0, "data", 1.0], "space")
        assert message["success"] and 'src="data:image/png;base64,' in message["output"]["data"][2]
        assert _status(url + "gradio_api/file=/etc/passwd") == 403  # genkit's closed routes, on a Space too
    finally:
        code, err = interrupt(process)
    assert code == 0 and "Traceback" not in err, err
