"""Values a user gives, and a disk that says no: one line naming the variable, option or path,
never a traceback, and nothing already made is lost."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, WEIGHTS, requires_shared


def invoke(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def clean_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBILENET_")}
    env.update({"MOBILENET_BUILD_DIR": str(tmp_path / "build"), "MOBILENET_IMAGES_ROOT": str(tmp_path / "images"),
                "MOBILENET_MANIFEST": str(REPO / "calib_images" / "manifest.csv"), "MOBILENET_QUIET": "1", **extra})
    return env


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize("variable, value, accepted", [
    ("THREADS", "abc", "thread counts such as 1, 1,2 or all"),
    ("MIN_SECONDS", "nan", "a positive number of seconds"),  # was an endless loop
    ("MIN_SECONDS", "-3", "a positive number of seconds"),
    ("BURST", "0", "a whole number >= 1"),  # was ZeroDivisionError
    ("EVAL_COUNT", "-1", "a whole number >= 1"),  # was silently 199 photos
    ("EVAL_COUNT", "0", "a whole number >= 1"),
    ("MIN_RUNS", "0", "a whole number >= 1"),  # deleted the old results, then failed
    ("SESSIONS", "zero", "a whole number >= 1"),
    ("WARMUP", "1.5", "a whole number >= 0"),
    ("RANDOM_WEIGHTS", "maybe", "1 or 0"),
    ("MIRROR", "file:///etc", "an http:// or https:// URL"),
    ("MIRROR", "host:8000", "an http:// or https:// URL"),
    ("ONLY", "no-such-*", "matches no variant"),
])
def test_a_bad_variable_is_one_line_naming_it(tmp_path, variable, value, accepted):
    results = tmp_path / "build" / "results"
    results.mkdir(parents=True)
    (results / "kept@1t.json").write_text("{}")
    line = one_line_error(invoke(["bench"], clean_env(tmp_path, **{f"MOBILENET_{variable}": value})))
    assert f"MOBILENET_{variable}={value!r}" in line and accepted in line
    assert (results / "kept@1t.json").exists()  # nothing was deleted before the check


@pytest.mark.parametrize("option, value", [("--min-seconds", "nan"), ("--sessions", "0"), ("--threads", "1,x")])
def test_a_bad_task_option_is_one_line_naming_it(tmp_path, option, value):
    line = one_line_error(invoke(["bench", option, value], clean_env(tmp_path)))
    assert f"{option}={value!r}" in line


def _mount_tmpfs(target: Path, size: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system for the build folder (needs root, as CI and this machine have)."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "1m"):
        pytest.skip("needs root to mount a small tmpfs")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@requires_shared
def test_a_full_disk_is_one_line_naming_the_path(small_disk, tmp_path, image_server):
    env = clean_env(tmp_path, MOBILENET_BUILD_DIR=str(small_disk / "build"), MOBILENET_MIRROR=image_server.url,
                    MOBILENET_WEIGHTS=str(WEIGHTS), MOBILENET_CALIB_COUNT="4", MOBILENET_EVAL_COUNT="8")
    line = one_line_error(invoke(["export"], env))  # the photos need 7 MB preprocessed: more than the disk
    assert f"cannot write {small_disk / 'build'}" in line and "No space left on device" in line
    assert len(list((tmp_path / "images").rglob("*.JPEG"))) == 12  # the downloaded photos were kept


@requires_shared
def test_a_read_only_build_folder_is_one_line_and_keeps_what_was_built(small_disk, tmp_path):
    build = small_disk / "build"
    (build / "results").mkdir(parents=True)
    (build / "report.md").write_text("an earlier report\n")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    line = one_line_error(invoke(["report"], clean_env(tmp_path, MOBILENET_BUILD_DIR=str(build))))
    assert f"cannot write {build}" in line and "Read-only file system" in line
    assert (build / "report.md").read_text() == "an earlier report\n"
