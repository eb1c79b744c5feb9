"""The registry's records are whole: every runtime has what each stage reads, every variant a
runtime and step that exist; and a record missing a field is reported by name, not crashed on
later by the stage that needed it. Fast: files are read, no runtime is imported except in
the one test that compares the records with the runners' own package names.
"""
from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from mobilenet.registry import (
    RUNTIME_BY_NAME,
    RUNTIMES,
    STEPS,
    VARIANTS,
    OperatorNames,
    Step,
    by_id,
    registry_problems,
    runtime_of,
)

PACKAGE = Path(__file__).resolve().parents[1] / "mobilenet"


def _with(runtime, **changes) -> tuple:
    """RUNTIMES with `runtime` changed."""
    changed = replace(runtime, **changes)
    return tuple(changed if r is runtime else r for r in RUNTIMES)


def _reported(problems: list[str], name: str, field: str) -> bool:
    return any(p.startswith(f"runtime {name!r}: {field}: ") for p in problems)


def test_the_registry_has_no_problems():
    assert registry_problems() == []


def test_every_variant_names_a_runtime_record():
    for variant in VARIANTS:
        assert runtime_of(variant) is RUNTIME_BY_NAME[variant.runtime]
    with pytest.raises(KeyError, match="nowhere"):
        runtime_of(replace(by_id("onnx-fp32"), runtime="nowhere"))


# (field, the value that breaks it, whether that field applies to a runtime)
BROKEN = [
    ("packages", (), lambda r: True),
    ("requirements", "no-such-list", lambda r: r.requirements is not None),
    ("profiler", "no_such_profiler", lambda r: r.profiler is not None),
    ("numerics", "no_such_numerics", lambda r: r.numerics is not None),
    ("operator_names", None, lambda r: r.profiler is not None),
    ("operator_names", OperatorNames(), lambda r: r.profiler is not None),
    ("native_benchmark", "", lambda r: True),
    ("only_when_asked", "installed only when asked", lambda r: r.requirements is None),
]
CASES = [pytest.param(runtime, field, value, id=f"{runtime.name}-{field}-{value!r}"[:60])
         for runtime in RUNTIMES for field, value, applies in BROKEN if applies(runtime)]


@pytest.mark.parametrize("runtime,field,value", CASES)
def test_a_broken_field_is_reported_with_its_runtime_and_name(runtime, field, value):
    problems = registry_problems(_with(runtime, **{field: value}))
    assert _reported(problems, runtime.name, field), problems
    assert all(p.startswith(f"runtime {runtime.name!r}: ") for p in problems), problems


@pytest.mark.parametrize("runtime", [r for r in RUNTIMES if r.requirements], ids=lambda r: r.name)
def test_a_package_missing_from_the_device_list_is_reported(runtime):
    problems = registry_problems(_with(runtime, packages=(*runtime.packages, "not-in-any-list")))
    assert _reported(problems, runtime.name, "requirements"), problems
    assert any("not-in-any-list" in p for p in problems), problems


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: r.name)
def test_a_runtime_without_a_runner_file_is_reported(runtime):
    problems = registry_problems(_with(runtime, name="no_such_runtime"))
    assert _reported(problems, "no_such_runtime", "runner"), problems
    # its variants now name no record, and that is said too
    assert any(p.endswith(f"runtime: {runtime.name!r} names no Runtime record") for p in problems), problems


def test_runtimes_sharing_a_device_list_must_agree_on_installing_it_only_when_asked():
    shared = [r for r in RUNTIMES if r.only_when_asked and [o.requirements for o in RUNTIMES].count(r.requirements) > 1]
    assert shared, "no two runtimes share a list installed only when asked"
    problems = registry_problems(_with(shared[0], only_when_asked=None))
    assert _reported(problems, shared[0].name, "only_when_asked"), problems


def test_a_comparison_for_a_runtime_without_int8_variants_is_reported():
    fp32_only = next(r for r in RUNTIMES if not any(v.runtime == r.name and v.precision != "fp32" for v in VARIANTS))
    problems = registry_problems(_with(fp32_only, numerics="torch_ao"))
    assert _reported(problems, fp32_only.name, "numerics"), problems


def test_variants_and_steps_that_name_nothing_are_reported():
    stray = replace(by_id("onnx-fp32"), id="stray", runtime="nowhere", step="no-step", builder="elsewhere:build")
    problems = registry_problems(variants=(*VARIANTS, stray), steps=(*STEPS, Step("empty", "", needs=("missing",))))
    assert "variant 'stray': runtime: 'nowhere' names no Runtime record" in problems
    assert "variant 'stray': step: 'no-step' names no Step" in problems
    assert any(p.startswith("variant 'stray': builder: ") for p in problems)
    assert "step 'empty': variants: none is built by it" in problems
    assert "step 'empty': needs: 'missing' names no Step" in problems
    unused = replace(RUNTIMES[0], name="unused")
    assert _reported(registry_problems((*RUNTIMES, unused)), "unused", "name")


def test_each_runner_reports_the_first_package_of_its_record():
    """Runner.package (the version the results show) stays in measure/, which devices get
    without the registry; the record's first package must be the same distribution."""
    from mobilenet.measure.runners import RuntimeUnavailable, runner_module
    for runtime in RUNTIMES:
        try:
            runner = runner_module(runtime.name).Runner
        except RuntimeUnavailable:
            continue
        assert runner.package == runtime.packages[0], runtime.name


def test_every_builder_named_in_the_registry_is_a_function_of_its_module():
    """The build step imports `module:function` only when it builds; a renamed function would
    otherwise surface minutes into a build."""
    import importlib
    import inspect
    for variant in VARIANTS:
        module, _, function = variant.builder.partition(":")
        builder = getattr(importlib.import_module(module), function, None)
        assert inspect.isfunction(builder), f"{variant.id}: {variant.builder} is no function"
        assert list(inspect.signature(builder).parameters)[:1] == ["ctx"], f"{variant.id}: {variant.builder}(ctx)"


def test_the_measure_package_imports_nothing_of_the_project_beyond_itself_and_logs():
    """Device mode ships mobilenet/measure and mobilenet/logs.py only: a runtime fact a runner or
    the worker needs is handed to it by its caller, never read from the registry."""
    allowed = ("mobilenet.measure", "mobilenet.logs")
    found = []
    for path in sorted((PACKAGE / "measure").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] if node.module != "mobilenet" else [f"mobilenet.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [f"{path.relative_to(PACKAGE.parent)}: {name}" for name in names
                      if name.split(".")[0] == "mobilenet" and not name.startswith(allowed)]
    assert found == []
