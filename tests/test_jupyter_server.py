"""A reader's path through JupyterLab, headless: ``scripts/lab.sh`` starts the server on a loopback
port (as root too), the notebook is opened through the server's contents API, a session starts
the project's kernel, and every code cell runs through the kernel's websocket, as JupyterLab runs
them when a reader presses "Run all", after the edit the README describes (the ``parameters`` cell
set to the smoke profile, papermill's injected cell below it deleted).

What it shows that nbval does not: the server the README's command starts finds the notebooks,
its kernel is the project's environment (not whatever ``python3`` a user's Jupyter knows), and a
notebook edited in place re-runs on another profile. It costs one smoke run of notebook 01.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


from processes import stop_group

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_datasets.ipynb"
TOKEN = uuid.uuid4().hex
START_TIMEOUT_S = 180
CELL_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The REST side of a running Jupyter server."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.port = port

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method,
                                         headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def wait_ready(self, proc: subprocess.Popen, log: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                self.call("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        raise AssertionError(f"the server did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _message(code: str, session: str) -> dict:
    """An execute_request of the Jupyter messaging protocol (v5), as JupyterLab sends it."""
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": session,
                       "username": "test", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}


def _run_cell(ws, code: str, session: str) -> tuple[str, list[dict]]:
    """Execute one cell; its reply status and its outputs (iopub messages that belong to it)."""
    request = _message(code, session)
    ws.send(json.dumps(request))
    outputs, status, idle = [], None, False
    deadline = time.monotonic() + CELL_TIMEOUT_S
    while (status is None or not idle) and time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
            continue
        kind = msg["header"]["msg_type"]
        if msg.get("channel") == "shell" and kind == "execute_reply":
            status = msg["content"]["status"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
        elif kind in ("stream", "display_data", "execute_result", "error"):
            outputs.append({"type": kind, **msg["content"]})
    assert status is not None, f"no reply within {CELL_TIMEOUT_S} s to:\n{code[:300]}"
    return status, outputs


def _text(outputs: list[dict]) -> str:
    parts = []
    for out in outputs:
        if out["type"] == "stream":
            parts.append(out["text"])
        elif out["type"] in ("display_data", "execute_result"):
            parts.append(out["data"].get("text/plain", ""))
        elif out["type"] == "error":
            parts.append("\n".join(out["traceback"]))
    return "".join(parts)


def test_lab_script_serves_the_notebooks_and_a_reader_reruns_one_on_the_smoke_profile(tmp_path):
    import websocket

    port = _free_port()
    env = {**os.environ, "GENLINEAGE_DATA": str(tmp_path / "data"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_DATA_DIR": str(tmp_path / "jupyter_data"),
           "MPLBACKEND": "Agg"}
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(REPO / "scripts" / "lab.sh"), "--no-browser", f"--port={port}",
                                 "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
                                 "--ServerApp.port_retries=0"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(port)
    try:
        server.wait_ready(proc, log)
        listing = server.call("GET", "/api/contents/")
        assert sorted(item["name"] for item in listing["content"] if item["type"] == "notebook") == \
            sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb")), "the server's root is notebooks/"
        notebook = server.call("GET", f"/api/contents/{NOTEBOOK}?content=1")["content"]
        session = server.call("POST", "/api/sessions", {"path": NOTEBOOK, "type": "notebook", "name": NOTEBOOK,
                                                        "kernel": {"name": notebook["metadata"]["kernelspec"]["name"]}})
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{session['kernel']['id']}/channels",
                                         header=[f"Authorization: token {TOKEN}"], timeout=CELL_TIMEOUT_S)
        try:
            status, outputs = _run_cell(ws, "import sys; print(sys.prefix)", "reader")
            assert status == "ok" and Path(_text(outputs).strip()).resolve() == (REPO / ".venv").resolve(), \
                "the kernel is the project's environment"
            texts = []
            for cell in notebook["cells"]:
                tags = cell.get("metadata", {}).get("tags", [])
                if cell["cell_type"] != "code" or "injected-parameters" in tags:
                    continue  # the README: delete papermill's injected cell, edit the parameters cell
                code = 'profile = "smoke"' if "parameters" in tags else cell["source"]
                status, outputs = _run_cell(ws, code, "reader")
                assert status == "ok", _text(outputs)[-3000:]
                texts.append(_text(outputs))
        finally:
            ws.close()
        server.call("DELETE", f"/api/sessions/{session['id']}")
        printed = "\n".join(texts)
        assert "roles disjoint by id: True" in printed and "images shared between roles: 0" in printed
        assert (tmp_path / "data" / "smoke" / "datasets").is_dir(), "the notebook wrote the smoke datasets"
    finally:
        stop_group(proc, timeout=30)
