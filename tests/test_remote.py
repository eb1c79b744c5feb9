"""remote-bench against a real OpenSSH server on 127.0.0.1, plus the pieces it is made of.

The server is this machine: two ~/.ssh/config aliases lead to it (two "hosts", each with its
own remote folder) and a third alias to a port where nothing listens. The hosts reuse this
venv (--remote-venv sys.prefix), so nothing is installed.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import REPO, WEIGHTS, requires_shared

from mobilenet.remote import chain as remote
from mobilenet.remote import ssh

SSHD = Path("/usr/sbin/sshd")
requires_sshd = pytest.mark.skipif(
    not SSHD.exists() or shutil.which("ssh-keygen") is None,
    reason="needs an OpenSSH server: apt-get install -y openssh-server (.ci/run installs it)")

# The eager reference plus one cheap variant: MOBILENET_ONLY narrows the hosts' builds to them.
ONLY = "int8-static-fbgemm"
TINY = {"MOBILENET_CALIB_COUNT": "4", "MOBILENET_EVAL_COUNT": "8", "MOBILENET_MIN_RUNS": "5",
        "MOBILENET_MIN_SECONDS": "0.1", "MOBILENET_WARMUP": "2"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """sshd -D on a free 127.0.0.1 port: key-only login for the current user, all state in tmp."""
    root = tmp_path_factory.mktemp("sshd")
    client_key = _keygen(root / "client_key")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port, refused_port = _free_port(), _free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1",
        f"HostKey {_keygen(root / 'host_key')}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",  # CI runs as root
        "StrictModes no",  # tmp folders' permissions would otherwise refuse the key
        "UsePAM no", "Subsystem sftp internal-sftp", "LogLevel VERBOSE", ""]))
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege-separation folder
    except PermissionError:
        pass  # not root: sshd then runs without privilege separation
    log = open(root / "sshd.log", "w")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}:\n{(root / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not listen on {port}:\n{(root / 'sshd.log').read_text()}")
            time.sleep(0.1)

    ssh_config = root / "ssh_config"
    user = getpass.getuser()
    # The server's key is known, as after `ssh-keyscan -p PORT 127.0.0.1 >> known_hosts`.
    key_type, key_base64 = (root / "host_key.pub").read_text().split()[:2]
    host_key_line = f"[127.0.0.1]:{port} {key_type} {key_base64}\n"
    (root / "known_hosts").write_text(host_key_line)
    ssh_config.write_text(
        f"Host bench-a bench-b\n    HostName 127.0.0.1\n    Port {port}\n    User {user}\n"
        f"    UserKnownHostsFile {root / 'known_hosts'}\n\n"
        f"Host bench-down\n    HostName 127.0.0.1\n    Port {refused_port}\n    User {user}\n"
        f"    UserKnownHostsFile {root / 'known_hosts'}\n    ConnectTimeout 5\n")
    yield {"ssh_config": ssh_config, "key": client_key, "log": root / "sshd.log", "port": port,
           "host_key_line": host_key_line, "user": user}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _remote_bench(sshd, build: Path, hosts: str, *options: str, timeout: int) -> tuple[int, str]:
    """`invoke remote-bench` as a user runs it; tiny chain settings come from MOBILENET_* as usual."""
    env = {**os.environ, **TINY, "MOBILENET_BUILD_DIR": str(build)}
    env.pop("MOBILENET_TAG", None)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "invoke", "remote-bench", "--mode", "chain", "--hosts", hosts, "--only", ONLY,
         "--ssh-config", str(sshd["ssh_config"]), "--identity", str(sshd["key"]), *options],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"exit {run.returncode} after {time.monotonic() - started:.0f} s\n{run.stdout}{run.stderr}")
    return run.returncode, run.stderr


@requires_shared
@pytest.mark.slow  # the whole chain runs on each host
@requires_sshd
def test_remote_bench_two_hosts_and_a_dead_one(sshd, image_server, tmp_path):
    build, hosts_root = tmp_path / "build", tmp_path / "hosts"
    code, log = _remote_bench(sshd, build, "bench-a,bench-b,bench-down",
                              "--remote-dir", f"{hosts_root}/{{host}}", "--remote-venv", sys.prefix,
                              "--weights", str(WEIGHTS), "--mirror", image_server.url, timeout=1200)

    # The dead host is named with its reason and fails the task...
    assert code != 0, log
    assert re.search(r"bench-down: FAILED .*connect: 127\.0\.0\.1:\d+: Connection refused", log), log
    assert "1 of 3 host(s) failed: bench-down" in log
    assert not (build / "remote" / "bench-down").exists()
    # ...and did not stop the others: both fetched, each tagged with its alias.
    for alias in ("bench-a", "bench-b"):
        assert f"{alias}: ok" in log
        data = [json.loads(p.read_text()) for p in (build / "remote" / alias / "results").glob("*.json")]
        assert {d["variant"] for d in data} == {"fp32-eager", ONLY}, log
        assert {d["env"]["machine_id"] for d in data} == {alias}
        assert all(d["status"] in ("ok", "DEGRADED", "INCONCLUSIVE") and d["p50_ms"] > 0 for d in data)
        assert (build / "remote" / alias / "logs" / "bench.log").is_file()
        # The host got the project's files and made its own build/ and photos; no venv was made.
        copy = hosts_root / alias
        assert (copy / "tasks.py").is_file() and (copy / "mobilenet" / "remote" / "chain.py").is_file()
        assert not (copy / ".venv").exists()
        assert len(list((copy / "calib_images" / "eval").iterdir())) == 8
    assert not list((build / "tmp").glob("remote-*")), "staging folders are cleaned up"

    from mobilenet.report import markdown as report
    report.write(report.result_folders(build), build / "report.md")
    text = (build / "report.md").read_text()
    print(text)
    assert "## bench-a" in text and "## bench-b" in text


@requires_shared
@pytest.mark.slow  # the whole chain runs on each host
@requires_sshd
def test_failing_hosts_say_where_and_why(sshd, image_server, tmp_path):
    """A chain that fails still sends its logs home; a missing venv is named."""
    build, venvs = tmp_path / "build", tmp_path / "venvs"
    venvs.mkdir()
    (venvs / "bench-a").symlink_to(sys.prefix)  # bench-b gets none
    code, log = _remote_bench(sshd, build, "bench-a,bench-b",
                              "--remote-dir", f"{tmp_path}/hosts/{{host}}", "--remote-venv", f"{venvs}/{{host}}",
                              "--weights", str(tmp_path / "missing.pth"), "--mirror", image_server.url, timeout=600)
    assert code != 0, log
    assert re.search(r"bench-a: FAILED .*benchmark: exit code 1: error: weights file .*missing\.pth", log), log
    assert (build / "remote" / "bench-a" / "logs" / "export.log").is_file(), log
    assert re.search(r"bench-b: FAILED .*virtual environment: exit code 1: no .*venvs/bench-b/bin/python", log), log
    assert not (build / "remote" / "bench-b").exists()


def test_parse_hosts_names_and_duplicates():
    hosts = ssh.parse_hosts(" pi@raspberrypi, nuc ,user@h:2222,")
    assert [h.name for h in hosts] == ["raspberrypi", "nuc", "h_2222"]
    assert hosts[0].spec == "pi@raspberrypi"
    with pytest.raises(ValueError, match="given twice"):
        ssh.parse_hosts("a@pi,b@pi")
    with pytest.raises(ValueError, match="at least one host"):
        ssh.parse_hosts(" , ")


def test_chain_env_passes_settings_not_local_paths():
    environ = {"MOBILENET_CALIB_COUNT": "4", "MOBILENET_BUILD_DIR": "/here/build",
               "MOBILENET_IMAGES_ROOT": "/here/img", "MOBILENET_TAG": "laptop", "HOME": "/root"}
    env = remote.chain_env({"threads": "all", "only": "onnx-*", "weights": "/data/w.pth",
                            "min_runs": None}, environ)
    assert env == {"MOBILENET_CALIB_COUNT": "4", "MOBILENET_THREADS": "all", "MOBILENET_ONLY": "onnx-*",
                   "MOBILENET_WEIGHTS": "/data/w.pth", "MOBILENET_QUIET": "1"}
    with pytest.raises(ValueError, match="thread"):
        remote.chain_env({"threads": "two"}, {})
    with pytest.raises(ValueError, match="matches no variant"):
        remote.chain_env({"only": "nope-*"}, {})
    with pytest.raises(ValueError, match="--min-seconds='fast': expected a positive number"):
        remote.chain_env({"min_seconds": "fast"}, {})
    with pytest.raises(ValueError, match="MOBILENET_BURST='0'"):
        remote.chain_env({}, {"MOBILENET_BURST": "0"})


def test_plan_rejects_one_tag_for_several_hosts():
    with pytest.raises(ValueError, match=r"\{host\}"):
        remote.make_plan("a,b", {}, tag="same", environ={})
    plan = remote.make_plan("a,b", {}, tag="{host}-py311", environ={})
    assert plan.tag == "{host}-py311" and plan.remote_dir == remote.DEFAULT_REMOTE_DIR


def test_access_checks_its_files_before_any_host_is_contacted(tmp_path):
    key = tmp_path / "key"
    key.write_text("")
    assert ssh.Access.checked(identity=str(key)) == ssh.Access(ssh_config=None, identity=str(key))
    with pytest.raises(ValueError, match="--ssh-config: no such file"):
        ssh.Access.checked(ssh_config=str(tmp_path / "missing"))
    plan = remote.make_plan("a", {}, identity=str(key), accept_new_host_keys=True, environ={})
    assert plan.access == ssh.Access(ssh_config=None, identity=str(key), accept_new_host_keys=True)


def test_remote_paths():
    host = ssh.Host("pi@pi", "pi")
    assert ssh.remote_path("~/mobilenet-bench/{host}", host) == "mobilenet-bench/pi"
    assert ssh.remote_path("/srv/bench/{host}", host) == "/srv/bench/pi"
    assert ssh.remote_path("~", host) == "."


def test_source_archive_is_the_git_files_only(tmp_path):
    archive = remote.write_source_archive(REPO, tmp_path / "src.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert {"tasks.py", "requirements.txt", "calib_images/manifest.csv", "mobilenet/remote/chain.py"} <= set(names)
    assert not [n for n in names if n.split("/")[0] in {"build", ".venv", ".git"}
                or n.startswith(("calib_images/calib/", "calib_images/eval/"))]


def test_venv_is_reused_until_requirements_change(tmp_path):
    """The marker logic of the managed venv, with a stand-in `python` that only records calls."""
    calls = tmp_path / "calls.txt"
    fake_python = tmp_path / "python3"
    fake_python.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                           'if [ "$2" = venv ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi\n')
    fake_python.chmod(0o755)
    venv, project = str(tmp_path / "venv"), str(tmp_path)

    def install(digest):
        subprocess.run(["sh", "-c", remote._venv_command(venv, str(fake_python), project, digest)], check=True)
        return calls.read_text().splitlines() if calls.exists() else []

    assert [c.split()[:2] for c in install("a" * 64)] == [["-m", "venv"], ["-m", "pip"]]
    assert len(install("a" * 64)) == 2, "same requirements: venv reused"
    assert len(install("b" * 64)) == 4, "changed requirements: reinstalled"


def test_swap_in_replaces_the_whole_folder(tmp_path):
    final = tmp_path / "remote" / "pi"
    (final / "results").mkdir(parents=True)
    (final / "results" / "old.json").write_text("{}")
    new = tmp_path / "new"
    (new / "results").mkdir(parents=True)
    (new / "results" / "new.json").write_text("{}")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ssh.swap_in(new, final, scratch)
    assert [p.name for p in (final / "results").iterdir()] == ["new.json"]


# ---- host keys against the real sshd: known accepted, unknown refused, changed refused

def _target(sshd, folder: Path, known_hosts: Path, extra: str = "") -> Path:
    """An ssh config with the alias `target` for the sshd and its own known_hosts file."""
    config = folder / "ssh_config"
    config.write_text(f"Host target\n    HostName 127.0.0.1\n    Port {sshd['port']}\n    User {sshd['user']}\n"
                      f"    UserKnownHostsFile {known_hosts}\n{extra}")
    return config


def _connect(sshd, config: Path, tmp_path: Path, accept_new: bool = False, hosts: str = "target") -> str:
    plan = remote.make_plan(hosts, {}, ssh_config=str(config), identity=str(sshd["key"]),
                            build_dir=tmp_path / "build", accept_new_host_keys=accept_new, environ={})
    cxn = ssh.connect(plan.hosts[0], plan.access)
    try:
        cxn.open()
        return cxn.run("echo connected", hide=True, in_stream=False).stdout.strip()
    finally:
        ssh.close(cxn)


def _other_key_line(sshd, folder: Path) -> str:
    """The same host name with another key: what known_hosts holds after the host was replaced."""
    key_type, key_base64 = (_keygen(folder / "other_host_key").with_suffix(".pub")).read_text().split()[:2]
    return f"[127.0.0.1]:{sshd['port']} {key_type} {key_base64}\n"


@requires_sshd
def test_known_host_key_is_accepted(sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd["host_key_line"])
    assert _connect(sshd, _target(sshd, tmp_path, known_hosts), tmp_path) == "connected"


@requires_sshd
@pytest.mark.parametrize("strict", [None, "ask", "yes"])
def test_unknown_host_is_refused_with_how_to_trust_it(sshd, tmp_path, strict):
    known_hosts = tmp_path / "known_hosts"
    extra = f"    StrictHostKeyChecking {strict}\n" if strict else ""
    with pytest.raises(ssh.HostKeyError) as err:
        _connect(sshd, _target(sshd, tmp_path, known_hosts, extra), tmp_path)
    message = str(err.value)
    port = sshd["port"]
    assert re.search(rf"unknown host key for target \(\[127\.0\.0\.1\]:{port}, ssh-ed25519 SHA256:\S+\)", message)
    assert f"`ssh-keyscan -p {port} 127.0.0.1 >> {known_hosts}`" in message
    assert f"ssh -F {tmp_path / 'ssh_config'} -p {port} {sshd['user']}@target" in message
    assert "--accept-new-host-keys" in message
    assert not known_hosts.exists(), "nothing recorded"


@requires_sshd
@pytest.mark.parametrize("accept_new", [False, True])
def test_changed_host_key_is_refused_even_with_accept_new(sshd, tmp_path, accept_new):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(_other_key_line(sshd, tmp_path))
    before = known_hosts.read_text()
    with pytest.raises(ssh.HostKeyError) as err:
        _connect(sshd, _target(sshd, tmp_path, known_hosts), tmp_path, accept_new=accept_new)
    message = str(err.value)
    assert re.search(r"the host key of target \(\[127\.0\.0\.1\]:\d+\) has CHANGED: known_hosts has "
                     r"ssh-ed25519 SHA256:\S+, the host sent ssh-ed25519 SHA256:\S+", message), message
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd['port']}' -f {known_hosts}" in message
    assert known_hosts.read_text() == before


@requires_sshd
@pytest.mark.parametrize("flag, strict", [(True, None), (False, "accept-new"), (False, "no"),
                                          (True, "yes")])  # the option wins, like `ssh -o` does
def test_accept_new_records_an_unknown_host_like_openssh(sshd, tmp_path, flag, strict):
    known_hosts = tmp_path / "ssh" / "known_hosts"  # its folder is made too, as ssh does
    config = _target(sshd, tmp_path, known_hosts, f"    StrictHostKeyChecking {strict}\n" if strict else "")
    assert _connect(sshd, config, tmp_path, accept_new=flag) == "connected"
    assert known_hosts.read_text() == sshd["host_key_line"]
    # Known from now on, without the option; and recorded once.
    assert _connect(sshd, _target(sshd, tmp_path, known_hosts), tmp_path) == "connected"
    assert _connect(sshd, config, tmp_path, accept_new=flag) == "connected"
    assert known_hosts.read_text() == sshd["host_key_line"]


@requires_sshd
def test_proxyjump_hops_are_checked_too(sshd, tmp_path):
    """`target` through the hop `jump` (the same sshd under the name localhost, so the two
    have separate known_hosts entries): an unknown hop is refused although the target is known."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd["host_key_line"])
    hop = (f"    ProxyJump jump\n\nHost jump\n    HostName localhost\n    Port {sshd['port']}\n"
           f"    User {sshd['user']}\n    UserKnownHostsFile {known_hosts}\n")
    config = _target(sshd, tmp_path, known_hosts, hop)
    with pytest.raises(ssh.HostKeyError, match=rf"unknown host key for jump \(\[localhost\]:{sshd['port']}"):
        _connect(sshd, config, tmp_path)
    known_hosts.write_text(sshd["host_key_line"] + sshd["host_key_line"].replace("127.0.0.1", "localhost"))
    assert _connect(sshd, config, tmp_path) == "connected"
    # ...and the target behind a known hop is checked as well.
    known_hosts.write_text(_other_key_line(sshd, tmp_path)
                           + sshd["host_key_line"].replace("127.0.0.1", "localhost"))
    with pytest.raises(ssh.HostKeyError, match="the host key of target .* has CHANGED"):
        _connect(sshd, config, tmp_path)


@requires_sshd
def test_remote_bench_names_an_unknown_host_and_how_to_trust_it(sshd, tmp_path):
    """As the user sees it: one line for the host, no traceback, nothing fetched or written."""
    config = _target(sshd, tmp_path, tmp_path / "known_hosts")
    env = {**os.environ, "MOBILENET_BUILD_DIR": str(tmp_path / "build")}
    run = subprocess.run([sys.executable, "-m", "invoke", "remote-bench", "--mode", "chain", "--hosts", "target",
                          "--ssh-config", str(config), "--identity", str(sshd["key"])],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert re.search(r"target: FAILED after \d+ s, connect: unknown host key for target .*ssh-keyscan -p",
                     run.stderr), run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert not (tmp_path / "build" / "remote").exists()


@requires_sshd
def test_fetch_over_sftp_takes_only_regular_files(sshd, tmp_path):
    """A host's build/ with links, a pipe and a folder among its results, over the real SFTP."""
    project, outside = tmp_path / "host-project", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the host's own file")
    results, logs = project / "build" / "results", project / "build" / "logs"
    results.mkdir(parents=True)
    logs.mkdir()
    (results / "fp32-eager@1t.json").write_text('{"ok": true}')
    (logs / "bench.log").write_text("log")
    (results / "link.json").symlink_to(outside / "secret.txt")
    (results / "folder-link").symlink_to(outside)
    (results / "sub").mkdir()
    (results / "sub" / "x.json").write_text("{}")
    os.mkfifo(results / "pipe.json")  # reading it would block for ever
    os.link(outside / "secret.txt", results / "hard.json")  # on the host, just a file

    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd["host_key_line"])
    plan = remote.make_plan("target", {}, ssh_config=str(_target(sshd, tmp_path, known_hosts)),
                            identity=str(sshd["key"]), build_dir=tmp_path / "build", environ={})
    cxn = ssh.connect(plan.hosts[0], plan.access)
    try:
        cxn.open()
        fetched = remote.fetch(cxn, str(project), plan.local_dir(plan.hosts[0]), tmp_path / "build" / "tmp")
    finally:
        ssh.close(cxn)
    final = fetched.parent
    assert sorted(str(p.relative_to(final)) for p in final.rglob("*")) == [
        "logs", "logs/bench.log", "results", "results/fp32-eager@1t.json", "results/hard.json"]
    assert not any(p.is_symlink() for p in final.rglob("*"))
    assert (final / "results" / "hard.json").stat().st_nlink == 1, "a copy, not a link"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "host-project", "known_hosts", "outside",
                                                          "ssh_config"]
