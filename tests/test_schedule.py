"""The build scheduler (mobilenet/build/schedule.py) and the build-folder lock it hands to its children.

Fast: real builds are replaced by a fake child program; the end-to-end chain (conftest's
`chain`) runs the real steps through the scheduler.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO

from mobilenet.build import schedule, staleness
from mobilenet.build import step as build
from mobilenet.data import store as dataset
from mobilenet.files import hold_build_lock, lock_handoff, write_json
from mobilenet.registry import BUILD_STEPS, by_id, for_step
from mobilenet.settings import Settings

AFTER_EXPORT = [s for s in BUILD_STEPS if s != "export"]


# ---------------------------------------------------------------- order and dependencies

def test_a_step_brings_what_it_needs_and_export_comes_first():
    assert schedule.with_needs(["compile-aoti"]) == ["export", "compile-aoti"]
    assert schedule.with_needs(["convert-onnx", "export", "convert-onnx"]) == ["export", "convert-onnx"]
    assert schedule.waves(schedule.with_needs(BUILD_STEPS)) == [["export"], AFTER_EXPORT]
    # Needs outside the list are the caller's (already run): the steps are independent.
    assert schedule.waves(["quantize-dynamic", "convert-onnx"]) == [["quantize-dynamic", "convert-onnx"]]


def test_steps_needing_each_other_are_refused(monkeypatch):
    steps = {**schedule.STEP_BY_NAME}
    steps["export"] = schedule.STEP_BY_NAME["export"].__class__("export", "", needs=("convert-onnx",))
    monkeypatch.setattr(schedule, "STEP_BY_NAME", steps)
    with pytest.raises(ValueError, match="need each other"):
        schedule.waves(["export", "convert-onnx"])


def test_longest_first_by_registry_estimate_then_by_recorded_build_time(tmp_path):
    stale = {step: [v.id for v in for_step(step)] for step in AFTER_EXPORT}
    assert schedule.longest_first(stale, tmp_path) == [
        "convert-executorch", "compile-aoti", "convert-litert", "quantize-static", "convert-onnx",
        "convert-openvino", "quantize-dynamic"]
    # What the variants took last time wins over the estimate.
    write_json(by_id("int8-dynamic").meta_path(tmp_path), {"build_s": 500.0})
    write_json(by_id("executorch-fp32").meta_path(tmp_path), {"build_s": 1.0})
    write_json(by_id("executorch-int8").meta_path(tmp_path), {"build_s": 2.0})
    order = schedule.longest_first(stale, tmp_path)
    assert order[0] == "quantize-dynamic" and order[-1] == "convert-executorch"
    # Only the stale variants count: one of a step's two variants is half the step.
    assert schedule.expected_seconds("compile-aoti", ["aoti-int8"], tmp_path) == pytest.approx(99 / 2)


def test_settings_reach_a_child_unchanged(monkeypatch, tmp_path):
    settings = Settings().with_options(build_dir=tmp_path, threads="1,2", only="onnx-*", random_weights="1",
                                       min_seconds="0.5", weights="/w.pth", build_jobs="3")
    for name in [k for k in os.environ if k.startswith("MOBILENET_")]:
        monkeypatch.delenv(name)
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings


# ---------------------------------------------------------------- the lock handed to children

PROBE = textwrap.dedent("""
    import sys
    from mobilenet.files import BuildFolderBusy, hold_build_lock
    try:
        hold_build_lock(sys.argv[1])
    except BuildFolderBusy as exc:
        sys.exit(f"refused: {exc}")
    print("let in", flush=True)
""")


def _probe(build_dir, env=None, pass_fds=(), via_grandchild=False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", PROBE, str(build_dir)]
    if via_grandchild:
        command = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)",
                   *command]
    return subprocess.run(command, cwd=REPO, env={**os.environ, **(env or {})}, pass_fds=pass_fds,
                          capture_output=True, text=True, timeout=60)


def test_a_child_of_the_holder_is_let_in_and_no_other_process(tmp_path):
    hold_build_lock(tmp_path)
    env, fds = lock_handoff(tmp_path)
    child = _probe(tmp_path, env, fds)
    assert child.returncode == 0 and child.stdout.strip() == "let in", child.stderr
    refused = f"another run (pid {os.getpid()}) is using {tmp_path}"
    assert refused in _probe(tmp_path).stderr  # unrelated
    assert refused in _probe(tmp_path, env, via_grandchild=True).stderr  # the variable copied on
    assert refused in _probe(tmp_path, env).stderr  # the variable without the lock's descriptor
    assert refused in _probe(tmp_path, {"MOBILENET_BUILD_LOCK_HANDOFF": f"{os.getpid() + 1}:{fds[0]}"}, fds).stderr


def test_the_folder_stays_locked_while_a_child_outlives_its_killed_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, subprocess, sys, time
        from mobilenet.files import lock_handoff
        env, fds = lock_handoff(sys.argv[1])
        child = subprocess.Popen([sys.executable, "-c", sys.argv[2] + "import time; time.sleep(60)", sys.argv[1]],
                                 env={**os.environ, **env}, pass_fds=fds)
        print(child.pid, flush=True)
        time.sleep(60)
    """), str(tmp_path), PROBE], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        first, second = parent.stdout.readline().strip(), parent.stdout.readline().strip()
        assert "let in" in (first, second)
        child_pid = int(first if second == "let in" else second)
        parent.kill()
        parent.wait()
        assert "another run" in _probe(tmp_path).stderr
    finally:
        if child_pid:
            os.kill(child_pid, signal.SIGKILL)
        parent.kill()
    deadline = time.monotonic() + 30
    while (probe := _probe(tmp_path)).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert probe.stdout.strip() == "let in", probe.stderr


# ---------------------------------------------------------------- running steps, with a fake child

FAKE_CHILD = textwrap.dedent("""
    import json, os, sys, time
    from mobilenet.files import BuildFolderBusy, hold_build_lock, write_json
    step, outcome = sys.argv[1], sys.argv[2]
    plan = json.loads(os.environ["FAKE_PLAN"]).get(step, {})
    with open(os.environ["FAKE_EVENTS"], "a") as fh:
        fh.write(f"start {step} {os.environ.get('OMP_WAIT_POLICY')}\\n")
    try:
        hold_build_lock(os.environ["MOBILENET_BUILD_DIR"])
    except BuildFolderBusy as exc:
        write_json(outcome, {"error": str(exc)})
        sys.exit(1)
    print(f"{step}: building", flush=True)
    sys.stderr.write("  a variant line")  # no newline yet: shown whole, once complete
    sys.stderr.flush()
    time.sleep(plan.get("sleep", 0.3))
    sys.stderr.write(" ok\\n")
    if plan.get("crash"):
        os.kill(os.getpid(), 9)
    with open(os.environ["FAKE_EVENTS"], "a") as fh:
        fh.write(f"end {step}\\n")
    write_json(outcome, plan.get("outcome", {"metas": [{"variant": step, "status": "ok"}]}))
""")


@pytest.fixture
def fake_steps(tmp_path, monkeypatch):
    """build_steps with run_step and stale_variants faked, and children running FAKE_CHILD."""
    events, script = tmp_path / "events.txt", tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD)
    monkeypatch.setattr(schedule, "CHILD_COMMAND", (sys.executable, str(script)))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("FAKE_EVENTS", str(events))
    monkeypatch.setenv("FAKE_PLAN", "{}")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    here = []
    monkeypatch.setattr(build, "run_step", lambda step, settings, force=False, **known: here.append(step) or
                        [{"variant": step, "status": "ok"}])
    fresh = {"quantize-dynamic"}
    monkeypatch.setattr(staleness, "stale_variants", lambda step, settings, force=False, data=None:
                        {} if step in fresh and not force else {v.id: "missing" for v in for_step(step)})
    monkeypatch.setattr(dataset, "prepare", lambda settings: None)
    launched = []
    child = schedule._Child
    monkeypatch.setattr(schedule, "_Child", lambda step, *args: launched.append(step) or child(step, *args))
    return Settings().with_options(build_dir=tmp_path / "build", quiet=True), here, events, launched


def _most_at_once(events) -> int:
    running, most = 0, 0
    for line in events.read_text().splitlines():
        running += 1 if line.startswith("start") else -1
        most = max(most, running)
    return most


def test_stale_steps_run_two_at_a_time_longest_first(fake_steps, capsys):
    settings, here, events, launched = fake_steps
    done = dict(schedule.build_steps(list(BUILD_STEPS), settings))
    assert sorted(done) == sorted(BUILD_STEPS)
    assert done["convert-onnx"] == [{"variant": "convert-onnx", "status": "ok"}]
    assert here == ["export", "quantize-dynamic"]  # export, then the up-to-date step, in this process
    assert launched == ["convert-executorch", "compile-aoti", "convert-litert", "quantize-static", "convert-onnx",
                        "convert-openvino"]
    assert _most_at_once(events) == 2
    # Their OpenMP threads wait passively: two builds on two cores do not spin against each other.
    assert {line.split()[2] for line in events.read_text().splitlines() if line.startswith("start")} == {"PASSIVE"}
    err = capsys.readouterr().err
    assert "convert-onnx: building\n" in err and "convert-onnx:   a variant line ok\n" in err


def test_one_job_builds_in_this_process(fake_steps):
    settings, here, events, launched = fake_steps
    list(schedule.build_steps(list(BUILD_STEPS), settings.with_options(build_jobs="1")))
    assert here == list(BUILD_STEPS) and not events.exists()


def test_a_single_stale_step_is_built_in_this_process(fake_steps):
    settings, here, events, launched = fake_steps
    list(schedule.build_steps(["quantize-dynamic", "convert-onnx"], settings))
    assert here == ["quantize-dynamic", "convert-onnx"] and not events.exists()


def test_a_step_that_raises_stops_the_run_with_one_line(fake_steps, monkeypatch):
    settings, here, events, launched = fake_steps
    monkeypatch.setenv("FAKE_PLAN", json.dumps({
        "convert-executorch": {"sleep": 30},
        "compile-aoti": {"outcome": {"error": "compile-aoti: cannot write x: No space left (log: y)"}}}))
    started = time.monotonic()
    with pytest.raises(schedule.StepError, match=r"^compile-aoti: cannot write x"):
        list(schedule.build_steps(AFTER_EXPORT, settings))
    assert time.monotonic() - started < 20  # the other child was stopped, not waited for
    assert launched == ["convert-executorch", "compile-aoti"]  # nothing new started
    assert not list(settings.build_dir.glob(".*.outcome.json"))


def test_a_killed_child_names_its_step_and_log(fake_steps, monkeypatch):
    settings, here, events, launched = fake_steps
    monkeypatch.setenv("FAKE_PLAN", json.dumps({"convert-litert": {"crash": True}}))
    with pytest.raises(schedule.StepError) as failure:
        list(schedule.build_steps(["convert-litert", "convert-onnx"], settings))
    message = str(failure.value)
    assert message.startswith("convert-litert: its build process was killed by SIGKILL (out of memory?)")
    assert str(settings.logs_dir / "convert-litert.log") in message and "\n" not in message


def test_forced_steps_all_go_to_children(fake_steps):
    settings, here, events, launched = fake_steps
    done = dict(schedule.build_steps(["quantize-dynamic", "convert-onnx"], settings, force=True))
    assert sorted(done) == ["convert-onnx", "quantize-dynamic"] and here == []
