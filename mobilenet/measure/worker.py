"""One variant in its own process, driven over a JSON-lines pipe.

The coordinator (bench.py, or build.py for its checks) starts `python -m mobilenet.measure.worker`,
sends an init message, and then asks for bursts of timed calls. Stdout is the protocol
channel only: anything a runtime prints goes to the worker's log file.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class WorkerError(RuntimeError):
    pass


class WorkerSkipped(RuntimeError):
    """The variant's runtime is unavailable in the worker."""


class WorkerProcess:
    """Coordinator-side handle of one worker."""

    def __init__(self, variant, artifact: Path, threads: int, eval_npy: Path, logits_out: Path | None,
                 warmup: int, log_path: Path, hold_load: bool = False):
        """Start the worker and send it the variant, without waiting: the caller collects the
        ready reply with wait_ready(), so several workers can load at the same time.

        hold_load: the worker imports its runtime, says so (wait_imported), and loads only when
        told (load). Imports then run side by side, and each timed load alone."""
        env = dict(os.environ)
        env.update({name: str(threads) for name in THREAD_ENV_VARS})
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env["PYTHONWARNINGS"] = "ignore::DeprecationWarning,ignore::FutureWarning"
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        self.variant = variant
        self.log_path = Path(log_path)
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mobilenet.measure.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, env=env, text=True, bufsize=1, cwd=Path(__file__).resolve().parents[2])
        self.ready: dict = {}
        self._send(runtime=variant.runtime, options=variant.runner, artifact=str(artifact),
                   threads=threads, eval_npy=str(eval_npy), warmup=warmup,
                   logits_out=None if logits_out is None else str(logits_out), hold_load=hold_load)

    def wait_ready(self) -> dict:
        self.ready = self._receive()
        return self.ready

    def wait_imported(self) -> dict:
        return self._receive()

    def load(self) -> dict:
        """Tell a hold_load worker to load; returns its ready reply."""
        self._send(cmd="load")
        return self.wait_ready()

    def _send(self, **message) -> None:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died; _receive reports how

    def _receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            raise WorkerError(f"{self.variant.id} worker exited with code {self.proc.returncode}; "
                              f"last log lines:\n{self.log_tail()}")
        reply = json.loads(line)
        if reply.get("skipped"):
            raise WorkerSkipped(reply["skipped"])
        if reply.get("error"):
            raise WorkerError(f"{self.variant.id}: {reply['error']}")
        return reply

    def request(self, **message) -> dict:
        self._send(**message)
        return self._receive()

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def burst(self, count: int) -> dict:
        return self.request(cmd="burst", count=count)

    def finish(self) -> dict:
        reply = self.request(cmd="finish")
        self.close()
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # end of input: the worker's loop ends and it exits
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if not stream.closed:
                stream.close()
        self._log.close()


# ---------------------------------------------------------------- worker side

def _peak_rss_mb() -> float:
    """Peak RSS of this process image. VmHWM, not getrusage's ru_maxrss: Linux carries
    ru_maxrss over from the forking parent (the coordinator, with torch loaded) across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; a fork's upper bound


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def serve(inp, out) -> None:
    from mobilenet.logs import quiet_deprecations
    from mobilenet.measure.npyimages import NpyImages
    from mobilenet.measure.runners import RuntimeUnavailable, make_runner
    from mobilenet.measure.timing import time_calls

    def reply(**message):
        out.write(json.dumps(message) + "\n")
        out.flush()

    quiet_deprecations()
    init = json.loads(inp.readline())
    images = NpyImages(Path(init["eval_npy"]))
    try:
        runner = make_runner(init["runtime"], init["threads"], init.get("options"))
        if init.get("hold_load"):
            reply(imported=True)
            if json.loads(inp.readline() or "{}").get("cmd") != "load":
                return  # the coordinator went away or changed its mind
        start = time.perf_counter()
        runner.load(Path(init["artifact"]))
        load_ms = (time.perf_counter() - start) * 1000
        timing_image = images[0]
        start = time.perf_counter()
        runner.run(timing_image)
        first_ms = (time.perf_counter() - start) * 1000
        if init.get("logits_out"):  # scoring is asked for by build checks and device runs only
            logits = np.concatenate([np.asarray(runner.run(image), dtype=np.float32).reshape(1, -1)
                                     for image in images])
            Path(init["logits_out"]).parent.mkdir(parents=True, exist_ok=True)
            np.save(init["logits_out"], logits)
        time_calls(runner.run, timing_image, init["warmup"])
        reply(ok=True, load_ms=load_ms, first_inference_ms=first_ms, size_bytes=runner.size_bytes(),
              threads_effective=runner.threads_effective, versions=runner.versions(), package=runner.package,
              cpu_affinity=sorted(os.sched_getaffinity(0)))
    except RuntimeUnavailable as exc:
        reply(skipped=str(exc))
        return
    except Exception as exc:
        traceback.print_exc()
        reply(error=f"{exc.__class__.__name__}: {exc}")
        return

    timed_cpu_s = timed_wall_s = 0.0
    for line in inp:
        command = json.loads(line)
        if command["cmd"] == "burst":
            cpu_before, wall_before = _cpu_s(), time.perf_counter()
            samples = time_calls(runner.run, timing_image, command["count"])
            timed_cpu_s += _cpu_s() - cpu_before
            timed_wall_s += time.perf_counter() - wall_before
            reply(samples_ms=samples)
        elif command["cmd"] == "finish":
            reply(peak_rss_mb=_peak_rss_mb(), cpu_time_s=timed_cpu_s,
                  cpu_util_pct=100 * timed_cpu_s / timed_wall_s if timed_wall_s else None)
            # Nothing is left to write, and tearing down a runtime (torch, ExecuTorch, OpenVINO)
            # took about a second per worker: 16 s of every session, spent waiting.
            sys.stderr.flush()
            os._exit(0)


def main() -> None:
    # Keep the protocol on a private copy of stdout; whatever a runtime prints lands in stderr (the log).
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin, protocol_out)


if __name__ == "__main__":
    main()
