"""What tasks.py's tasks do, and the Executor that runs them (set in invoke.yaml).

The tasks declare their chain the Invoke way, with pre=[...]: download-images <- export <- the
other build steps (registry STEPS, Step.needs) <- build and bench; bench <- explain <- report.
Invoke runs a task's pre-tasks before its body, so ChainExecutor first checks every task of the
command line and every pre-task (their options against the settings schema, and the MOBILENET_*
variables the pre-tasks run with) and stops on the first bad value with one line, before
anything is downloaded or built.

Build steps run two at a time (mobilenet.build.schedule.build_steps) only when they are given to
build_steps together, so the executor also plans the invocation's build jobs before running any:
the first build-step task to run builds, in one build_steps call, every planned step that takes
the same settings and --force, and the later step tasks find theirs done (Invocation, one per
command line, handed to each task on its context).
"""
from __future__ import annotations

import atexit
import inspect
import math
import os
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple, NoReturn

import invoke
from invoke import Call, Context, Executor, Task

from mobilenet.registry import BUILD_STEPS, STEP_BY_NAME
from mobilenet.settings import BY_NAME, SettingError, Settings, written

_failures: list[str] = []


# ---------------------------------------------------------------- stopping

def fail(message: str) -> NoReturn:
    """Bad input or a broken environment: one line, and the chain stops now."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def fail_later(message: str) -> None:
    """A FAILED variant is a result too: say so now, let the chain finish (the report shows
    it), and exit 1 once everything asked for has run."""
    print(f"error: {message}", file=sys.stderr)
    if not _failures:
        atexit.register(_exit_failed)
    _failures.append(message)


def _exit_failed() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def settings_for(**options) -> Settings:
    """The MOBILENET_* settings with these task options applied, or the one-line error."""
    try:
        return Settings().with_options(**options)
    except SettingError as exc:
        fail(str(exc))


# ---------------------------------------------------------------- options outside the schema

def _results_folders(text: str) -> list[str]:
    folders = [p for p in str(text or "").split(",") if p]
    missing = [f for f in folders if not Path(f).is_dir()]
    if missing:
        raise ValueError(f"--results: no such results folder: {missing[0]}")
    return folders


def _mode(text: str) -> str:
    if text not in ("device", "chain"):
        raise ValueError(f"--mode: {text!r}; give device or chain")
    return text


def _photos(text) -> int:
    if not str(text).strip().isdigit() or int(text) < 1:
        raise ValueError(f"--photos={text!r}: expected a whole number >= 1, e.g. --photos 20")
    return int(text)


def _threshold(text) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"--threshold={text!r}: expected a percentage >= 0, e.g. 10")
    return value


# Task options that are no setting, by name: checked before anything runs, like the settings.
OPTION_CHECKS = {"results": _results_folders, "mode": _mode, "photos": _photos, "threshold": _threshold}


def checked(name: str, value):
    """A task option outside the schema, parsed, or the one-line error (None stays None)."""
    try:
        return None if value is None else OPTION_CHECKS[name](value)
    except ValueError as exc:
        fail(str(exc))


# ---------------------------------------------------------------- the invocation

class Job(NamedTuple):
    step: str
    force: bool
    settings: Settings


class Invocation:
    """One command line: the build jobs its tasks will run (planned before any runs), the jobs
    done, and the other work done once (the photos, per settings)."""

    def __init__(self) -> None:
        self.planned: list[Job] = []
        self.done: set[Job] = set()
        self.done_once: set = set()
        self.force_all = False

    def job(self, step: str, force: bool, settings: Settings) -> Job:
        # `invoke build --force` rebuilds every step: its pre-tasks (the steps, which Invoke calls
        # without options) are forced with it, or a stale step would be built twice.
        return Job(step, bool(force) or self.force_all, settings)

    def take(self, jobs: list[Job]) -> list[Job]:
        """The jobs to run now: these, unless done, and every planned job alike (the same force and
        settings) whose needs are done or come along, so that one build_steps call runs them
        all. They count as done from here."""
        todo = [job for job in dict.fromkeys(jobs) if job not in self.done]
        if not todo:
            return []
        alike = todo[0][1:]
        built = {job.step for job in self.done}
        for job in self.planned:
            if (job not in self.done and job not in todo and job[1:] == alike
                    and set(STEP_BY_NAME[job.step].needs) <= built | {t.step for t in todo}):
                todo.append(job)
        self.done.update(todo)
        return todo

    def first_time(self, key) -> bool:
        first = key not in self.done_once
        self.done_once.add(key)
        return first


class ChainContext(Context):
    """The context of a task run by ChainExecutor: it carries the command line's Invocation."""
    invocation: Invocation | None = None  # a real attribute, not a config key (invoke's DataProxy)

    def __init__(self, config, invocation: Invocation):
        super().__init__(config=config)
        self.invocation = invocation


def invocation_of(c) -> Invocation:
    """The command line's record; a task run without ChainExecutor gets one of its own (its
    steps are then built one task at a time)."""
    return c.invocation if isinstance(c, ChainContext) else Invocation()


def _explicit(call: Call) -> dict:
    """The call's options that differ from the task's defaults: the command line gives every
    option (defaults included) and a pre-task none, yet both are the same call."""
    defaults = {name: p.default for name, p in inspect.signature(call.task.body).parameters.items()}
    return {name: value for name, value in call.kwargs.items() if defaults.get(name, inspect.Parameter.empty) != value}


class _ChainCall(Call):
    """A call that hands its task the invocation's record, and equals a call of the same task with
    the same explicit options (Invoke's dedupe then runs export once in `invoke export bench`)."""

    def __init__(self, *args, invocation: Invocation | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.invocation = invocation

    def clone_data(self) -> dict:
        return {**super().clone_data(), "invocation": self.invocation}

    def __eq__(self, other) -> bool:
        return (isinstance(other, Call) and self.task == other.task and self.args == other.args
                and _explicit(self) == _explicit(other))

    def make_context(self, config) -> Context:
        return ChainContext(config, self.invocation)


class ChainExecutor(Executor):
    """Checks every call (command line and pre-tasks) and plans the build jobs, then runs the
    calls as Invoke does, each with the invocation's record on its context."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.invocation = Invocation()

    def execute(self, *tasks):
        self.plan(self.expand_calls(self.normalize(tasks)))
        return super().execute(*tasks)

    def normalize(self, tasks):
        return [self._wrap(call) for call in super().normalize(tasks)]

    def expand_calls(self, calls):
        return [self._wrap(call) for call in super().expand_calls(calls)]

    def _wrap(self, call: Call) -> Call:
        if isinstance(call, _ChainCall):
            return call
        return call.clone(into=_ChainCall, with_={"invocation": self.invocation})

    def plan(self, calls: list[Call]) -> None:
        """Check every call's options, and the settings of each that reads them (it takes a setting
        or has pre-tasks, which run with the MOBILENET_* variables); then note the build jobs."""
        run = self.invocation
        run.force_all = any(call.task.name == "build" and call.kwargs.get("force") for call in calls)
        for call in calls:
            for name, value in call.kwargs.items():
                if name in OPTION_CHECKS:
                    checked(name, value)
            schema = {name: value for name, value in call.kwargs.items() if name in BY_NAME}
            params = inspect.signature(call.task.body).parameters
            if not (call.task.pre or call.task.name in STEP_BY_NAME or any(name in BY_NAME for name in params)):
                continue  # compare and clean read no option of the schema and run nothing first
            settings = settings_for(**schema)
            if call.task.name in STEP_BY_NAME:
                job = run.job(call.task.name, call.kwargs.get("force", False), settings)
                if job not in run.planned:
                    run.planned.append(job)


def task(*args, **kwargs):
    """invoke.task, with the task's pre-tasks named at the end of its docstring, which
    `invoke --help TASK` shows."""
    made = invoke.task(*args, **kwargs)
    if isinstance(made, Task):
        return _name_pre_tasks(made)
    return lambda body: _name_pre_tasks(made(body))


def _name_pre_tasks(made: Task) -> Task:
    if made.pre:
        names = ", ".join(getattr(pre, "name", str(pre)).replace("_", "-") for pre in made.pre)
        runs_first = textwrap.fill(f"Runs first (pre-tasks, each skipping what is up to date): {names}.", 96,
                                   break_on_hyphens=False)
        made.__doc__ = f"{inspect.getdoc(made.body) or ''}\n\n{runs_first}"
    return made


# ---------------------------------------------------------------- the tasks' work

def download(c, settings: Settings | None = None, **options) -> None:
    """download-images, once per command line and settings."""
    from mobilenet import logs
    from mobilenet.data import images
    from mobilenet.files import BuildFolderBusy, hold_build_lock, io_errors
    settings = settings or settings_for(**options)
    if not invocation_of(c).first_time(("download-images", settings)):
        return
    try:
        with io_errors():
            hold_build_lock(settings.build_dir)
            log = logs.setup(settings.logs_dir, "download-images", settings.quiet)
            counts = images.download_images(settings)
    except (images.DownloadError, images.ManifestError, BuildFolderBusy, ValueError) as exc:
        fail(str(exc))
    log.info("download-images: %d downloaded, %d already verified", counts["downloaded"], counts["kept"])


def build(c, steps, force: bool = False, settings: Settings | None = None, **options) -> None:
    """These build steps, with every other planned step alike that can come along (Invocation.take)."""
    settings = settings or settings_for(**options)
    run = invocation_of(c)
    jobs = run.take([run.job(step, force, settings) for step in steps])
    if jobs:
        _build_steps([job.step for job in jobs], jobs[0].force, settings)


def _build_steps(steps: list[str], force: bool, settings: Settings) -> None:
    """Run these build steps (mobilenet/build/schedule.py: export first, then the others two at a time)."""
    from mobilenet.build.model import WeightsError
    from mobilenet.build.schedule import StepError, build_steps
    from mobilenet.build.step import BuildError
    from mobilenet.files import BuildFolderBusy, io_errors
    try:
        with io_errors():
            for step, metas in build_steps(steps, settings, force=force):
                failed = [m["variant"] for m in metas if m["status"] == "FAILED"]
                if failed:
                    fail_later(f"{step}: FAILED {', '.join(failed)} (reasons in build/logs/{step}.log and the report)")
    except (StepError, BuildError, BuildFolderBusy, WeightsError, ValueError) as exc:
        fail(str(exc))


def bench(force: bool, **options) -> None:
    from mobilenet.bench import step as bench_module
    from mobilenet.files import BuildFolderBusy, io_errors
    settings = settings_for(**options)
    try:
        with io_errors():
            results = bench_module.run(settings, force=force)
    except (bench_module.BenchError, BuildFolderBusy, ValueError) as exc:
        fail(str(exc))
    failed = [r.variant for r in results if r.status == "FAILED"]
    if failed:
        fail_later(f"bench: FAILED {', '.join(failed)} (see build/results and the report)")


def explain(force: bool) -> None:
    from mobilenet import explain as explain_module
    from mobilenet.files import BuildFolderBusy, io_errors
    settings = settings_for()
    try:
        with io_errors():
            explain_module.run(settings, force=force)
    except (BuildFolderBusy, ValueError) as exc:
        fail(str(exc))


def report(results: str | None) -> None:
    from mobilenet.explain import render_section
    from mobilenet.files import io_errors
    from mobilenet.report import markdown as report_module
    settings = settings_for()
    extra = checked("results", results) or []
    try:
        with io_errors():
            folders = report_module.result_folders(settings.build_dir, extra)
            out, failed = report_module.write(folders, settings.build_dir / "report.md",
                                              render_section(settings.build_dir))
    except ValueError as exc:
        fail(str(exc))
    print(f"report: {out}")
    if failed:
        fail_later(f"report: {len(failed)} FAILED row(s): {', '.join(failed)}")


def compare(old: str, new: str, threshold) -> None:
    from mobilenet.bench import compare as compare_module
    threshold = checked("threshold", threshold)
    try:
        comparison = compare_module.compare_folders(old, new, threshold)
    except ValueError as exc:
        fail(str(exc))
    print(compare_module.render(comparison))
    if comparison.regressions:
        worse = ", ".join(f"{r.variant}@{r.threads}t " + (f"{r.change_pct:+.1f} %" if hasattr(r, "change_pct")
                                                           else r.new_status) for r in comparison.regressions)
        fail(f"regressions (intervals apart and beyond {threshold:g} %, or no longer measured): {worse}")


def clean() -> None:
    import shutil
    settings = settings_for()
    shutil.rmtree(settings.build_dir, ignore_errors=True)
    print(f"removed {settings.build_dir}")


def remote_bench(c, hosts: str, mode: str, chain: dict, *, photos, device_install, tag, **connection) -> None:
    """remote-bench: device mode builds here first and ships the artifacts; chain mode runs the
    whole chain on each host."""
    checked("mode", mode)
    if mode == "device":
        _device_bench(c, hosts, chain, photos=photos, device_install=device_install, tag=tag, **connection)
        return
    if photos or device_install:
        fail("--photos and --device-install are device-mode options (--mode device)")
    from mobilenet.remote import chain as remote
    try:
        plan = remote.make_plan(hosts, chain, tag=tag, **connection)
        outcomes = remote.run_hosts(plan)
    except (ValueError, remote.RemoteError) as exc:
        fail(str(exc))
    _fail_hosts(outcomes)


def _device_bench(c, hosts, chain: dict, *, photos, device_install, tag, **connection) -> None:
    """Build here (the chain's options are this machine's build settings), then the hosts."""
    from mobilenet.files import io_errors
    from mobilenet.remote import device
    try:
        threads = written("threads", chain["threads"])  # passed on as written: 'all' is each host's cores
    except SettingError as exc:
        fail(str(exc))
    photos = checked("photos", photos)
    settings = settings_for(**{k: v for k, v in chain.items() if k != "threads"}, tag=tag)
    download(c, settings)
    build(c, BUILD_STEPS, False, settings)
    install = {name.strip() for name in (device_install or "").split(",") if name.strip()}
    try:
        with io_errors():
            outcomes = device.run_devices(hosts, settings, threads=threads, install=install, eval_count=photos,
                                          **{k: v for k, v in connection.items() if v is not None})
    except ValueError as exc:
        fail(str(exc))
    _fail_hosts(outcomes)
    bad = [f"{o.host}:{r.variant}@{r.threads}t" for o in outcomes for r in o.results if r.status == "FAILED"]
    if bad:
        fail_later(f"remote-bench: FAILED {', '.join(bad)} (see the report)")


def _fail_hosts(outcomes) -> None:
    failed = [o for o in outcomes if not o.ok]
    if failed:
        fail(f"{len(failed)} of {len(outcomes)} host(s) failed: {', '.join(o.host for o in failed)} (reasons above)")
