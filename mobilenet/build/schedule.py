"""Running build steps: export first, then the steps that read only its outputs, two at a time.

Every step but export reads nothing but export's FP32 model (variants.STEPS: `needs`), so once
export is done the others are independent. Steps run in waves: a wave holds the steps whose
needs ran in earlier waves. In a wave, a step that is up to date is checked and reported here,
in this process (cheap). When two or more steps are stale and MOBILENET_BUILD_JOBS allows,
they are built in child processes (`python -m mobilenet.build.schedule STEP OUTCOME`), at most that
many at once, the longest first: by what the step's variants took last time (the build_s of
their metas), else by the registry's estimate (Step.typical_s). Otherwise they are built here,
one after another, as before.

A child works under this process's build-folder lock (files.lock_handoff), reads the very
settings of this process (Settings.as_env), writes its step's log (build/logs/<step>.log) and
leaves the step's metas, or a one-line error, in an outcome file. Its console lines are shown
whole, each prefixed with its step. A child that dies without an outcome (a crash, out of
memory, killed) stops the run with one line naming the step and its log; what it left half-made
never counts as built, because a variant counts only once its meta is written, after its files.
A step that stops the run stops the other children too (SIGINT, as Ctrl-C would).
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path

from mobilenet import logs
from mobilenet.files import hold_build_lock, lock_handoff, read_json, write_json
from mobilenet.freshness import PACKAGE_ROOT
from mobilenet.registry import STEP_BY_NAME, STEPS, for_step
from mobilenet.settings import Settings

STOP_GRACE_S = 10  # a stopped child's time to remove its scratch folder before SIGKILL
CHILD_COMMAND = (sys.executable, "-m", "mobilenet.build.schedule")  # + STEP OUTCOME [--force]: main() below

log = logging.getLogger("mobilenet.build.schedule")


class StepError(RuntimeError):
    """A step run as a child process stopped the build: one line naming the step and its log."""


# ---------------------------------------------------------------- order

def with_needs(names: Iterable[str]) -> list[str]:
    """These steps and every step they need, in registry order."""
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in wanted:
            wanted.add(name)
            for need in STEP_BY_NAME[name].needs:
                add(need)

    for name in names:
        add(name)
    return [step.name for step in STEPS if step.name in wanted]


def waves(steps: list[str]) -> list[list[str]]:
    """The steps in rounds: a round holds the steps whose needs among `steps` are in earlier
    rounds (needs outside `steps` are the caller's: already run)."""
    asked, done, rounds = set(steps), set(), []
    left = list(dict.fromkeys(steps))
    while left:
        ready = [s for s in left if set(STEP_BY_NAME[s].needs) & asked <= done]
        if not ready:
            raise ValueError(f"build steps that need each other: {', '.join(left)}")
        rounds.append(ready)
        done.update(ready)
        left = [s for s in left if s not in done]
    return rounds


def expected_seconds(step: str, variant_ids: Iterable[str], models_dir: Path) -> float:
    """How long building these variants of the step should take: what each took last time
    (its meta's build_s), else its share of the registry's estimate for the step."""
    variants = for_step(step)
    share = STEP_BY_NAME[step].typical_s / max(1, len(variants))
    total = 0.0
    for variant in variants:
        if variant.id in variant_ids:
            try:
                total += float(read_json(variant.meta_path(models_dir))["build_s"])
            except (OSError, ValueError, KeyError, TypeError):
                total += share
    return total


def longest_first(stale: dict[str, Iterable[str]], models_dir: Path) -> list[str]:
    """Steps (with their stale variant ids) in the order to start them: the longest first, so
    that the short ones fill the gaps at the end; ties keep registry order."""
    return sorted(stale, key=lambda step: -expected_seconds(step, stale[step], models_dir))


# ---------------------------------------------------------------- running

def build_steps(steps: list[str], settings: Settings, force: bool = False) -> Iterator[tuple[str, list[dict]]]:
    """Run these build steps, each skipping what is up to date; yield (step, metas) as each ends.

    A step run here raises its own error (BuildError, BuildFolderBusy, ...); a step run as a
    child raises StepError. Either stops the run.
    """
    from mobilenet.build import staleness
    from mobilenet.build import step as build
    from mobilenet.build import target
    from mobilenet.data.store import prepare
    hold_build_lock(settings.build_dir)
    # What runs in this process builds for the settings' target as the children do (they read
    # MOBILENET_TARGET); set around each call, never across a yield, so the caller's code between
    # two steps sees its own target.
    building_for = target.settings_target(settings)

    def run_step(step: str, **options) -> list[dict]:
        with target.building_for(building_for):
            return build.run_step(step, settings, **options)

    for wave in waves(list(steps)):
        if len(wave) == 1 or settings.build_jobs == 1:
            for step in wave:
                yield step, run_step(step, force=force)
            continue
        data = prepare(settings)
        stale = {}
        for step in wave:
            with target.building_for(building_for):
                reasons = staleness.stale_variants(step, settings, force, data)
            if reasons:
                stale[step] = reasons
            else:  # it only says "up to date" (or "nothing selected") and reports its FAILED variants
                yield step, run_step(step, data=data, stale={})
        if len(stale) == 1:
            (step, reasons), = stale.items()
            yield step, run_step(step, force=force, data=data, stale=reasons)
        elif stale:
            yield from _run_children(longest_first(stale, settings.models_dir), settings, force)


def _run_children(steps: list[str], settings: Settings, force: bool) -> Iterator[tuple[str, list[dict]]]:
    logs.setup(settings.logs_dir, "schedule", settings.quiet)
    handoff, lock_fds = lock_handoff(settings.build_dir)
    env = {**os.environ, **settings.as_env(), **handoff}
    # Two builds share the cores. libgomp's threads spin while they wait for work, taking the
    # CPU the other build needs: INT8 calibration ran 3-7x slower. Waiting passively keeps each
    # build's thread count, and so its artifacts: one torch thread per build was as fast, but
    # calibration then settles on other ranges (other INT8 models, other agreement).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    jobs = settings.build_jobs
    log.info("building %s: %d at a time, longest first", ", ".join(steps), jobs)
    pending, running = list(steps), {}
    selector = selectors.DefaultSelector()
    previous_sigterm = _sigterm_exits()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                child = _Child(pending.pop(0), settings, force, env, lock_fds)
                running[child.step] = child
                selector.register(child.fd, selectors.EVENT_READ, child)
            for key, _ in selector.select():
                child = key.data
                if child.read():
                    continue
                selector.unregister(key.fd)
                del running[child.step]
                metas = child.outcome()
                log.info("%s: done in %.0f s", child.step, child.seconds)
                yield child.step, metas
    finally:
        for child in running.values():
            child.stop()
        selector.close()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _sigterm_exits():
    """While children run, `kill <pid>` of this process raises SystemExit, so that they are
    stopped too. Returns the handler to restore (None when not on the main thread)."""
    def exit_now(signum, frame):
        raise SystemExit(128 + signum)
    with contextlib.suppress(ValueError):
        return signal.signal(signal.SIGTERM, exit_now)
    return None


class _Child:
    """One step in a process of its own, in its own process group (stopped as a whole)."""

    def __init__(self, step: str, settings: Settings, force: bool, env: dict, lock_fds: tuple[int, ...]):
        self.step = step
        self.log_path = settings.logs_dir / f"{step}.log"
        fd, name = tempfile.mkstemp(prefix=f".{step}.", suffix=".outcome.json", dir=settings.build_dir)
        os.close(fd)
        self.outcome_path = Path(name)
        self.started = time.perf_counter()
        self.seconds = 0.0
        self.proc = subprocess.Popen(
            [*CHILD_COMMAND, step, str(self.outcome_path), *(["--force"] if force else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, pass_fds=lock_fds,
            cwd=PACKAGE_ROOT, start_new_session=True)
        self.fd = self.proc.stdout.fileno()
        self._partial = b""

    def read(self) -> bool:
        """Show the child's complete lines; False at the end of its output."""
        chunk = os.read(self.fd, 1 << 16)
        data = self._partial + chunk
        if chunk:
            *lines, self._partial = data.split(b"\n")
        else:
            lines, self._partial = [data], b""
        for line in lines:
            text = line.decode(errors="replace").rstrip()
            if text.strip():
                sys.stderr.write((text if text.startswith(f"{self.step}:") else f"{self.step}: {text}") + "\n")
        sys.stderr.flush()
        return bool(chunk)

    def outcome(self) -> list[dict]:
        """The step's metas, or StepError naming the step and its log."""
        code = self.proc.wait()
        self.seconds = time.perf_counter() - self.started
        self.proc.stdout.close()
        try:
            result = json.loads(self.outcome_path.read_text() or "null")
        except (OSError, ValueError):
            result = None
        finally:
            self.outcome_path.unlink(missing_ok=True)
        if isinstance(result, dict) and "error" in result:
            raise StepError(result["error"])
        if code == 0 and isinstance(result, dict) and "metas" in result:
            return result["metas"]
        if code < 0:
            with contextlib.suppress(ValueError):
                code = signal.Signals(-code).name
            how = f"was killed by {code}" + (" (out of memory?)" if code == "SIGKILL" else "")
        else:
            how = f"exited with code {code}"
        raise StepError(f"{self.step}: its build process {how} before it finished; its log is {self.log_path}. "
                        f"Nothing it left half-made counts as built: the next run builds the step again")

    def stop(self) -> None:
        """Interrupt the child and its workers (as Ctrl-C would), then kill them if they linger."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()
        self.outcome_path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the child

def main(argv: list[str]) -> int:
    """`python -m mobilenet.build.schedule STEP OUTCOME [--force]`: one build step in a process of its
    own, as build_steps starts it; {"metas": [...]} or {"error": "one line"} goes to OUTCOME."""
    from mobilenet.build.model import WeightsError
    from mobilenet.build.step import BuildError, run_step
    from mobilenet.files import BuildFolderBusy, io_errors
    step, outcome, force = argv[0], Path(argv[1]), "--force" in argv[2:]
    log_path = f"build/logs/{step}.log"
    try:
        settings = Settings()
        log_path = settings.logs_dir / f"{step}.log"
        with io_errors():
            result = {"metas": run_step(step, settings, force=force)}
    except KeyboardInterrupt:  # stopped by the parent: it says why
        return 130
    except (BuildError, BuildFolderBusy, WeightsError, ValueError) as exc:
        result = {"error": f"{step}: {exc} (log: {log_path})"}
    except Exception as exc:  # a bug: one line here, the traceback in the step's log
        with contextlib.suppress(OSError), open(log_path, "a") as fh:
            fh.write(traceback.format_exc())
        first = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300]
        result = {"error": f"{step}: {first} (traceback in {log_path})"}
    gc.collect()  # a failed check's leftovers warn (ResourceWarning) into the log now, not on the console at exit
    write_json(outcome, result)
    return 0 if "metas" in result else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
