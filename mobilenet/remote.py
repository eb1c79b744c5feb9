"""Benchmark other machines over SSH: copy the project there, run the chain, fetch the results.

For each host, in parallel: upload the project's own files (never build/, .venv or photos:
each host makes those itself), create or reuse a virtual environment from requirements.txt,
run `invoke bench` there with the chain's MOBILENET_* settings (MOBILENET_ONLY narrows its
builds too), and fetch its build/results and build/logs into build/remote/<host>/, where
`invoke report` finds them.

Hosts are reached with Fabric, so ~/.ssh/config (Host aliases, User, Port, IdentityFile,
ProxyJump) applies as it does for `ssh`. Authentication is by key or agent only: nothing
here asks for, takes or stores a password.
"""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import fabric
from invoke.exceptions import UnexpectedExit
from paramiko.ssh_exception import AuthenticationException, NoValidConnectionsError

from mobilenet.settings import REPO_ROOT, Settings, parse_threads
from mobilenet.variants import select

log = logging.getLogger("mobilenet.remote")

# Relative remote paths are under the login's home (where SSH sessions and SFTP start).
# {host} keeps two aliases of one machine (or two users on it) from sharing a build folder.
DEFAULT_REMOTE_DIR = "mobilenet-bench/{host}"
DEFAULT_REMOTE_PYTHON = "python3"
VENV_MARKER = ".mobilenet-requirements.sha256"
SOURCE_ARCHIVE = ".mobilenet-source.tar.gz"
RESULTS_ARCHIVE = ".mobilenet-results.tar.gz"

# Chain settings that travel to every host, from task options or this shell's MOBILENET_*.
# Paths of this machine's build and image folders mean nothing there, and the tag is per host.
NOT_PASSED_ON = {"MOBILENET_BUILD_DIR", "MOBILENET_IMAGES_ROOT", "MOBILENET_MANIFEST", "MOBILENET_TAG"}


class RemoteError(RuntimeError):
    pass


@dataclass(frozen=True)
class Host:
    spec: str  # as given to --hosts: [user@]alias[:port]
    name: str  # the alias, safe as a folder name: the tag and build/remote/<name>


@dataclass(frozen=True)
class Plan:
    hosts: tuple[Host, ...]
    env: dict  # MOBILENET_* for every host; the tag is added per host
    tag: str  # may contain {host}
    remote_dir: str  # may contain {host}
    remote_venv: str | None  # an existing venv to use as it is; None: <remote_dir>/.venv, managed
    remote_python: str  # makes the managed venv
    identity: str | None
    ssh_config: str | None
    build_dir: Path  # local: results land in build_dir/remote/<name>/
    quiet: bool = False

    def local_dir(self, host: Host) -> Path:
        return self.build_dir / "remote" / host.name


@dataclass
class HostOutcome:
    host: str
    ok: bool
    results_dir: Path | None = None  # set whenever results came back, even from a failed chain
    error: str | None = None  # "<stage>: <reason>"
    seconds: float = 0.0


# ---- planning (local, before any connection) ----

def parse_hosts(spec: str) -> tuple[Host, ...]:
    hosts = []
    for item in (part.strip() for part in (spec or "").split(",")):
        if item:
            alias = item.rsplit("@", 1)[-1]
            hosts.append(Host(item, re.sub(r"[^A-Za-z0-9._-]", "_", alias)))
    if not hosts:
        raise ValueError("--hosts: give at least one host, e.g. --hosts pi@raspberrypi,user@nuc")
    names = [h.name for h in hosts]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--hosts: {', '.join(twice)} given twice; their results would share "
                         "build/remote/<host> (use an ~/.ssh/config alias per target)")
    return tuple(hosts)


def chain_env(options: dict, environ=os.environ) -> dict[str, str]:
    """MOBILENET_* for the hosts: this shell's chain settings, then the task's options on top."""
    env = {k: v for k, v in environ.items() if k.startswith("MOBILENET_") and k not in NOT_PASSED_ON}
    for name, value in options.items():
        if value is not None:
            env[f"MOBILENET_{name.upper()}"] = "1" if value is True else str(value)
    # Hosts print only warnings and errors: their output is shown when they fail, and
    # the full story is in build/remote/<host>/logs.
    env["MOBILENET_QUIET"] = "1"
    _validate(env)
    return env


def _validate(env: dict) -> None:
    """Catch a typo here, not minutes later on every host."""
    parse_threads(env.get("MOBILENET_THREADS", "1"))  # 'all' stays a word: each host has its own cores
    select(env.get("MOBILENET_ONLY"))
    for name, kind in (("CALIB_COUNT", int), ("EVAL_COUNT", int), ("MIN_RUNS", int), ("WARMUP", int),
                       ("BURST", int), ("MIN_SECONDS", float)):
        value = env.get(f"MOBILENET_{name}")
        if value is not None:
            try:
                kind(value)
            except ValueError:
                raise ValueError(f"{name.lower()}: expected a number, got {value!r}") from None


def make_plan(hosts: str, options: dict, *, tag=None, remote_dir=None, remote_venv=None,
              remote_python=None, identity=None, ssh_config=None, build_dir: Path | None = None,
              environ=os.environ) -> Plan:
    parsed = parse_hosts(hosts)
    if tag and len(parsed) > 1 and "{host}" not in tag:
        raise ValueError("--tag: with several hosts, include {host} (e.g. '{host}-py311') "
                         "so their results stay apart in the report")
    for label, path in (("--identity", identity), ("--ssh-config", ssh_config)):
        if path and not Path(path).expanduser().is_file():
            raise ValueError(f"{label}: no such file {path}")
    settings = Settings()
    return Plan(hosts=parsed, env=chain_env(options, environ), tag=tag or "{host}",
                remote_dir=remote_dir or DEFAULT_REMOTE_DIR, remote_venv=remote_venv,
                remote_python=remote_python or DEFAULT_REMOTE_PYTHON,
                identity=str(Path(identity).expanduser()) if identity else None,
                ssh_config=str(Path(ssh_config).expanduser()) if ssh_config else None,
                build_dir=Path(build_dir or settings.build_dir), quiet=settings.quiet)


def project_files(repo: Path) -> list[str]:
    """The project as git sees it: tracked files plus new ones not ignored (not yet committed
    work is what one wants to measure), so build/, .venv and downloaded photos stay behind."""
    try:
        listing = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                                  "--exclude-standard"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RemoteError(f"remote-bench copies the files git knows of; {repo} is not a usable git "
                          f"checkout ({exc})") from exc
    names = sorted({n for n in listing.decode().split("\0") if n})
    return [n for n in names if (repo / n).is_file()]  # deleted but not yet committed: skip


def write_source_archive(repo: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for name in project_files(repo):
            tar.add(repo / name, arcname=name, recursive=False)
    return out


def requirements_digest(repo: Path) -> str:
    return hashlib.sha256((repo / "requirements.txt").read_bytes()).hexdigest()


# ---- one host ----

def _remote_path(path: str, host: Host) -> str:
    """{host} filled in; '~/x' made relative, since SFTP does not expand '~' but starts at home."""
    path = path.replace("{host}", host.name)
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path


def connect(host: Host, plan: Plan) -> fabric.Connection:
    config = fabric.Config(runtime_ssh_path=plan.ssh_config)  # None: ~/.ssh/config, /etc/ssh/ssh_config
    config.timeouts.connect = config.timeouts.connect or 15  # a ConnectTimeout in ssh config wins
    connect_kwargs = {"key_filename": [plan.identity]} if plan.identity else {}
    cxn = fabric.Connection(host.spec, config=config, connect_kwargs=connect_kwargs)
    # Fabric accepts any host key; at least refuse a host whose key differs from known_hosts.
    cxn.client.load_system_host_keys()
    return cxn


def _run(cxn, command: str) -> str:
    # in_stream=False: this is one of several threads and none of them may read our stdin.
    return cxn.run(command, hide=True, in_stream=False).stdout


def _env_prefix(env: dict) -> str:
    # Quoted here: Fabric's own env= passes values unquoted, and --only globs must not expand.
    return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))


def _venv_command(venv: str, python: str, project: str, digest: str) -> str:
    """Reuse the venv while requirements.txt is unchanged; otherwise (re)install it."""
    q = shlex.quote
    marker = q(f"{venv}/{VENV_MARKER}")
    return (f'if [ "$(cat {marker} 2>/dev/null)" != {digest} ]; then '
            f"{q(python)} -m venv {q(venv)} && "
            f"{q(venv + '/bin/python')} -m pip install --quiet -r {q(project + '/requirements.txt')} && "
            f"echo {digest} > {marker}; fi")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NoValidConnectionsError):  # its own text reads "[Errno None] Unable to connect"
        return "; ".join(f"{address[0]}:{address[1]}: {error.strerror or error}"
                         for address, error in exc.errors.items())
    if isinstance(exc, UnexpectedExit):
        result = exc.result
        output = (result.stderr.strip() or result.stdout.strip()).splitlines()
        return f"exit code {result.exited}: " + " | ".join(output[-6:])
    if isinstance(exc, AuthenticationException):
        return (f"authentication failed ({exc}); keys only: --identity FILE, an IdentityFile in "
                "~/.ssh/config, or ssh-agent")
    return str(exc) or exc.__class__.__name__


def bench_host(host: Host, plan: Plan, source: Path, digest: str) -> HostOutcome:
    """Everything for one host; any failure becomes this host's outcome, never an exception."""
    started = time.monotonic()
    q = shlex.quote
    errors, results_dir, stage = [], None, "connect"
    cxn = None
    try:
        cxn = connect(host, plan)
        cxn.open()
        # The chain can run quietly for many minutes; keep NAT and firewalls from dropping us.
        cxn.transport.set_keepalive(30)
        home = _run(cxn, "pwd").strip()

        stage = "copy project"
        # Absolute from here on, so that SFTP and every later command agree.
        project = posixpath.join(home, _remote_path(plan.remote_dir, host))
        project = _run(cxn, f"mkdir -p {q(project)} && cd {q(project)} && pwd").strip()
        log.info("%s: copying the project to %s:%s", host.name, host.spec, project)
        cxn.put(str(source), f"{project}/{SOURCE_ARCHIVE}")
        # results/ and logs/ exist from here on, so fetching never fails for want of them.
        _run(cxn, f"cd {q(project)} && tar xzf {SOURCE_ARCHIVE} && rm -f {SOURCE_ARCHIVE} "
                  f"&& mkdir -p build/results build/logs")

        stage = "virtual environment"
        if plan.remote_venv:
            venv = posixpath.join(home, _remote_path(plan.remote_venv, host))
            missing = f"no {venv}/bin/python: --remote-venv must be a virtual environment"
            _run(cxn, f"test -x {q(venv + '/bin/python')} || {{ echo {q(missing)} >&2; exit 1; }}")
        else:
            venv = f"{project}/.venv"
            log.info("%s: virtual environment %s (installed only when requirements.txt changed)",
                     host.name, venv)
            _run(cxn, _venv_command(venv, plan.remote_python, project, digest))

        stage = "benchmark"
        env = {**plan.env, "MOBILENET_TAG": plan.tag.replace("{host}", host.name)}
        log.info("%s: running invoke bench", host.name)
        try:
            # `python -m invoke`: a venv's bin/invoke script breaks if the venv was ever moved.
            _run(cxn, f"cd {q(project)} && {_env_prefix(env)} {q(venv + '/bin/python')} -m invoke bench")
        except Exception as exc:  # fetch anyway: a FAILED variant is a result, and the logs explain
            errors.append(f"benchmark: {_describe(exc)}")

        stage = "fetch results"
        results_dir = fetch(cxn, project, plan.local_dir(host), plan.build_dir / "tmp")
    except Exception as exc:  # one host's trouble must not stop the others
        errors.append(f"{stage}: {_describe(exc)}")
    finally:
        if cxn is not None:
            cxn.close()
    return HostOutcome(host.name, ok=not errors, results_dir=results_dir,
                       error="; ".join(errors) or None, seconds=time.monotonic() - started)


def fetch(cxn, project: str, final: Path, tmp_root: Path) -> Path:
    """build/results and build/logs of the host into `final`, replacing the previous copy whole.

    Staged outside build/remote so that `invoke report` never sees half a copy.
    """
    archive = f"{project}/{RESULTS_ARCHIVE}"
    _run(cxn, f"cd {shlex.quote(project + '/build')} && tar czf {shlex.quote(archive)} results logs")
    tmp_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"remote-{final.name}.", dir=tmp_root))
    try:
        cxn.get(archive, str(staging / RESULTS_ARCHIVE))
        with tarfile.open(staging / RESULTS_ARCHIVE) as tar:
            tar.extractall(staging / "host", filter="data")  # nothing from a host lands outside
        _swap_in(staging / "host", final, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "results"


def _swap_in(new: Path, final: Path, scratch: Path) -> None:
    """Two renames: `final` is always either the old copy or the new one, never a mix."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        final.rename(scratch / "previous")
    new.rename(final)


# ---- all hosts ----

def run_hosts(plan: Plan) -> list[HostOutcome]:
    """Every host at once, one thread each (each has its own paths and tag, so its commands
    differ, which a Fabric Group's one-command-for-all cannot express). Never raises for a host."""
    from mobilenet import logs
    logs.setup(plan.build_dir / "logs", "remote-bench", plan.quiet)
    digest = requirements_digest(REPO_ROOT)
    with tempfile.TemporaryDirectory(prefix="mobilenet-remote-") as tmp:
        source = write_source_archive(REPO_ROOT, Path(tmp) / SOURCE_ARCHIVE)
        log.info("remote-bench: project archive of %.0f KiB to %d host(s): %s", source.stat().st_size / 1024,
                 len(plan.hosts), ", ".join(h.spec for h in plan.hosts))
        with ThreadPoolExecutor(max_workers=len(plan.hosts)) as pool:
            futures = [pool.submit(bench_host, host, plan, source, digest) for host in plan.hosts]
            outcomes = [future.result() for future in futures]
    for outcome in outcomes:
        if outcome.ok:
            log.info("%s: ok in %.0f s -> %s", outcome.host, outcome.seconds, outcome.results_dir)
        else:
            kept = f" (its logs and results: {outcome.results_dir.parent})" if outcome.results_dir else ""
            log.error("%s: FAILED after %.0f s, %s%s", outcome.host, outcome.seconds, outcome.error, kept)
    return outcomes

