"""`onlooker ui` as a person starts it: the URL it bound, a port in use, another host."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .catalogs import build

ONLOOKER = [sys.executable, "-m", "onlooker.cli.main"]
URL = re.compile(r"http://[^\s]+/")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("ui") / "proj", 5)


def first_line(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    """The first line the server prints on stdout, within `timeout` seconds."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=0.2):
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    raise AssertionError(f"no URL printed; stderr: {proc.stderr.read() if proc.poll() else ''}")


def serve(project: Path, *args: str) -> subprocess.Popen:
    # faulthandler: a server that hangs on Ctrl-C is made to print where (SIGABRT)
    return subprocess.Popen([*ONLOOKER, "-C", str(project), "ui", "--no-browser", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        raise AssertionError(
            f"Ctrl-C did not stop the server within 15 s; it was at:\n{err}") from None


def test_port_0_prints_the_url_it_bound_and_ctrl_c_stops_it(project):
    proc = serve(project, "--port", "0")
    try:
        line = first_line(proc)
        url = URL.search(line).group(0)
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
        with urllib.request.urlopen(url + "api/status", timeout=10) as res:
            assert json.loads(res.read())["runs"] == 5
    finally:
        code = stop(proc)
    assert code == 0, proc.stderr.read()


def test_a_port_in_use_is_one_sentence_and_exit_1(project):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([*ONLOOKER, "-C", str(project), "ui", "--no-browser", "--port",
                               str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"onlooker: port {port} on 127.0.0.1 is in use: give another"
                                   " with --port, or --port 0 for any free one")
    assert done.stdout == ""


def test_another_host_warns_that_the_catalog_is_readable(project):
    proc = serve(project, "--host", "0.0.0.0", "--port", "0")
    try:
        assert URL.search(first_line(proc)).group(0).startswith("http://0.0.0.0:")
    finally:
        stop(proc)
    err = proc.stderr.read()
    assert "warning: serving on 0.0.0.0" in err and "paths, commands, params" in err


def test_outside_a_project_is_one_sentence(tmp_path):
    done = subprocess.run([*ONLOOKER, "-C", str(tmp_path), "ui", "--no-browser", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "onlooker init" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_display_opens_the_browser_on_the_url_once_it_answers(project, tmp_path):
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    # the page must answer by the time the browser asks for it
    browser.write_text(f"#!/bin/sh\n{sys.executable} -c 'import sys, urllib.request; "
                       "urllib.request.urlopen(sys.argv[1] + \"api/status\", timeout=10)' \"$1\""
                       f" && printf '%s' \"$1\" > {opened}\n")
    browser.chmod(0o755)
    env = {**os.environ, "DISPLAY": ":99", "BROWSER": f"{browser} %s"}
    proc = subprocess.Popen([*ONLOOKER, "-C", str(project), "ui", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = URL.search(first_line(proc)).group(0)
        deadline = time.monotonic() + 30
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened.read_text() == url
    finally:
        stop(proc)
