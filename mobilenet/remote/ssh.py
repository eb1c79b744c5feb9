"""The SSH plumbing chain mode and device mode share: hosts as --hosts names them, a connection
that checks host keys as `ssh` does, commands run there, and files fetched from a host that is
not trusted with this machine.

Hosts are reached with Fabric, so ~/.ssh/config (Host aliases, User, Port, IdentityFile,
ProxyJump) applies as it does for `ssh`. Authentication is by key or agent only: nothing
here asks for, takes or stores a password. Host keys are checked as `ssh` checks them
(known_hosts, UserKnownHostsFile, StrictHostKeyChecking), every ProxyJump hop included.

What a host sends back is copied file by file over SFTP, plain files with plain names only,
within limits, into a folder chosen here.
"""
from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import fabric
import paramiko
from paramiko.ssh_exception import (
    AuthenticationException,
    BadHostKeyException,
    NoValidConnectionsError,
)

log = logging.getLogger("mobilenet.remote.ssh")

# A folder name under build/remote/: no '.', '..', hidden or option-like names.
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# A file name fetched from a host (results are <variant>@<N>t.json, logs <step>.log).
FETCHABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+=-]*")
FETCH_READ_TIMEOUT_S = 120.0  # a host that stops answering mid-file

# Where ssh looks when the ssh config does not say (UserKnownHostsFile, GlobalKnownHostsFile).
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
DEFAULT_GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"


class RemoteError(RuntimeError):
    pass


class HostKeyError(RemoteError):
    """An unknown or changed host key: the host is not who known_hosts says it is, or not known."""


@dataclass(frozen=True)
class Host:
    spec: str  # as given to --hosts: [user@]alias[:port]
    name: str  # the alias, safe as a folder name: the tag and build/remote/<name>


@dataclass(frozen=True)
class Access:
    """How every host is reached: the ssh config and key to use, and what to do with new host keys."""
    ssh_config: str | None = None  # None: ~/.ssh/config, /etc/ssh/ssh_config
    identity: str | None = None
    accept_new_host_keys: bool = False  # like ssh's StrictHostKeyChecking=accept-new

    @classmethod
    def checked(cls, ssh_config: str | None = None, identity: str | None = None,
                accept_new_host_keys: bool = False) -> Access:
        """From the task's options: a missing file fails here, before any host is contacted."""
        for label, path in (("--identity", identity), ("--ssh-config", ssh_config)):
            if path and not Path(path).expanduser().is_file():
                raise ValueError(f"{label}: no such file {path}")
        return cls(ssh_config=str(Path(ssh_config).expanduser()) if ssh_config else None,
                   identity=str(Path(identity).expanduser()) if identity else None,
                   accept_new_host_keys=bool(accept_new_host_keys))


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


def remote_path(path: str, host: Host) -> str:
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


def _check_host_keys(cxn: fabric.Connection, access: Access) -> None:
    """Give `cxn` a client that checks host keys as `ssh` would with this host's ssh config."""
    user_files = [f for f in cxn.ssh_config.get("userknownhostsfile", DEFAULT_KNOWN_HOSTS).split()
                  if f.lower() != "none"]
    global_files = [f for f in cxn.ssh_config.get("globalknownhostsfile", DEFAULT_GLOBAL_KNOWN_HOSTS).split()
                    if f.lower() != "none"]
    client = _CheckedClient(cxn, user_files + global_files)
    # `ssh -o` on the command line wins over the config file; so does --accept-new-host-keys.
    # 'no' is taken as accept-new: a changed key is refused here even then.
    strict = cxn.ssh_config.get("stricthostkeychecking", "ask").lower()
    accept_new = access.accept_new_host_keys or strict in {"accept-new", "no", "off"}
    client.set_missing_host_key_policy(_HostKeyPolicy(cxn, user_files, accept_new, access.ssh_config))
    cxn.client = client


# ---- the connection

def connect(host: Host, access: Access, connect_timeout: int = 15) -> fabric.Connection:
    """A connection to `host`, not yet open, whose every hop checks host keys as `ssh` does."""
    config = fabric.Config(runtime_ssh_path=access.ssh_config)  # None: ~/.ssh/config, /etc/ssh/ssh_config
    config.timeouts.connect = config.timeouts.connect or connect_timeout  # a ConnectTimeout in ssh config wins
    if access.identity:  # in the config, not the connection: ProxyJump hops get a copy of the config
        config.connect_kwargs.key_filename = [access.identity]
    cxn = fabric.Connection(host.spec, config=config)
    for hop in _hops(cxn):
        _check_host_keys(hop, access)
    return cxn


def _hops(cxn: fabric.Connection) -> list[fabric.Connection]:
    """The host's connection, then each ProxyJump hop in front of it (a ProxyCommand is no
    SSH connection of ours: the host's own key is still checked through it)."""
    chain = []
    while isinstance(cxn, fabric.Connection):
        chain.append(cxn)
        cxn = cxn.gateway
    return chain


def close(cxn: fabric.Connection) -> None:
    """Fabric closes only a connection that opened, and never its hops."""
    cxn.close()
    for hop in _hops(cxn):
        hop.client.close()


def run(cxn, command: str) -> str:
    # in_stream=False: this is one of several threads and none of them may read our stdin.
    return cxn.run(command, hide=True, in_stream=False).stdout


def require_venv(cxn, venv: str) -> None:
    """Fail, saying so, unless `venv` (--remote-venv) is a virtual environment on the host."""
    q = shlex.quote
    missing = f"no {venv}/bin/python: --remote-venv must be a virtual environment"
    run(cxn, f"test -x {q(venv + '/bin/python')} || {{ echo {q(missing)} >&2; exit 1; }}")


def describe(exc: BaseException, lines: int = 6) -> str:
    """A host's failure in one line: the last lines a failed command printed, or why it could not connect."""
    if isinstance(exc, NoValidConnectionsError):  # its own text reads "[Errno None] Unable to connect"
        return "; ".join(f"{address[0]}:{address[1]}: {error.strerror or error}"
                         for address, error in exc.errors.items())
    if isinstance(exc, AuthenticationException):
        return (f"authentication failed ({exc}); keys only: --identity FILE, an IdentityFile in "
                "~/.ssh/config, or ssh-agent")
    result = getattr(exc, "result", None)  # invoke's UnexpectedExit: a command failed there
    if result is not None:
        output = (result.stderr.strip() or result.stdout.strip()).splitlines()
        return f"exit code {result.exited}: " + " | ".join(output[-lines:])
    return str(exc) or exc.__class__.__name__


# ---- fetching from a host that is not trusted with this machine

def open_sftp(cxn):
    sftp = cxn.sftp()
    sftp.get_channel().settimeout(FETCH_READ_TIMEOUT_S)
    return sftp


class FetchBudget:
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


def _copy(sftp, remote: str, local: Path, budget: FetchBudget) -> None:
    budget.take_file()
    # "x": never through anything already at that path (the staging folder is new anyway).
    with sftp.open(remote, "rb") as source, open(local, "xb") as target:
        while chunk := source.read(1 << 16):
            budget.take_bytes(len(chunk))
            target.write(chunk)


def fetch_file(sftp, remote: str, local: Path, budget: FetchBudget) -> None:
    """One file this side names, if it is a regular file there; FileNotFoundError if it is not there."""
    attributes = sftp.lstat(remote)  # lstat: a link shows as a link
    if attributes.st_mode is None or not stat.S_ISREG(attributes.st_mode):
        raise RemoteError(f"{remote} on the host is not a regular file; not fetched")
    local.parent.mkdir(parents=True, exist_ok=True)
    _copy(sftp, remote, local, budget)


_FILE_KINDS = {"l": "a symbolic link", "d": "a folder", "p": "a pipe", "s": "a socket", "c": "a device",
               "b": "a device"}


def fetch_folder(sftp, remote_dir: str, local_dir: Path, budget: FetchBudget, host_name: str) -> None:
    """The regular files with plain names of one folder there into the new folder `local_dir`;
    anything else is named in a warning and left there."""
    listing = sftp.listdir_attr(remote_dir)  # lstat: a link shows as a link
    local_dir.mkdir(parents=True)
    for entry in listing:
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
        _copy(sftp, f"{remote_dir}/{name}", local_dir / name, budget)


def swap_in(new: Path, final: Path, scratch: Path) -> None:
    """Two renames: `final` is always either the old copy or the new one, never a mix."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        final.rename(scratch / "previous")
    new.rename(final)
