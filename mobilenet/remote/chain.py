"""Benchmark other machines over SSH: copy the project there, run the chain, fetch the results.

For each host, in parallel: upload the project's own files (never build/, .venv or photos:
each host makes those itself), create or reuse a virtual environment from requirements.txt,
run `invoke bench` there with the chain's MOBILENET_* settings (MOBILENET_ONLY narrows its
builds too), and fetch its build/results and build/logs into build/remote/<host>/, where
`invoke report` finds them.

Hosts are reached with Fabric, so ~/.ssh/config (Host aliases, User, Port, IdentityFile,
ProxyJump) applies as it does for `ssh`. Authentication is by key or agent only: nothing
here asks for, takes or stores a password. Host keys are checked as `ssh` checks them
(known_hosts, UserKnownHostsFile, StrictHostKeyChecking), every ProxyJump hop included.

A host is not trusted with this machine: what it sends back is copied file by file, plain
files with plain names only, into a folder chosen here.
"""
from __future__ import annotations

import getpass
import hashlib
import logging
import os
import posixpath
import re
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import fabric
import paramiko
from invoke.exceptions import UnexpectedExit
from paramiko.ssh_exception import (
    AuthenticationException,
    BadHostKeyException,
    NoValidConnectionsError,
)

from mobilenet.settings import REPO_ROOT, Settings, host_env

log = logging.getLogger("mobilenet.remote.chain")

# Relative remote paths are under the login's home (where SSH sessions and SFTP start).
# {host} keeps two aliases of one machine (or two users on it) from sharing a build folder.
DEFAULT_REMOTE_DIR = "mobilenet-bench/{host}"
DEFAULT_REMOTE_PYTHON = "python3"
VENV_MARKER = ".mobilenet-requirements.sha256"
SOURCE_ARCHIVE = ".mobilenet-source.tar.gz"

# What comes back from a host: the regular files of its build/results and build/logs, with
# plain names (results are <variant>@<N>t.json, logs <step>.log), within these limits; a full
# run sends a few MiB.
FETCHED_FOLDERS = ("results", "logs")
FETCHABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+=-]*")
MAX_FETCH_FILES = 10_000
MAX_FETCH_BYTES = 1 << 30
FETCH_READ_TIMEOUT_S = 120.0  # a host that stops answering mid-file

# Where ssh looks when the ssh config does not say (UserKnownHostsFile, GlobalKnownHostsFile).
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
DEFAULT_GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"

# A folder name under build/remote/: no '.', '..', hidden or option-like names.
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")



class RemoteError(RuntimeError):
    pass


class HostKeyError(RemoteError):
    """An unknown or changed host key: the host is not who known_hosts says it is, or not known."""


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
    accept_new_host_keys: bool = False  # like ssh's StrictHostKeyChecking=accept-new

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

def parse_hosts(spec: str) -> tuple[Host, ...]:
    hosts = []
    for item in (part.strip() for part in (spec or "").split(",")):
        if item:
            alias = item.rsplit("@", 1)[-1]
            name = re.sub(r"[^A-Za-z0-9._-]", "_", alias)  # user@h:22 -> h_22
            # The name becomes build/remote/<name>, which is replaced whole: '.', '..' or a
            # path would replace something else.
            if "/" in alias or "\\" in alias or not HOST_NAME.fullmatch(name):
                raise ValueError(f"--hosts: {item!r} is not a host: give [user@]host[:port] or an "
                                 "~/.ssh/config alias (letters, digits, '.', '-', '_'; not starting with '.')")
            hosts.append(Host(item, name))
    if not hosts:
        raise ValueError("--hosts: give at least one host, e.g. --hosts pi@raspberrypi,user@nuc")
    names = [h.name for h in hosts]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--hosts: {', '.join(twice)} given twice; their results would share "
                         "build/remote/<host> (use an ~/.ssh/config alias per target)")
    return tuple(hosts)


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
    for label, path in (("--identity", identity), ("--ssh-config", ssh_config)):
        if path and not Path(path).expanduser().is_file():
            raise ValueError(f"{label}: no such file {path}")
    settings = Settings()
    return Plan(hosts=parsed, env=chain_env(options, environ), tag=tag or "{host}",
                remote_dir=remote_dir or DEFAULT_REMOTE_DIR, remote_venv=remote_venv,
                remote_python=remote_python or DEFAULT_REMOTE_PYTHON,
                identity=str(Path(identity).expanduser()) if identity else None,
                ssh_config=str(Path(ssh_config).expanduser()) if ssh_config else None,
                build_dir=Path(build_dir or settings.build_dir), quiet=settings.quiet,
                accept_new_host_keys=bool(accept_new_host_keys))


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


# ---- host keys: as `ssh` checks them, where Fabric would accept any key it has not seen

def _known_hosts_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


def _expand_path(path: str) -> str:
    """The ssh config's %d (home) and %u (local user) tokens, and ~."""
    path = path.replace("%d", str(Path.home())).replace("%u", getpass.getuser())
    return os.path.expanduser(path)


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """What to do with a host whose name is in no known_hosts file: refuse it, saying how to
    trust it, or (accept-new) record its key in the first UserKnownHostsFile and go on.

    A known host whose key differs never gets here: paramiko refuses it on its own.
    """
    _recording = threading.Lock()  # hosts connect in parallel and may share the file

    def __init__(self, cxn: fabric.Connection, user_files: list[str], accept_new: bool, ssh_config: str | None):
        self.cxn, self.user_files, self.accept_new, self.ssh_config = cxn, user_files, accept_new, ssh_config

    def missing_host_key(self, client, hostname, key):
        if not self.accept_new:
            raise HostKeyError(self._how_to_trust(hostname, key))
        if self.user_files:
            path = Path(_expand_path(self.user_files[0]))
            self._record(path, hostname, key)
            where = f"recorded in {path}"
        else:
            where = "accepted for this connection only (UserKnownHostsFile none)"
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("%s: new host key %s %s %s", self.cxn.original_host, key.get_name(), key.fingerprint, where)

    def _record(self, path: Path, hostname: str, key) -> None:
        with self._recording:
            recorded = paramiko.HostKeys()
            if path.is_file():
                recorded.load(str(path))
            earlier = (recorded.lookup(hostname) or {}).get(key.get_name())
            if earlier is not None and earlier != key:  # another connection recorded it meanwhile
                raise HostKeyError(_changed_key_message(self.cxn.original_host, hostname, key, earlier, path))
            if earlier is None:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                needs_newline = path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
                with open(path, "a") as fh:
                    fh.write(("\n" if needs_newline else "") + f"{hostname} {key.get_name()} {key.get_base64()}\n")

    def _how_to_trust(self, hostname: str, key) -> str:
        cxn = self.cxn
        where = " ".join(self.user_files) or "no known_hosts file (UserKnownHostsFile none)"
        target = self.user_files[0] if self.user_files else "~/.ssh/known_hosts"
        ssh_f = f"-F {shlex.quote(self.ssh_config)} " if self.ssh_config else ""
        return (f"unknown host key for {cxn.original_host} ({hostname}, {key.get_name()} {key.fingerprint}): "
                f"it is not in {where}. Check that fingerprint with the host's owner, then trust it with "
                f"`ssh-keyscan -p {cxn.port} {cxn.host} >> {target}` or by answering yes to "
                f"`ssh {ssh_f}-p {cxn.port} {cxn.user}@{cxn.original_host}` once; "
                "or rerun with --accept-new-host-keys to record new hosts' keys (a changed key is still refused)")


def _changed_key_message(alias: str, hostname: str, got, expected, known_hosts) -> str:
    return (f"the host key of {alias} ({hostname}) has CHANGED: known_hosts has {expected.get_name()} "
            f"{expected.fingerprint}, the host sent {got.get_name()} {got.fingerprint}. Either it was "
            "reinstalled or someone is intercepting the connection: ask its owner, and only then remove "
            f"the old key with `ssh-keygen -R '{hostname}' -f {known_hosts}`")


class _CheckedClient(paramiko.SSHClient):
    """Fabric's SSHClient with the host keys `ssh` would use for this host, and a changed key
    explained rather than reported as paramiko's BadHostKeyException."""

    def __init__(self, cxn: fabric.Connection, known_hosts_files: list[str]):
        super().__init__()
        self.cxn, self.known_hosts_files = cxn, known_hosts_files
        for path in map(_expand_path, known_hosts_files):
            if Path(path).is_file():
                self.load_system_host_keys(path)

    def connect(self, hostname, port=22, *args, **kwargs):
        try:
            return super().connect(hostname, port, *args, **kwargs)
        except BadHostKeyException as exc:
            name = _known_hosts_name(hostname, port)
            holder = next((f for f in self.known_hosts_files if Path(_expand_path(f)).is_file()
                           and paramiko.HostKeys(_expand_path(f)).lookup(name)), "~/.ssh/known_hosts")
            raise HostKeyError(_changed_key_message(self.cxn.original_host, name, exc.key,
                                                    exc.expected_key, holder)) from exc


def _check_host_keys(cxn: fabric.Connection, plan: Plan) -> None:
    """Give `cxn` a client that checks host keys as `ssh` would with this host's ssh config."""
    user_files = [f for f in cxn.ssh_config.get("userknownhostsfile", DEFAULT_KNOWN_HOSTS).split()
                  if f.lower() != "none"]
    global_files = [f for f in cxn.ssh_config.get("globalknownhostsfile", DEFAULT_GLOBAL_KNOWN_HOSTS).split()
                    if f.lower() != "none"]
    client = _CheckedClient(cxn, user_files + global_files)
    # `ssh -o` on the command line wins over the config file; so does --accept-new-host-keys.
    # 'no' is taken as accept-new: a changed key is refused here even then.
    strict = cxn.ssh_config.get("stricthostkeychecking", "ask").lower()
    accept_new = plan.accept_new_host_keys or strict in {"accept-new", "no", "off"}
    client.set_missing_host_key_policy(_HostKeyPolicy(cxn, user_files, accept_new, plan.ssh_config))
    cxn.client = client


def connect(host: Host, plan: Plan, connect_timeout: int = 15) -> fabric.Connection:
    config = fabric.Config(runtime_ssh_path=plan.ssh_config)  # None: ~/.ssh/config, /etc/ssh/ssh_config
    config.timeouts.connect = config.timeouts.connect or connect_timeout  # a ConnectTimeout in ssh config wins
    if plan.identity:  # in the config, not the connection: ProxyJump hops get a copy of the config
        config.connect_kwargs.key_filename = [plan.identity]
    cxn = fabric.Connection(host.spec, config=config)
    for hop in _hops(cxn):
        _check_host_keys(hop, plan)
    return cxn


def _hops(cxn: fabric.Connection) -> list[fabric.Connection]:
    """The host's connection, then each ProxyJump hop in front of it (a ProxyCommand is no
    SSH connection of ours: the host's own key is still checked through it)."""
    chain = []
    while isinstance(cxn, fabric.Connection):
        chain.append(cxn)
        cxn = cxn.gateway
    return chain


def _close(cxn: fabric.Connection) -> None:
    """Fabric closes only a connection that opened, and never its hops."""
    cxn.close()
    for hop in _hops(cxn):
        hop.client.close()


def _run(cxn, command: str) -> str:
    # in_stream=False: this is one of several threads and none of them may read our stdin.
    return cxn.run(command, hide=True, in_stream=False).stdout


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
            _close(cxn)
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
        sftp = cxn.sftp()
        sftp.get_channel().settimeout(FETCH_READ_TIMEOUT_S)
        budget = _FetchBudget(max_files, max_bytes)
        for folder in FETCHED_FOLDERS:
            _fetch_folder(sftp, f"{project}/build/{folder}", staging / "host" / folder, budget, final.name)
        _swap_in(staging / "host", final, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "results"


class _FetchBudget:
    """Caps on what one host may send: a full disk here is not its call."""

    def __init__(self, files: int, size: int):
        self.files, self.bytes, self.max_files, self.max_bytes = files, size, files, size

    def take_file(self) -> None:
        self.files -= 1
        if self.files < 0:
            raise RemoteError(f"the host has more than {self.max_files} results and log files; nothing fetched")

    def take_bytes(self, count: int) -> None:
        self.bytes -= count
        if self.bytes < 0:
            raise RemoteError(f"the host's results and logs exceed {self.max_bytes} bytes; nothing fetched")


_FILE_KINDS = {"l": "a symbolic link", "d": "a folder", "p": "a pipe", "s": "a socket", "c": "a device",
               "b": "a device"}


def _fetch_folder(sftp, remote_dir: str, local_dir: Path, budget: _FetchBudget, host_name: str) -> None:
    local_dir.mkdir(parents=True)
    for entry in sftp.listdir_attr(remote_dir):  # lstat: a link shows as a link
        name, mode = entry.filename, entry.st_mode
        if not FETCHABLE_NAME.fullmatch(name):
            problem = "not a plain file name"
        elif mode is None or not stat.S_ISREG(mode):
            problem = _FILE_KINDS.get(stat.filemode(mode or 0)[0], "not a regular file")
        else:
            problem = None
        if problem:
            log.warning("%s: not fetched: %r in %s: %s (only regular files are)", host_name, name,
                        remote_dir, problem)
            continue
        budget.take_file()
        # "x": never through anything already at that path (the staging folder is new anyway).
        with sftp.open(f"{remote_dir}/{name}", "rb") as source, open(local_dir / name, "xb") as target:
            while chunk := source.read(1 << 16):
                budget.take_bytes(len(chunk))
                target.write(chunk)


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

