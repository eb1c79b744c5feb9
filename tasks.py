"""Invoke tasks: the benchmark chain. Each task is a thin call into the mobilenet package.

Chain-wide settings come from MOBILENET_* environment variables (see README); options
given to a task apply to that task. Every step skips work whose outputs are up to date.
The build steps are made from the registry (mobilenet.registry.STEPS): adding a runtime
adds a step there, not a task here.
"""
import atexit
import os
import sys

from invoke import task

from mobilenet.registry import STEP_BY_NAME, STEPS
from mobilenet.settings import SettingError, Settings, task_help

_failures: list[str] = []
FORCE_HELP = {"force": "redo even if up to date"}


def _settings(**options) -> Settings:
    try:
        return Settings().with_options(**options)
    except SettingError as exc:
        _fail(str(exc))


def _fail(message: str) -> None:
    """Bad input or a broken environment: one line, and the chain stops now."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def _fail_later(message: str) -> None:
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


def _build(steps: list[str], force: bool, settings: Settings | None = None) -> None:
    """Run these build steps (mobilenet/build/schedule.py: export first, then the others two at a time)."""
    from mobilenet.build.model import WeightsError
    from mobilenet.build.schedule import StepError, build_steps
    from mobilenet.build.step import BuildError
    from mobilenet.files import BuildFolderBusy, io_errors
    settings = settings or _settings()
    try:
        with io_errors():
            for step, metas in build_steps(steps, settings, force=force):
                failed = [m["variant"] for m in metas if m["status"] == "FAILED"]
                if failed:
                    _fail_later(f"{step}: FAILED {', '.join(failed)} (reasons in build/logs/{step}.log and the report)")
    except (StepError, BuildError, BuildFolderBusy, WeightsError, ValueError) as exc:
        _fail(str(exc))


_done: set[str] = set()  # steps already run by this invocation: each runs once


def _download(settings: Settings) -> None:
    from mobilenet import logs
    from mobilenet.data import images
    from mobilenet.files import BuildFolderBusy, hold_build_lock, io_errors
    try:
        with io_errors():
            hold_build_lock(settings.build_dir)
            log = logs.setup(settings.logs_dir, "download-images", settings.quiet)
            counts = images.download_images(settings)
    except (images.DownloadError, images.ManifestError, BuildFolderBusy, ValueError) as exc:
        _fail(str(exc))
    log.info("download-images: %d downloaded, %d already verified", counts["downloaded"], counts["kept"])


def _needs(*names: str) -> None:
    """Run what these steps read from (Make-style: each skips itself when up to date), with the
    chain's settings from the environment. Called after the task has validated its own
    options, so a bad value stops before any work."""
    from mobilenet.build.schedule import with_needs
    steps = [name for name in with_needs(n for n in names if n != "download-images") if name not in _done]
    if (steps or "download-images" in names) and "download-images" not in _done:
        _done.add("download-images")
        _download(_settings())
    _done.update(steps)
    if steps:
        _build(steps, force=False)


@task(help=task_help("mirror", "local_images", "local_labels", "calib_count", "eval_count"))
def download_images(c, mirror=None, local_images=None, local_labels=None, calib_count=None, eval_count=None):
    """Download the labelled calibration and evaluation photos of calib_images/manifest.csv."""
    _download(_settings(mirror=mirror, local_images=local_images, local_labels=local_labels,
                        calib_count=calib_count, eval_count=eval_count))
    _done.add("download-images")


@task(help={**task_help("weights", "random_weights"), **FORCE_HELP})
def export(c, weights=None, random_weights=None, force=False):
    """FP32 eager state_dict, traced TorchScript and PyTorch Mobile (.ptl), each checked against eager."""
    settings = _settings(weights=weights, random_weights=random_weights)
    _needs("download-images")
    _build(["export"], force, settings)
    _done.add("export")


def _build_task(step):
    def build_step(c, force=False):
        _settings()
        _needs("download-images", *step.needs)
        _build([step.name], force)
        _done.add(step.name)
    build_step.__doc__ = step.doc
    return task(build_step, name=step.name, help=FORCE_HELP)


for _step in STEPS:
    if _step.name != "export":
        globals()[_step.name.replace("-", "_")] = _build_task(_step)


@task(help=FORCE_HELP)
def build(c, force=False):
    """Build every variant: export, then the other build steps two at a time (MOBILENET_BUILD_JOBS)."""
    _settings()
    _needs("download-images")
    _build(list(STEP_BY_NAME), force)
    _done.update(STEP_BY_NAME)


@task(help={**task_help("threads", "only", "sessions", "min_runs", "min_seconds", "warmup", "tag"), **FORCE_HELP})
def bench(c, threads=None, only=None, sessions=None, min_runs=None, min_seconds=None, warmup=None, tag=None,
          force=False):
    """Build what is missing, then measure every variant in several fresh processes, interleaved;
    exit 1 if any is FAILED."""
    from mobilenet.bench import step as bench_module
    from mobilenet.files import BuildFolderBusy, io_errors
    settings = _settings(threads=threads, only=only, sessions=sessions, min_runs=min_runs,
                         min_seconds=min_seconds, warmup=warmup, tag=tag)
    _needs(*STEP_BY_NAME)
    try:
        with io_errors():
            results = bench_module.run(settings, force=force)
    except (bench_module.BenchError, BuildFolderBusy, ValueError) as exc:
        _fail(str(exc))
    failed = [r.variant for r in results if r.status == "FAILED"]
    if failed:
        _fail_later(f"bench: FAILED {', '.join(failed)} (see build/results and the report)")


@task(help=FORCE_HELP)
def explain(c, force=False):
    """Where each variant's time goes (each runtime's own profiler), which layers lose accuracy in
    INT8 (per-layer SQNR), and a verdict per runtime; after bench, outside the timed runs."""
    from mobilenet import explain as explain_module
    from mobilenet.files import BuildFolderBusy, io_errors
    settings = _settings()
    bench(c)
    try:
        with io_errors():
            explain_module.run(settings, force=force)
    except (BuildFolderBusy, ValueError) as exc:
        _fail(str(exc))


@task(help={"results": "extra result folders to merge, comma-separated"})
def report(c, results=None):
    """Write build/report.md and its charts (build/plots/) from result files (no rerun).

    Merges build/results, every build/remote/<host>/results folder that exists, and the
    --results folders; results spanning several machines get a cross-machine table. Exits 1
    after writing the report when a row is FAILED.
    """
    from mobilenet.explain import render_section
    from mobilenet.files import io_errors
    from mobilenet.report import markdown as report_module
    settings = _settings()
    explain(c)
    try:
        with io_errors():
            folders = report_module.result_folders(settings.build_dir, [p for p in (results or "").split(",") if p])
            out, failed = report_module.write(folders, settings.build_dir / "report.md",
                                              render_section(settings.build_dir))
    except ValueError as exc:
        _fail(str(exc))
    print(f"report: {out}")
    if failed:
        _fail_later(f"report: {len(failed)} FAILED row(s): {', '.join(failed)}")


@task(help={"old": "result folder before the change", "new": "result folder after the change",
            "threshold": "percent slower that counts as a regression when the intervals do not overlap (default 10)"})
def compare(c, old, new, threshold=10.0):
    """p50 per variant, OLD vs NEW; exit 1 if any got slower (intervals apart, beyond --threshold %) or FAILED."""
    from mobilenet.bench import compare as compare_module
    try:
        comparison = compare_module.compare_folders(old, new, float(threshold))
    except ValueError as exc:
        _fail(str(exc))
    print(compare_module.render(comparison))
    if comparison.regressions:
        worse = ", ".join(f"{r.variant}@{r.threads}t " + (f"{r.change_pct:+.1f} %" if hasattr(r, "change_pct")
                                                           else r.new_status) for r in comparison.regressions)
        _fail(f"regressions (intervals apart and beyond {threshold:g} %, or no longer measured): {worse}")


@task
def clean(c):
    """Remove build/ (downloaded photos in calib_images/ are kept)."""
    import shutil
    settings = _settings()
    shutil.rmtree(settings.build_dir, ignore_errors=True)
    print(f"removed {settings.build_dir}")


@task(auto_shortflags=False,  # many options: letters run out; long names only
      help={"hosts": "comma-separated SSH targets, e.g. pi@raspberrypi,nuc (aliases from ~/.ssh/config work)",
            "mode": "device (default): build and check here, ship the artifacts, time and score on the hosts; "
                    "chain: copy the project and run the whole chain on each host",
            **task_help("threads", "only", "weights", "mirror", "calib_count", "eval_count", "sessions", "min_runs",
                        "min_seconds", "warmup"),
            "threads": "thread counts: 1, 1,2 or all (each host's own cores)",
            "weights": "state_dict path (device mode: here; chain mode: ON THE HOSTS) (env MOBILENET_WEIGHTS)",
            "mirror": "base URL the photos are downloaded from (chain mode: by the hosts) (env MOBILENET_MIRROR)",
            "photos": "device mode: evaluation photos shipped and scored (default: all of this machine's)",
            "device_install": "device mode: also install these heavy runtime lists on the hosts, e.g. torch "
                              "(mobilenet/measure/requirements/)",
            "tag": "machine id in results (default: the host alias; {host} fills it in)",
            "remote_dir": "folder on the hosts (default ~/mobilenet-device/{host}, chain mode ~/mobilenet-bench/{host})",
            "remote_venv": "existing virtual environment on the hosts, used as it is",
            "remote_python": "interpreter that makes the hosts' venv (default python3)",
            "identity": "private key file", "ssh_config": "SSH config file instead of ~/.ssh/config",
            "accept_new_host_keys": "trust hosts not yet in known_hosts and record their keys (a "
                                    "changed key is still refused), like OpenSSH's StrictHostKeyChecking=accept-new"})
def remote_bench(c, hosts, mode="device", threads=None, only=None, weights=None, mirror=None, calib_count=None,
                 eval_count=None, sessions=None, min_runs=None, min_seconds=None, warmup=None, photos=None,
                 device_install=None, tag=None, remote_dir=None, remote_venv=None, remote_python=None, identity=None,
                 ssh_config=None, accept_new_host_keys=False):
    """Bench other machines over SSH, in parallel; results land in build/remote/<host>/results.

    Device mode (default): the artifacts are built and checked here; each host gets them, the
    evaluation photos and the worker, installs only the runtimes they need (no torch unless
    --device-install torch), times them, and its answers are scored here against this
    machine's. Chain mode: each host gets the project and runs the whole chain itself.
    `invoke report` merges every machine. Exit 1 if any host failed, after fetching the others.
    """
    if mode not in ("device", "chain"):
        _fail(f"--mode: {mode!r}; give device or chain")
    chain = dict(threads=threads, only=only, weights=weights, mirror=mirror, calib_count=calib_count,
                 eval_count=eval_count, sessions=sessions, min_runs=min_runs, min_seconds=min_seconds,
                 warmup=warmup)
    if mode == "device":
        _device_bench(hosts, chain, photos=photos, device_install=device_install, tag=tag, remote_dir=remote_dir,
                      remote_venv=remote_venv, remote_python=remote_python, identity=identity,
                      ssh_config=ssh_config, accept_new_host_keys=accept_new_host_keys)
        return
    if photos or device_install:
        _fail("--photos and --device-install are device-mode options (--mode device)")
    from mobilenet.remote import chain as remote
    try:
        plan = remote.make_plan(hosts, chain, tag=tag, remote_dir=remote_dir, remote_venv=remote_venv,
                                remote_python=remote_python, identity=identity, ssh_config=ssh_config,
                                accept_new_host_keys=accept_new_host_keys)
        outcomes = remote.run_hosts(plan)
    except (ValueError, remote.RemoteError) as exc:
        _fail(str(exc))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        _fail(f"{len(failed)} of {len(outcomes)} host(s) failed: {', '.join(o.host for o in failed)} (reasons above)")


def _device_bench(hosts, chain: dict, *, photos, device_install, tag, **connection) -> None:
    """remote-bench --mode device: build here (the chain's options apply to this machine), then the hosts."""
    from mobilenet.files import io_errors
    from mobilenet.remote import device
    from mobilenet.settings import host_env
    threads = str(chain["threads"] or os.environ.get("MOBILENET_THREADS") or "1")
    try:
        device.device_threads(threads, cpus=1)  # 'all' is each host's count, known once connected
        photos = int(photos) if photos is not None else None
        if photos is not None and photos < 1:
            raise ValueError
        # The chain's options are this machine's build settings here.
        os.environ.update(host_env({k: v for k, v in chain.items() if k != "threads"}))
    except SettingError as exc:
        _fail(str(exc))
    except ValueError:
        _fail(f"--threads {threads!r} / --photos {photos!r}: expected e.g. --threads 1,all and --photos 20")
    settings = _settings(tag=tag)
    _needs(*STEP_BY_NAME)
    install = {name.strip() for name in (device_install or "").split(",") if name.strip()}
    try:
        with io_errors():
            outcomes = device.run_devices(hosts, settings, threads=threads, install=install, eval_count=photos,
                                          **{k: v for k, v in connection.items() if v is not None})
    except ValueError as exc:
        _fail(str(exc))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        _fail(f"{len(failed)} of {len(outcomes)} host(s) failed: {', '.join(o.host for o in failed)} (reasons above)")
    bad = [f"{o.host}:{r.variant}@{r.threads}t" for o in outcomes for r in o.results if r.status == "FAILED"]
    if bad:
        _fail_later(f"remote-bench: FAILED {', '.join(bad)} (see the report)")
