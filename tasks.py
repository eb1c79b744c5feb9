"""Invoke tasks: the benchmark chain. Each task is a thin call into the mobilenet package.

Chain-wide settings come from MOBILENET_* environment variables (see README); options
given to a task apply to that task. Every step skips work whose outputs are up to date.
"""
import atexit
import os
import sys

from invoke import task

from mobilenet.settings import Settings

_failures: list[str] = []


def _settings(**options) -> Settings:
    return Settings().with_options(**options)


def _fail(message: str) -> None:
    """Bad input or a broken environment: stop the chain now."""
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


def _build(step: str, force: bool, **options) -> None:
    from mobilenet.build import BuildError, run_step
    from mobilenet.fsutil import BuildFolderBusy
    from mobilenet.model import WeightsError
    try:
        metas = run_step(step, _settings(**options), force=force)
    except (BuildError, BuildFolderBusy, WeightsError, ValueError) as exc:
        _fail(str(exc))
    failed = [m["variant"] for m in metas if m["status"] == "FAILED"]
    if failed:
        _fail_later(f"{step}: FAILED {', '.join(failed)} (reasons in build/logs/{step}.log and the report)")


@task(help={"mirror": "base URL serving the same files (env MOBILENET_MIRROR)",
            "local_images": "use your own folder of photos instead (env MOBILENET_LOCAL_IMAGES)",
            "local_labels": "CSV filename,label for --local-images (env MOBILENET_LOCAL_LABELS)",
            "calib_count": "calibration photos (default 50)", "eval_count": "evaluation photos (default 200)"})
def download_images(c, mirror=None, local_images=None, local_labels=None, calib_count=None, eval_count=None):
    """Download the labelled calibration and evaluation photos of calib_images/manifest.csv."""
    from mobilenet import images, logs
    settings = _settings(mirror=mirror, local_images=local_images, local_labels=local_labels,
                         calib_count=calib_count, eval_count=eval_count)
    log = logs.setup(settings.logs_dir, "download-images", settings.quiet)
    try:
        counts = images.download_images(settings)
    except (images.DownloadError, images.ManifestError) as exc:
        _fail(str(exc))
    log.info("download-images: %d downloaded, %d already verified", counts["downloaded"], counts["kept"])


@task(pre=[download_images], help={"weights": "local state_dict (env MOBILENET_WEIGHTS)",
                                   "random_weights": "random weights: latency only (env MOBILENET_RANDOM_WEIGHTS=1)",
                                   "force": "rebuild even if up to date"})
def export(c, weights=None, random_weights=None, force=False):
    """FP32 eager state_dict, traced TorchScript and PyTorch Mobile (.ptl), each checked against eager."""
    _build("export", force, weights=weights, random_weights=random_weights)


@task(pre=[export], help={"force": "rebuild even if up to date"})
def quantize_dynamic(c, force=False):
    """INT8 dynamic quantization (torch.ao), saved as TorchScript."""
    _build("quantize-dynamic", force)


@task(pre=[quantize_dynamic], help={"force": "rebuild even if up to date"})
def quantize_static(c, force=False):
    """INT8 static quantization calibrated on real photos, for the fbgemm (x86) and qnnpack (ARM) engines."""
    _build("quantize-static", force)


@task(pre=[quantize_static], help={"force": "rebuild even if up to date"})
def convert_onnx(c, force=False):
    """ONNX (dynamo exporter) FP32, and ONNX Runtime static QDQ INT8."""
    _build("convert-onnx", force)


@task(pre=[convert_onnx], help={"force": "rebuild even if up to date"})
def convert_litert(c, force=False):
    """LiteRT (TensorFlow Lite) FP32 and INT8 via litert-torch."""
    _build("convert-litert", force)


@task(pre=[convert_litert], help={"force": "rebuild even if up to date"})
def convert_executorch(c, force=False):
    """ExecuTorch .pte, FP32 and PT2E INT8, lowered to XNNPACK."""
    _build("convert-executorch", force)


@task(pre=[convert_executorch],
      help={"threads": "1, 1,2 or all (env MOBILENET_THREADS)", "only": "variant globs, e.g. 'onnx-*,int8-*'",
            "sessions": "fresh processes per variant (env MOBILENET_SESSIONS, default 5)",
            "min_runs": "timed calls per variant over all sessions, at least",
            "min_seconds": "timed seconds per variant over all sessions, at least",
            "warmup": "untimed calls first", "tag": "machine id in results (default hostname + CPU)",
            "force": "rerun even if up to date"})
def bench(c, threads=None, only=None, sessions=None, min_runs=None, min_seconds=None, warmup=None, tag=None,
          force=False):
    """Measure every variant in several fresh processes, interleaved; exit 1 if any is FAILED."""
    from mobilenet import bench as bench_module
    from mobilenet.fsutil import BuildFolderBusy
    from mobilenet.results import ResultsError
    settings = _settings(threads=threads, only=only, sessions=sessions, min_runs=min_runs,
                         min_seconds=min_seconds, warmup=warmup, tag=tag)
    try:
        results = bench_module.run(settings, force=force)
    except (bench_module.BenchError, BuildFolderBusy, ResultsError, ValueError) as exc:
        _fail(str(exc))
    failed = [r.variant for r in results if r.status == "FAILED"]
    if failed:
        _fail_later(f"bench: FAILED {', '.join(failed)} (see build/results and the report)")


@task(pre=[bench], help={"results": "extra result folders to merge, comma-separated"})
def report(c, results=None):
    """Write build/report.md and its charts (build/plots/) from result files (no rerun).

    Merges build/results, every build/remote/<host>/results folder that exists, and the
    --results folders; results spanning several machines get a cross-machine table.
    """
    from mobilenet import report as report_module
    settings = _settings()
    try:
        folders = report_module.result_folders(settings.build_dir, [p for p in (results or "").split(",") if p])
        out, failed = report_module.write(folders, settings.build_dir / "report.md")
    except ValueError as exc:
        _fail(str(exc))
    print(f"report: {out}")
    if failed:
        _fail_later(f"report: {len(failed)} FAILED row(s): {', '.join(failed)}")


@task(help={"old": "result folder before the change", "new": "result folder after the change",
            "threshold": "percent slower that counts as a regression when the intervals do not overlap (default 10)"})
def compare(c, old, new, threshold=10.0):
    """p50 per variant, OLD vs NEW; exit 1 if any got slower (intervals apart, beyond --threshold %) or FAILED."""
    from mobilenet import compare as compare_module
    try:
        comparison = compare_module.compare_folders(old, new, threshold)
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


@task(auto_shortflags=False,  # 16 options: letters run out; long names only
      help={"hosts": "comma-separated SSH targets, e.g. pi@raspberrypi,nuc (aliases from ~/.ssh/config work)",
            "threads": "1, 1,2 or all (each host's own cores)", "only": "variant globs, e.g. 'onnx-*,int8-*'",
            "weights": "state_dict path ON THE HOSTS", "mirror": "base URL the hosts download the photos from",
            "calib_count": "calibration photos", "eval_count": "evaluation photos",
            "min_runs": "timed calls per variant, at least", "min_seconds": "timed seconds per variant, at least",
            "warmup": "untimed calls first",
            "tag": "machine id in results (default: the host alias; {host} fills it in)",
            "remote_dir": "project folder on the hosts (default ~/mobilenet-bench/{host})",
            "remote_venv": "existing virtual environment on the hosts, used as it is",
            "remote_python": "interpreter that makes <remote-dir>/.venv (default python3)",
            "identity": "private key file", "ssh_config": "SSH config file instead of ~/.ssh/config"})
def remote_bench(c, hosts, threads=None, only=None, weights=None, mirror=None, calib_count=None, eval_count=None,
                 min_runs=None, min_seconds=None, warmup=None, tag=None, remote_dir=None, remote_venv=None,
                 remote_python=None, identity=None, ssh_config=None):
    """Bench other machines over SSH, in parallel; results land in build/remote/<host>/results.

    Each host gets the project's files (no build/, .venv or photos), a venv from requirements.txt
    (reused while it is unchanged) and runs the chain with these settings and your MOBILENET_*;
    `invoke report` merges every machine. Exit 1 if any host failed, after fetching the others.
    """
    from mobilenet import remote
    chain = dict(threads=threads, only=only, weights=weights, mirror=mirror, calib_count=calib_count,
                 eval_count=eval_count, min_runs=min_runs, min_seconds=min_seconds, warmup=warmup)
    try:
        plan = remote.make_plan(hosts, chain, tag=tag, remote_dir=remote_dir, remote_venv=remote_venv,
                                remote_python=remote_python, identity=identity, ssh_config=ssh_config)
        outcomes = remote.run_hosts(plan)
    except (ValueError, remote.RemoteError) as exc:
        _fail(str(exc))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        _fail(f"{len(failed)} of {len(outcomes)} host(s) failed: {', '.join(o.host for o in failed)} (reasons above)")
