"""Invoke tasks: the benchmark chain. Each task is a thin call into the mobilenet package
(mobilenet/tasks_support.py).

Each task declares what it reads from with pre=[...]: download-images <- export <- the other
build steps <- build and bench; bench <- explain <- report. Chain-wide settings come from
MOBILENET_* environment variables (see README), which the pre-tasks run with; options given
to a task apply to that task. Every task and setting of the command line is checked before
any task runs (tasks_support.ChainExecutor, set in invoke.yaml), and every step skips work
whose outputs are up to date. The build steps are made from the registry
(mobilenet.registry.STEPS): adding a runtime adds a step there, not a task here.
"""
from mobilenet import tasks_support as run
from mobilenet.registry import BUILD_STEPS, STEPS
from mobilenet.settings import task_help
from mobilenet.tasks_support import task

FORCE_HELP = {"force": "redo even if up to date"}


@task(help=task_help("mirror", "local_images", "local_labels", "calib_count", "eval_count", "all_photos"),
      optional=["all_photos"])
def download_images(c, mirror=None, local_images=None, local_labels=None, calib_count=None, eval_count=None,
                    all_photos=None):
    """Download the labelled calibration and evaluation photos of calib_images/manifest.csv."""
    run.download(c, mirror=mirror, local_images=local_images, local_labels=local_labels,
                 calib_count=calib_count, eval_count=eval_count, all_photos=all_photos)


@task(pre=[download_images], help={**task_help("weights", "random_weights"), **FORCE_HELP})
def export(c, weights=None, random_weights=None, force=False):
    """FP32 eager state_dict, traced TorchScript and PyTorch Mobile (.ptl), each checked against eager."""
    run.build(c, ["export"], force, weights=weights, random_weights=random_weights)


STEP_TASKS = {"export": export}  # every build step's task, in registry order


def _build_task(step):
    def build_step(c, force=False):
        run.build(c, [step.name], force)
    build_step.__doc__ = step.doc
    return task(build_step, name=step.name, help=FORCE_HELP, pre=[STEP_TASKS[need] for need in step.needs])


for _step in STEPS:
    if _step.name not in STEP_TASKS:
        STEP_TASKS[_step.name] = globals()[_step.name.replace("-", "_")] = _build_task(_step)


@task(pre=list(STEP_TASKS.values()), help=FORCE_HELP)
def build(c, force=False):
    """Build every variant: export, then the other build steps two at a time (MOBILENET_BUILD_JOBS)."""
    run.build(c, BUILD_STEPS, force)


@task(pre=list(STEP_TASKS.values()),
      help={**task_help("threads", "only", "sessions", "min_runs", "min_seconds", "warmup", "tag"), **FORCE_HELP})
def bench(c, threads=None, only=None, sessions=None, min_runs=None, min_seconds=None, warmup=None, tag=None,
          force=False):
    """Measure every variant in several fresh processes, interleaved; exit 1 if any is FAILED."""
    run.bench(force, threads=threads, only=only, sessions=sessions, min_runs=min_runs, min_seconds=min_seconds,
              warmup=warmup, tag=tag)


@task(pre=[bench], help=FORCE_HELP)
def explain(c, force=False):
    """Where each variant's time goes (each runtime's own profiler), which layers lose accuracy in
    INT8 (per-layer SQNR), and a verdict per runtime; after bench, outside the timed runs."""
    run.explain(force)


@task(pre=[explain], help={"results": "extra result folders to merge, comma-separated"})
def report(c, results=None):
    """Write build/report.md and its charts (build/plots/) from result files (no rerun).

    Merges build/results, every build/remote/<host>/results folder that exists, and the
    --results folders; results spanning several machines get a cross-machine table. Exits 1
    after writing the report when a row is FAILED.
    """
    run.report(results)


@task(help={"photos": "photos of the tuning split, taken from the evaluation pool (default: the split the build "
                      "folder has, else 100)", **task_help("only")})
def tune(c, photos=None, only=None):
    """Choose INT8 settings by measurement: build each INT8 variant's grid, score it on a tuning split
    (neither calibration nor evaluation photos), time it, pick by one rule; later builds use the winners.

    Opt-in: no other task runs it. It starts from the FP32 models of the build folder (`invoke build`
    first); afterwards the report scores only the evaluation photos not tuned on (docs/tuning.md).
    """
    from mobilenet.tune.run import task as tune_task
    tune_task(photos=photos, only=only)


@task(help={"old": "result folder before the change", "new": "result folder after the change",
            "threshold": "percent slower that counts as a regression when the intervals do not overlap (default 10)"})
def compare(c, old, new, threshold=10.0):
    """p50 per variant, OLD vs NEW; exit 1 if any got slower (intervals apart, beyond --threshold %) or FAILED."""
    run.compare(old, new, threshold)


@task
def clean(c):
    """Remove build/ (downloaded photos in calib_images/ are kept)."""
    run.clean()


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
            "remote_dir": "folder on the hosts (default ~/mobilenet-device/{host}, "
                          "chain mode ~/mobilenet-bench/{host})",
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

    Device mode (default): the artifacts are built and checked here (first, like bench's
    pre-tasks, with this task's options); each host gets them, the evaluation photos and the
    worker, installs only the runtimes they need (no torch unless --device-install torch),
    times them, and its answers are scored here against this machine's. Chain mode: each host
    gets the project and runs the whole chain itself. `invoke report` merges every machine.
    Exit 1 if any host failed, after fetching the others.
    """
    chain = dict(threads=threads, only=only, weights=weights, mirror=mirror, calib_count=calib_count,
                 eval_count=eval_count, sessions=sessions, min_runs=min_runs, min_seconds=min_seconds,
                 warmup=warmup)
    run.remote_bench(c, hosts, mode, chain, photos=photos, device_install=device_install, tag=tag,
                     remote_dir=remote_dir, remote_venv=remote_venv, remote_python=remote_python, identity=identity,
                     ssh_config=ssh_config, accept_new_host_keys=accept_new_host_keys)
