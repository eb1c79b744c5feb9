"""Downloads against servers that misbehave: each file's failure stays its own, a dropped
transfer is retried, a trickle hits the file's deadline, non-http URLs are refused up front,
and an interrupted run's leftovers are cleaned up.

The conftest `image_server` covers status codes and bad bytes; the modes here need control
of the socket mid-body, so this file runs its own small server on 127.0.0.1.
"""
from __future__ import annotations

import dataclasses
import http.server
import re
import subprocess
import sys
import threading
import time
import types
import urllib.parse
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_IMAGES, requires_shared

from mobilenet.data import images
from mobilenet.files import sha256_file

pytestmark = requires_shared
FAST = dict(timeout=(1.0, 0.5), retries=2, backoff_s=0.01, progress=False)


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    """Serves SAMPLE_IMAGES; `server.behaviour[name]` picks how a file misbehaves."""
    protocol_version = "HTTP/1.1"  # chunked bodies need it

    def do_GET(self):  # noqa: N802 (http.server's naming)
        name = urllib.parse.unquote(self.path.lstrip("/"))
        self.server.requests.append(name)
        mode = self.server.behaviour.get(name, "ok")
        attempt = self.server.requests.count(name)
        body = (SAMPLE_IMAGES / name).read_bytes() if (SAMPLE_IMAGES / name).is_file() else b""
        self.close_connection = True
        if mode.startswith("redirect:"):
            self.send_response(302)
            self.send_header("Location", mode.split(":", 1)[1].replace("SELF", self.path))
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
        elif mode == "bad-gzip":
            self._headers(len(body), {"Content-Encoding": "gzip"})
            self.wfile.write(body)  # a JPEG, not gzip: the client's decoder fails
        elif mode in ("drop-once", "drop-always") and (attempt == 1 or mode == "drop-always"):
            self._headers(len(body))
            self.wfile.write(body[: len(body) // 2])  # then the connection closes mid-file
        elif mode == "drop-chunked":
            self._headers(None, {"Transfer-Encoding": "chunked"})
            half = body[: len(body) // 2]
            self.wfile.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")  # no final chunk
        elif mode == "trickle":
            self._headers(len(body))
            try:
                for byte in body[:200]:  # a byte at a time, each well within the read timeout
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass  # the client gave up, as it should
        else:
            self._headers(len(body))
            self.wfile.write(body)

    def _headers(self, length: int | None, extra: dict | None = None):
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")  # one request per connection, like close_connection
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileHandler)
    server.behaviour, server.requests = {}, []
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def _row(name: str, **changes) -> images.ManifestRow:
    path = SAMPLE_IMAGES / name
    row = images.ManifestRow(name, 0, "x", "eval", path.stat().st_size, sha256_file(path),
                             f"https://example.invalid/{name}")
    return dataclasses.replace(row, **changes)


def _names(count: int) -> list[str]:
    return sorted(p.name for p in SAMPLE_IMAGES.glob("*.JPEG"))[:count]


@pytest.mark.parametrize("mode, reason", [
    ("redirect:ftp://127.0.0.1/x.jpg", "InvalidSchema"),  # requests has no adapter for it
    ("redirect:SELF", "TooManyRedirects"),
    ("bad-gzip", "ContentDecodingError|DecodeError"),
    ("folder-in-the-way", "cannot write .*Is a directory"),  # an OSError on this machine's disk
])
def test_one_file_failing_any_way_does_not_stop_the_others(hostile_server, tmp_path, mode, reason):
    bad, good = _names(2)
    if mode == "folder-in-the-way":
        (tmp_path / bad).mkdir()
    else:
        hostile_server.behaviour[bad] = mode
    with pytest.raises(images.DownloadError) as err:
        images.download([_row(bad), _row(good)], tmp_path, hostile_server.url, **FAST)
    [(url, message)] = err.value.failures
    assert url == f"{hostile_server.url}/{bad}"
    assert re.search(reason, message), message
    assert sha256_file(tmp_path / good) == _row(good).sha256, "the next file was still fetched"


def test_connection_dropped_mid_file_is_retried(hostile_server, tmp_path):
    (name,) = _names(1)
    hostile_server.behaviour[name] = "drop-once"
    assert images.download([_row(name)], tmp_path, hostile_server.url, **FAST) == {"downloaded": 1, "kept": 0}
    assert hostile_server.requests.count(name) == 2
    assert sha256_file(tmp_path / name) == _row(name).sha256


@pytest.mark.parametrize("mode", ["drop-always", "drop-chunked"])
def test_connection_always_dropped_gives_up_after_the_retries(hostile_server, tmp_path, mode):
    good, name = _names(2)
    hostile_server.behaviour[name] = mode
    with pytest.raises(images.DownloadError, match=r"transfer interrupted.*after 3 attempts"):
        images.download([_row(name), _row(good)], tmp_path, hostile_server.url, **FAST)
    assert hostile_server.requests.count(name) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [good], "no partial file is left"


def test_a_trickling_server_hits_the_file_deadline(hostile_server, tmp_path):
    """A byte every 50 ms never trips the 0.5 s read timeout; the 0.3 s deadline stops it."""
    name, good = _names(2)
    hostile_server.behaviour[name] = "trickle"
    with pytest.raises(images.DownloadError, match=r"not finished within the 0.3 s allowed per file") as err:
        images.download([_row(name), _row(good)], tmp_path, hostile_server.url, deadline_s=0.3, **FAST)
    assert [url for url, _ in err.value.failures] == [f"{hostile_server.url}/{name}"]
    assert hostile_server.requests.count(name) == 1, "a deadline is not retried"
    assert sorted(p.name for p in tmp_path.iterdir()) == [good]


@pytest.mark.parametrize("mirror", ["file:///etc", "", "127.0.0.1:8000", "ftp://127.0.0.1/", "http://",
                                    "http://127.0.0.1:port/"])
def test_a_mirror_that_is_not_http_is_refused_before_fetching(hostile_server, tmp_path, mirror):
    settings = types.SimpleNamespace(
        local_images=None, manifest=REPO / "calib_images" / "manifest.csv",
        images_dir=tmp_path / "images", mirror=mirror, calib_count=2, eval_count=2, quiet=True)
    with pytest.raises(images.ManifestError, match=r"mirror URL .* is not an http\(s\) URL: give it as http://"):
        images.download_images(settings)
    with pytest.raises(images.ManifestError, match=r"is not an http\(s\) URL"):
        images.download([_row(n) for n in _names(2)], tmp_path / "direct", mirror, **FAST)
    assert hostile_server.requests == []
    assert not (tmp_path / "images").exists() and not (tmp_path / "direct").exists()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "", "example.com/a.jpg", "gopher://example.com/a"])
def test_a_manifest_url_that_is_not_http_is_refused_with_its_line(tmp_path, url):
    manifest = tmp_path / "m.csv"
    manifest.write_text("filename,label,category,split,bytes,sha256,url\n"
                        "a.jpg,1,c,eval,1,,http://127.0.0.1/a.jpg\n"
                        f"b.jpg,1,c,eval,1,,{url}\n")
    with pytest.raises(images.ManifestError, match=r"m\.csv:3: url .* is not an http\(s\) URL"):
        images.read_manifest(manifest)


def _killed_mid_write(target: Path) -> None:
    """A process killed while writing `target` through atomic_path: its cleanup never runs."""
    script = ("import os, sys; from pathlib import Path; from mobilenet.files import atomic_path\n"
              "writing = atomic_path(Path(sys.argv[1])); writing.__enter__().write_bytes(b'half a photo')\n"
              "os.kill(os.getpid(), 9)")
    killed = subprocess.run([sys.executable, "-c", script, str(target)], cwd=REPO)
    assert killed.returncode == -9


def test_leftover_part_files_of_a_killed_run_are_removed(hostile_server, tmp_path):
    kept, fetched = _names(2)
    (tmp_path / kept).write_bytes((SAMPLE_IMAGES / kept).read_bytes())
    for name in (kept, fetched):
        _killed_mid_write(tmp_path / name)
    assert len(list(tmp_path.iterdir())) == 3, "the killed runs left their partial files"
    counts = images.download([_row(kept), _row(fetched)], tmp_path, hostile_server.url, **FAST)
    assert counts == {"downloaded": 1, "kept": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept, fetched]


def test_a_local_folder_ignores_dotfiles(tmp_path):
    for name in _names(3):
        (tmp_path / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    (tmp_path / "._n01440764_tench.JPEG").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (tmp_path / ".n01440764_tench.ab12cd34.part.JPEG").write_bytes(b"half a photo")
    settings = types.SimpleNamespace(local_images=str(tmp_path), local_labels=None, calib_count=1,
                                     eval_count=10, quiet=True)
    chosen = images.image_set(settings)
    assert sorted(p.name for p in chosen.files()) == _names(3)
    assert images.download_images(settings) == {"downloaded": 0, "kept": 3}
