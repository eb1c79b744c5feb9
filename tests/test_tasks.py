"""The chain as tasks.py declares it (pre=[...]) against the registry, the executor that checks
every task before any runs and builds the steps together, and the schema refusing unknown names."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from invoke import Collection, Config
from invoke.loader import FilesystemLoader

from mobilenet import tasks_support
from mobilenet.registry import BUILD_STEPS, STEPS
from mobilenet.settings import SettingError, Settings


@pytest.fixture(scope="module")
def tasks():
    module, parent = FilesystemLoader(start=str(REPO)).load("tasks")
    return Collection.from_module(module, loaded_from=parent)


def pre_names(collection: Collection, name: str) -> list[str]:
    """A task's declared pre-tasks, by their names in the collection."""
    by_task = {collection[n]: n for n in collection.task_names}
    return [by_task[getattr(pre, "task", pre)] for pre in collection[name].pre]


def runs_before(collection: Collection, name: str) -> set[str]:
    """Every task that Invoke runs before this one: its pre-tasks, theirs, and so on."""
    seen: set[str] = set()
    todo = pre_names(collection, name)
    while todo:
        pre = todo.pop()
        if pre not in seen:
            seen.add(pre)
            todo.extend(pre_names(collection, pre))
    return seen


def test_every_build_step_is_a_task_whose_pre_tasks_are_its_needs(tasks):
    assert set(BUILD_STEPS) <= set(tasks.task_names)
    for step in STEPS:
        expected = list(step.needs) or ["download-images"]  # export reads the photos
        assert pre_names(tasks, step.name) == expected, step.name


def test_the_chain_from_the_photos_to_the_report(tasks):
    assert pre_names(tasks, "download-images") == []
    assert pre_names(tasks, "export") == ["download-images"]
    assert set(pre_names(tasks, "build")) == set(BUILD_STEPS)
    assert set(BUILD_STEPS) <= runs_before(tasks, "bench")
    assert pre_names(tasks, "explain") == ["bench"]
    assert pre_names(tasks, "report") == ["explain"]
    assert {"download-images", *BUILD_STEPS, "bench", "explain"} <= runs_before(tasks, "report")
    for name in ("compare", "clean", "remote-bench"):  # remote-bench device mode builds in its body
        assert pre_names(tasks, name) == []


def test_task_help_names_the_pre_tasks(tasks):
    assert "Runs first" in tasks["export"].__doc__ and "download-images" in tasks["export"].__doc__
    assert "explain." in tasks["report"].__doc__
    assert "Runs first" not in tasks["download-images"].__doc__


def test_with_options_refuses_an_unknown_name():
    with pytest.raises(SettingError, match="unknown setting 'sesions'"):
        Settings().with_options(sesions="3")
    with pytest.raises(SettingError, match="unknown setting 'force'"):
        Settings().with_options(force=None)  # given, even without a value: a name the schema lacks
    assert Settings().with_options(sessions="3").sessions == 3


# ---------------------------------------------------------------- the executor, with the work recorded

@pytest.fixture
def recorded(tasks, monkeypatch, tmp_path):
    """Runs a command line through ChainExecutor with the downloads, builds and measurements
    recorded instead of done."""
    for name in [n for n in os.environ if n.startswith("MOBILENET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MOBILENET_BUILD_DIR", str(tmp_path / "build"))
    work: list[tuple] = []

    def fake_download(c, settings=None, **options):
        settings = settings or tasks_support.settings_for(**options)
        if tasks_support.invocation_of(c).first_time(("download-images", settings)):
            work.append(("download-images",))

    monkeypatch.setattr(tasks_support, "download", fake_download)
    monkeypatch.setattr(tasks_support, "_build_steps", lambda steps, force, settings: work.append(
        ("build", tuple(steps), force)))
    monkeypatch.setattr(tasks_support, "bench", lambda force, **options: work.append(("bench", force)))
    monkeypatch.setattr(tasks_support, "explain", lambda force: work.append(("explain", force)))
    monkeypatch.setattr(tasks_support, "report", lambda results: work.append(("report",)))

    def execute(*calls):
        work.clear()
        tasks_support.ChainExecutor(tasks, Config()).execute(*calls)
        return list(work)
    execute.work = work
    return execute


def test_the_steps_before_bench_are_built_in_one_call(recorded):
    assert recorded("report") == [("download-images",), ("build", BUILD_STEPS, False), ("bench", False),
                                  ("explain", False), ("report",)]


def test_build_force_forces_its_pre_tasks_once(recorded):
    assert recorded(("build", {"force": True})) == [("download-images",), ("build", BUILD_STEPS, True)]


def test_a_forced_step_is_built_on_its_own_after_its_needs(recorded):
    assert recorded(("quantize-static", {"force": True})) == [
        ("download-images",), ("build", ("export",), False), ("build", ("quantize-static",), True)]


def test_a_task_on_the_command_line_is_the_same_call_as_a_pre_task(recorded):
    # The command line gives every option (defaults too); a pre-task none: one export, one download.
    given = {"weights": None, "random_weights": None, "force": False}
    assert recorded(("export", given), "bench") == [("download-images",), ("build", BUILD_STEPS, False),
                                                    ("bench", False)]


def test_a_bad_option_stops_before_any_pre_task(recorded, capsys):
    with pytest.raises(SystemExit) as stop:
        recorded("export", ("bench", {"sessions": "nan"}))
    assert stop.value.code == 1 and recorded.work == []
    assert capsys.readouterr().err == "error: --sessions='nan': expected a whole number >= 1\n"
    with pytest.raises(SystemExit):
        recorded(("report", {"results": "/no/such/results"}))
    assert recorded.work == []
    assert capsys.readouterr().err == "error: --results: no such results folder: /no/such/results\n"


# ---------------------------------------------------------------- the real command line

def invoke(args: list[str], tmp_path: Path, **variables) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBILENET_")}
    env.update({"MOBILENET_BUILD_DIR": str(tmp_path / "build"), "MOBILENET_IMAGES_ROOT": str(tmp_path / "images"),
                # a port nothing listens on: a download that started anyway would fail with another message
                "MOBILENET_MIRROR": "http://127.0.0.1:9", "MOBILENET_QUIET": "1", **variables})
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, variables, message", [
    (["report"], {"MOBILENET_SESSIONS": "nan"}, "error: MOBILENET_SESSIONS='nan': expected a whole number >= 1"),
    (["bench", "--sessions", "nan"], {}, "error: --sessions='nan': expected a whole number >= 1"),
    (["bench", "--threads", "x"], {}, "error: --threads='x': expected thread counts such as 1, 1,2 or all"),
    (["download-images", "explain", "bench", "--min-seconds", "0"], {},  # the bad task comes last
     "error: --min-seconds='0': expected a positive number of seconds, e.g. 10 or 0.5"),
])
def test_a_bad_setting_stops_before_any_work(tmp_path, args, variables, message):
    (tmp_path / "build").mkdir()
    done = invoke(args, tmp_path, **variables)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines() == [message]
    assert list((tmp_path / "build").iterdir()) == [] and not (tmp_path / "images").exists()
