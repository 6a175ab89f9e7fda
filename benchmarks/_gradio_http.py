"""A minimal client of the sampler page's Gradio queue, with the standard library only.

One request is what the browser does for an event: ``POST /gradio_api/queue/join`` with the
inputs, a session hash and the event's index, then ``GET /gradio_api/queue/data`` (server-sent
events) until the event completes. Any session hash may be sent, which is how a benchmark or a
test plays 500 distinct visitors.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request


def config(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/config", timeout=30) as response:
        return json.load(response)


def fn_index(page_config: dict, api_name: str = "run") -> int:
    """The index of the first event whose API name is ``api_name`` (the page's grid view: ``run``)."""
    for index, dependency in enumerate(page_config["dependencies"]):
        if dependency.get("api_name") == api_name:
            return dependency.get("id", index)
    raise LookupError(f"no event named {api_name!r}")


def predict(url: str, data: list, index: int, session: str, timeout: float = 60) -> dict:
    """Run event ``index`` with ``data`` as session ``session``; the completed message (``success``, ``output``)."""
    base = url.rstrip("/") + "/gradio_api"
    body = json.dumps({"data": data, "fn_index": index, "session_hash": session, "event_data": None,
                       "trigger_id": None}).encode()
    join = urllib.request.Request(base + "/queue/join", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(join, timeout=timeout) as response:
        json.load(response)
    stream = base + "/queue/data?" + urllib.parse.urlencode({"session_hash": session})
    with urllib.request.urlopen(stream, timeout=timeout) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_completed":
                return message
    raise ConnectionError("the event stream ended before the event completed")


def post(url: str, path: str, body: bytes, headers: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
    """``POST url/path`` with a raw body: the status and the response body, errors included."""
    request = urllib.request.Request(url.rstrip("/") + path, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
