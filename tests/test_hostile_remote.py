"""remote-bench against a host that lies: what it sends back never lands outside
build/remote/<host>/, its names never reach a shell unquoted, and --hosts cannot name a folder
outside build/remote/.

`HostileHost` stands in for a compromised machine. However the fetch asks for the results
(an archive made there, or a listing and the files over SFTP) it answers with what an
attacker chose; the assertions are about this machine's disk only.
"""
from __future__ import annotations

import dataclasses
import io
import os
import stat
import subprocess
import tarfile
import types
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from mobilenet.remote import chain as remote
from mobilenet.remote import ssh

PROJECT = "/home/pi/mobilenet-bench/pi"
GOOD = b'{"variant": "fp32-eager"}'


@dataclass(frozen=True)
class Entry:
    """One thing in the host's build/ folder, as `tar` would archive it."""
    path: str  # relative to build/
    kind: str = "file"  # file, dir, symlink, hardlink
    data: bytes = b""
    link: str = ""


class _FakeSFTP:
    """Answers listdir_attr/open from the entries: names come back exactly as crafted."""

    def __init__(self, entries: list[Entry], claimed_size: int | None):
        self.entries, self.claimed_size = entries, claimed_size

    def get_channel(self):
        return types.SimpleNamespace(settimeout=lambda seconds: None)

    def listdir_attr(self, path: str):
        folder = path[len(f"{PROJECT}/build/"):]
        listing = []
        for entry in self.entries:
            if entry.path.startswith(folder + "/"):
                attr = paramiko.SFTPAttributes()
                attr.filename = entry.path[len(folder) + 1:]
                attr.st_mode = {"file": stat.S_IFREG, "hardlink": stat.S_IFREG, "dir": stat.S_IFDIR,
                                "symlink": stat.S_IFLNK}[entry.kind] | 0o644
                attr.st_size = len(entry.data) if self.claimed_size is None else self.claimed_size
                listing.append(attr)
        return listing

    def open(self, path: str, mode: str = "r"):
        relative = path[len(f"{PROJECT}/build/"):]
        return io.BytesIO(next(e.data for e in self.entries if e.path == relative))


class HostileHost:
    """A fake Fabric connection to a compromised host."""

    def __init__(self, entries: list[Entry], claimed_size: int | None = None):
        self.entries, self.claimed_size = entries, claimed_size

    def run(self, command: str, **kwargs):  # e.g. `tar czf` there: the archive is ours to craft
        return types.SimpleNamespace(stdout="", stderr="", exited=0)

    def get(self, remote_path: str, local_path: str):
        with tarfile.open(local_path, "w:gz") as tar:
            for entry in self.entries:
                info = tarfile.TarInfo(entry.path)
                info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                             "hardlink": tarfile.LNKTYPE}[entry.kind]
                info.mode = 0o755 if entry.kind == "dir" else 0o644
                info.linkname = entry.link
                info.size = len(entry.data) if entry.kind == "file" else 0
                tar.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)

    def sftp(self):
        return _FakeSFTP(self.entries, self.claimed_size)


def _realpath_overflow(depth_to_escape: int, staging_len: int) -> list[Entry]:
    """CVE-2025-4517, which filter="data" lets through on Python < 3.11.13: symlinks whose
    expansion passes PATH_MAX, so that os.path.realpath stops resolving and judges the rest
    lexically, while the kernel follows every link. `escape` then points `depth_to_escape`
    folders above the extraction folder, and `escape/pwned.txt` is written there."""
    steps = "abcdefghijklmnop"
    dest_len = staging_len + len("/host")
    component = "d" * ((os.pathconf("/", "PC_PATH_MAX") - dest_len) // (len(steps) + 1))
    entries, path, step_path = [], "", ""
    for step in steps:
        entries.append(Entry(os.path.join(path, component), "dir"))
        entries.append(Entry(os.path.join(path, step), "symlink", link=component))
        path, step_path = os.path.join(path, component), os.path.join(step_path, step)
    long_link = os.path.join(step_path, "l" * 254)
    entries.append(Entry(long_link, "symlink", link=os.path.join(*[".."] * len(steps))))
    entries.append(Entry("escape", "symlink", link=os.path.join(long_link, *[".."] * depth_to_escape)))
    entries.append(Entry("escape/pwned.txt", data=b"written by the host"))
    return entries


HOSTILE = {
    "dot-dot": [Entry("results/../../../../pwned.txt", data=b"x")],
    "absolute": [Entry("results/{tmp}/pwned.txt", data=b"x"), Entry("{tmp}/pwned.txt", data=b"x")],  # {tmp}: tmp_path
    "symlink-to-outside-file": [Entry("results/link.json", "symlink", link="/etc/passwd")],
    "symlink-to-outside-folder": [Entry("logs/out", "symlink", link="../../../..")],
    "hard-link": [Entry("results/hard.json", "hardlink", link="/etc/passwd")],
    "through-an-earlier-symlink": [Entry("results/up", "symlink", link="../../.."),
                                   Entry("results/up/pwned.txt", data=b"x")],
    "hidden-and-odd-names": [Entry("results/.bashrc", data=b"x"), Entry("results/a b;rm -rf ~", data=b"x"),
                             Entry("results/-rf", data=b"x")],
    "subfolder": [Entry("results/sub", "dir"), Entry("results/sub/x.json", data=b"x")],
}


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_fetch_writes_only_plain_files_inside_the_host_folder(tmp_path, case):
    build = tmp_path / "build"
    final = build / "remote" / "pi"
    host = HostileHost([Entry("results", "dir"), Entry("logs", "dir"),
                        Entry("results/fp32-eager@1t.json", data=GOOD), Entry("logs/bench.log", data=b"log"),
                        *(dataclasses.replace(e, path=e.path.format(tmp=tmp_path)) for e in HOSTILE[case])])
    remote.fetch(host, PROJECT, final, build / "tmp")
    assert _files_under(tmp_path) - {f"build/remote/pi/{p}" for p in _files_under(final)} == {
        "build", "build/tmp", "build/remote", "build/remote/pi"}, "nothing outside build/remote/pi"
    # Inside, only copies: a hard link on the host is just a file there, its content copied here.
    inside = _files_under(final)
    assert inside - {"results/hard.json"} == {"results", "logs", "results/fp32-eager@1t.json", "logs/bench.log"}
    assert all(not (final / p).is_symlink() and ((final / p).is_dir() or (final / p).stat().st_nlink == 1)
               for p in inside)
    assert (final / "results" / "fp32-eager@1t.json").read_bytes() == GOOD


def test_fetch_survives_the_realpath_overflow_that_beats_filter_data(tmp_path):
    """The verified escape: on this machine's Python, tarfile's data filter let this write
    build/pwned.txt, two folders above where results are staged."""
    build = tmp_path / "build"
    staging_len = len(str(build / "tmp" / "remote-pi.XXXXXXXX"))  # mkdtemp adds 8 characters
    host = HostileHost([Entry("results", "dir"), Entry("logs", "dir"),
                        Entry("results/fp32-eager@1t.json", data=GOOD), *_realpath_overflow(3, staging_len)])
    try:
        remote.fetch(host, PROJECT, build / "remote" / "pi", build / "tmp")
    finally:
        assert not (build / "pwned.txt").exists(), "the host wrote outside build/remote/pi"
    assert _files_under(build / "remote" / "pi") == {"results", "logs", "results/fp32-eager@1t.json"}


@pytest.mark.parametrize("limits, entries, claimed, message", [
    (dict(max_files=2), [Entry(f"results/{i}.json", data=b"{}") for i in range(3)], None, "more than 2"),
    (dict(max_bytes=1000), [Entry("logs/huge.log", data=b"x" * 1001)], None, "exceed 1000 bytes"),
    (dict(max_bytes=1000), [Entry("logs/huge.log", data=b"x" * 5000)], 10, "exceed 1000 bytes"),  # lies about size
])
def test_fetch_caps_what_a_host_can_send(tmp_path, limits, entries, claimed, message):
    final = tmp_path / "build" / "remote" / "pi"
    (final / "results").mkdir(parents=True)
    (final / "results" / "old.json").write_text("{}")
    with pytest.raises(ssh.RemoteError, match=message):
        remote.fetch(HostileHost([Entry("results", "dir"), Entry("logs", "dir"), *entries], claimed),
                     PROJECT, final, tmp_path / "build" / "tmp", **limits)
    assert _files_under(final) == {"results", "results/old.json"}, "the previous copy is kept whole"
    assert not list((tmp_path / "build" / "tmp").iterdir()), "staging is cleaned up"


# ---- what goes into the hosts' shell

@pytest.mark.parametrize("value", ["onnx-*,int8-*", "a b", "$(touch pwned)", "`touch pwned`", "x'; touch pwned; '",
                                   "line\nbreak", "", "--help"])
def test_env_values_reach_the_host_unchanged(tmp_path, value):
    command = remote._env_prefix({"MOBILENET_ONLY": value, "MOBILENET_QUIET": "1"})
    printed = subprocess.run(["sh", "-c", command + " sh -c 'printf %s \"$MOBILENET_ONLY\"'"], cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout
    assert printed == value
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["MOBILENET_X$(touch pwned)", "MOBILENET_A;touch pwned;B", "MOBILENET_ONLY X",
                                  "MOBILENET_x", "MOBILENET_1=2"])
def test_env_names_that_are_not_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="not a valid name|not a variable name"):
        remote.chain_env({}, {name: "1"})
    with pytest.raises(ValueError, match="not a variable name"):
        command = remote._env_prefix({name: "1"})
        subprocess.run(["sh", "-c", command + " true"], cwd=tmp_path, capture_output=True)
    assert not (tmp_path / "pwned").exists()


# ---- --hosts cannot name a folder outside build/remote/

@pytest.mark.parametrize("spec", [".", "..", "user@..", "../build", "a/b", "/", "/etc", "pi@host/../..", ".hidden",
                                  "-oProxyCommand=x", "pi@", "a\\b"])
def test_hosts_that_are_paths_are_refused(spec):
    with pytest.raises(ValueError, match=r"--hosts: .* is not a host"):
        ssh.parse_hosts(spec)


@pytest.mark.parametrize("name", [".", "..", "../x", ""])
def test_a_host_folder_never_leaves_build_remote(tmp_path, name):
    plan = remote.make_plan("pi", {}, build_dir=tmp_path / "build", environ={})
    with pytest.raises(ssh.RemoteError, match="would leave"):
        plan.local_dir(ssh.Host(name, name))
