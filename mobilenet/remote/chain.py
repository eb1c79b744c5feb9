"""Benchmark other machines over SSH: copy the project there, run the chain, fetch the results.

For each host, in parallel: upload the project's own files (never build/, .venv or photos:
each host makes those itself), create or reuse a virtual environment from requirements.txt,
run `invoke bench` there with the chain's MOBILENET_* settings (MOBILENET_ONLY narrows its
builds too), and fetch its build/results and build/logs into build/remote/<host>/, where
`invoke report` finds them.

Connecting (ssh config, keys, host keys checked as `ssh` checks them) and fetching what a
host sends back, which is not trusted with this machine, are ssh.py's, shared with device mode.
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

from mobilenet.remote import ssh
from mobilenet.remote.ssh import HOST_NAME, Access, Host, RemoteError, parse_hosts
from mobilenet.settings import REPO_ROOT, Settings, host_env

log = logging.getLogger("mobilenet.remote.chain")

# Relative remote paths are under the login's home (where SSH sessions and SFTP start).
# {host} keeps two aliases of one machine (or two users on it) from sharing a build folder.
DEFAULT_REMOTE_DIR = "mobilenet-bench/{host}"
DEFAULT_REMOTE_PYTHON = "python3"
VENV_MARKER = ".mobilenet-requirements.sha256"
SOURCE_ARCHIVE = ".mobilenet-source.tar.gz"

# What comes back from a host: the regular files of its build/results and build/logs, with
# plain names (ssh.FETCHABLE_NAME), within these limits; a full run sends a few MiB.
FETCHED_FOLDERS = ("results", "logs")
MAX_FETCH_FILES = 10_000
MAX_FETCH_BYTES = 1 << 30

ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


@dataclass(frozen=True)
class Plan:
    hosts: tuple[Host, ...]
    env: dict  # MOBILENET_* for every host; the tag is added per host
    tag: str  # may contain {host}
    remote_dir: str  # may contain {host}
    remote_venv: str | None  # an existing venv to use as it is; None: <remote_dir>/.venv, managed
    remote_python: str  # makes the managed venv
    access: Access  # the ssh config, key and host-key policy every host is reached with
    build_dir: Path  # local: results land in build_dir/remote/<name>/
    quiet: bool = False

    def local_dir(self, host: Host) -> Path:
        # parse_hosts already refuses such names; this folder is replaced whole, so check again.
        if not HOST_NAME.fullmatch(host.name):
            raise RemoteError(f"host name {host.name!r} would leave {self.build_dir / 'remote'}")
        return self.build_dir / "remote" / host.name


@dataclass
class HostOutcome:
    host: str
    ok: bool
    results_dir: Path | None = None  # set whenever results came back, even from a failed chain
    error: str | None = None  # "<stage>: <reason>"
    seconds: float = 0.0


# ---- planning (local, before any connection) ----

def chain_env(options: dict, environ=os.environ) -> dict[str, str]:
    """MOBILENET_* for the hosts: the settings the schema marks for hosts, from this shell and
    then the task's options, each validated here (a typo fails before any host is contacted)."""
    for name in environ:
        if name.startswith("MOBILENET_") and not ENV_NAME.fullmatch(name):
            raise ValueError(f"environment variable {name!r} is not a valid name for the hosts' shell "
                             "(A-Z, 0-9, _): unset it")
    env = host_env(options, environ)
    # Hosts print only warnings and errors: their output is shown when they fail, and
    # the full story is in build/remote/<host>/logs.
    env["MOBILENET_QUIET"] = "1"
    return env


def make_plan(hosts: str, options: dict, *, tag=None, remote_dir=None, remote_venv=None,
              remote_python=None, identity=None, ssh_config=None, build_dir: Path | None = None,
              accept_new_host_keys: bool = False, environ=os.environ) -> Plan:
    parsed = parse_hosts(hosts)
    if tag and len(parsed) > 1 and "{host}" not in tag:
        raise ValueError("--tag: with several hosts, include {host} (e.g. '{host}-py311') "
                         "so their results stay apart in the report")
    access = Access.checked(ssh_config, identity, accept_new_host_keys)
    settings = Settings()
    return Plan(hosts=parsed, env=chain_env(options, environ), tag=tag or "{host}",
                remote_dir=remote_dir or DEFAULT_REMOTE_DIR, remote_venv=remote_venv,
                remote_python=remote_python or DEFAULT_REMOTE_PYTHON, access=access,
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

def _env_prefix(env: dict) -> str:
    # Quoted here, names and values: Fabric's own env= passes values unquoted, --only globs
    # must not expand, and a name is text from this machine's environment too.
    bad = [name for name in env if not ENV_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"not a variable name for the hosts' shell: {bad[0]!r}")
    return "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))


def _venv_command(venv: str, python: str, project: str, digest: str) -> str:
    """Reuse the venv while requirements.txt is unchanged; otherwise (re)install it."""
    q = shlex.quote
    marker = q(f"{venv}/{VENV_MARKER}")
    return (f'if [ "$(cat {marker} 2>/dev/null)" != {digest} ]; then '
            f"{q(python)} -m venv {q(venv)} && "
            f"{q(venv + '/bin/python')} -m pip install --quiet -r {q(project + '/requirements.txt')} && "
            f"echo {digest} > {marker}; fi")


def bench_host(host: Host, plan: Plan, source: Path, digest: str) -> HostOutcome:
    """Everything for one host; any failure becomes this host's outcome, never an exception."""
    started = time.monotonic()
    q = shlex.quote
    errors, results_dir, stage = [], None, "connect"
    cxn = None
    try:
        cxn = ssh.connect(host, plan.access)
        cxn.open()
        # The chain can run quietly for many minutes; keep NAT and firewalls from dropping us.
        cxn.transport.set_keepalive(30)
        home = ssh.run(cxn, "pwd").strip()

        stage = "copy project"
        # Absolute from here on, so that SFTP and every later command agree.
        project = posixpath.join(home, ssh.remote_path(plan.remote_dir, host))
        project = ssh.run(cxn, f"mkdir -p {q(project)} && cd {q(project)} && pwd").strip()
        log.info("%s: copying the project to %s:%s", host.name, host.spec, project)
        cxn.put(str(source), f"{project}/{SOURCE_ARCHIVE}")
        # results/ and logs/ exist from here on, so fetching never fails for want of them.
        ssh.run(cxn, f"cd {q(project)} && tar xzf {SOURCE_ARCHIVE} && rm -f {SOURCE_ARCHIVE} "
                     f"&& mkdir -p build/results build/logs")

        stage = "virtual environment"
        if plan.remote_venv:
            venv = posixpath.join(home, ssh.remote_path(plan.remote_venv, host))
            ssh.require_venv(cxn, venv)
        else:
            venv = f"{project}/.venv"
            log.info("%s: virtual environment %s (installed only when requirements.txt changed)",
                     host.name, venv)
            ssh.run(cxn, _venv_command(venv, plan.remote_python, project, digest))

        stage = "benchmark"
        env = {**plan.env, "MOBILENET_TAG": plan.tag.replace("{host}", host.name)}
        log.info("%s: running invoke bench", host.name)
        try:
            # `python -m invoke`: a venv's bin/invoke script breaks if the venv was ever moved.
            ssh.run(cxn, f"cd {q(project)} && {_env_prefix(env)} {q(venv + '/bin/python')} -m invoke bench")
        except Exception as exc:  # fetch anyway: a FAILED variant is a result, and the logs explain
            errors.append(f"benchmark: {ssh.describe(exc)}")

        stage = "fetch results"
        results_dir = fetch(cxn, project, plan.local_dir(host), plan.build_dir / "tmp")
    except Exception as exc:  # one host's trouble must not stop the others
        errors.append(f"{stage}: {ssh.describe(exc)}")
    finally:
        if cxn is not None:
            ssh.close(cxn)
    return HostOutcome(host.name, ok=not errors, results_dir=results_dir,
                       error="; ".join(errors) or None, seconds=time.monotonic() - started)


def fetch(cxn, project: str, final: Path, tmp_root: Path, *, max_files: int = MAX_FETCH_FILES,
          max_bytes: int = MAX_FETCH_BYTES) -> Path:
    """build/results and build/logs of the host into `final`, replacing the previous copy whole.

    Over SFTP, file by file: the host only answers which regular files there are, and this
    side names the local paths; an archive from it could hold ../, absolute paths or links.
    Staged outside build/remote so that `invoke report` never sees half a copy.
    """
    tmp_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"remote-{final.name}.", dir=tmp_root))
    try:
        sftp = ssh.open_sftp(cxn)
        budget = ssh.FetchBudget(max_files, max_bytes)
        for folder in FETCHED_FOLDERS:
            ssh.fetch_folder(sftp, f"{project}/build/{folder}", staging / "host" / folder, budget, final.name)
        ssh.swap_in(staging / "host", final, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "results"


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

