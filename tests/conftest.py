"""Shared fixtures: paths to ../shared and a real HTTP server on 127.0.0.1 serving its photos."""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_float_from_qnnpack.pth"
SAMPLE_IMAGES = SHARED / "imagenet-sample" / "images"

# Tiers by what a test needs, so no test file keeps its own list: a test that takes one of these
# fixtures is marked for it. The quick tier is `pytest -m "not slow"`.
TIER_OF_FIXTURE = {
    "chain": ("slow",),  # the whole Invoke chain on the shared weights (every variant built)
    "tiny_env": ("slow",),  # runs `invoke` itself with the chain's tiny settings
    "sshd": ("sshd",),  # a real OpenSSH server on 127.0.0.1
    "arm64_host": ("arm64", "slow"),  # the emulated ARM64 host of .ci/arm64-host
    "aoti_fp32": ("slow",),  # an AOTInductor package compiled by g++ (about a minute each)
    "aoti_int8": ("slow",),
    "explained": ("slow",),  # invoke explain's jobs on a real build
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for marker in TIER_OF_FIXTURE.get(fixture, ()):
                item.add_marker(marker)


requires_shared = pytest.mark.skipif(not WEIGHTS.exists() or not SAMPLE_IMAGES.is_dir(),
                                     reason=f"needs {SHARED} (offline weights and sample photos)")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves SAMPLE_IMAGES; `server.behaviour[name]` makes a file misbehave on purpose."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        name = urllib.parse.unquote(self.path.lstrip("/"))
        self.server.requests.append(name)
        mode = self.server.behaviour.get(name, "ok")
        path = SAMPLE_IMAGES / name
        if mode == "500-once" and self.server.requests.count(name) == 1 or mode == "500":
            return self._send(500, b"oops")
        if mode == "slow":
            time.sleep(self.server.slow_s)
        if mode == "404" or not path.is_file():
            return self._send(404, b"not found")
        body = path.read_bytes()
        if mode == "wrong-bytes":
            body = (SAMPLE_IMAGES / "n01440764_tench.JPEG").read_bytes()
        elif mode == "truncated":
            body = body[: len(body) // 2]
        elif mode == "not-image":
            body = b"<html>a captive portal, not a photo</html>"
        self._send(200, body)

    def _send(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def image_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.behaviour, server.requests, server.slow_s = {}, [], 2.0
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


# ---- the invoke chain with tiny settings, built once per session and shared by the
# end-to-end tests and the per-runtime tests (conversions are the slow part).

def run_invoke(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1500)
    if check and result.returncode != 0:
        pytest.fail(f"invoke {' '.join(args)} exited {result.returncode}\n"
                    f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-6000:]}")
    return result


class _QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(SAMPLE_IMAGES), **kwargs)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def mirror_url():
    """A plain file server for the chain: its download step goes through real HTTP."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietFileHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory, mirror_url) -> dict:
    root = tmp_path_factory.mktemp("chain")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBILENET_")}
    env.update({
        "MOBILENET_BUILD_DIR": str(root / "build"), "MOBILENET_IMAGES_ROOT": str(root / "images"),
        "MOBILENET_MANIFEST": str(REPO / "calib_images" / "manifest.csv"),
        "MOBILENET_WEIGHTS": str(WEIGHTS), "MOBILENET_MIRROR": mirror_url,
        "MOBILENET_CALIB_COUNT": "8", "MOBILENET_EVAL_COUNT": "40",
        "MOBILENET_MIN_RUNS": "10", "MOBILENET_MIN_SECONDS": "0.2", "MOBILENET_WARMUP": "2",
        "MOBILENET_BURST": "5", "MOBILENET_SESSIONS": "2", "MOBILENET_QUIET": "1",
    })
    return env


@pytest.fixture(scope="session")
def chain(tiny_env) -> tuple[Path, subprocess.CompletedProcess]:
    """`invoke report` on an empty build folder runs the whole chain."""
    return Path(tiny_env["MOBILENET_BUILD_DIR"]), run_invoke(["report"], tiny_env)
