"""One schema for every setting: its type, its MOBILENET_* variable, its help, and whether it
travels to remote hosts. Settings, task help, validation and remote-bench all read it.

Invoke calls pre-tasks without arguments, so options that must reach the whole chain
(weights, mirror, image counts, build folder) are read from MOBILENET_* environment
variables; an option given to a task overrides them for that task. Every value is checked
up front (mobilenet.tasks_support checks every task of the command line before any runs) and
a bad one stops with one line naming the variable or option and the accepted form, before
anything is deleted, downloaded or built.
"""
from __future__ import annotations

import math
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from mobilenet.models import DEFAULT_SPEC

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingError(ValueError):
    pass


# ---------------------------------------------------------------- value kinds

def parse_threads(spec: str | int) -> tuple[int, ...]:
    """'1', '1,2' or 'all' (every logical core) -> (1,), (1, 2), (os.cpu_count(),)."""
    counts = []
    for part in str(spec).strip().lower().split(","):
        part = part.strip()
        if part == "all":
            counts.append(os.cpu_count() or 1)
        elif part.isdigit() and int(part) > 0:
            counts.append(int(part))
        else:
            raise ValueError("expected thread counts such as 1, 1,2 or all")
    return tuple(dict.fromkeys(counts))


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(text) -> int:
        text = str(text).strip()
        if not text.lstrip("-").isdigit() or int(text) < minimum:
            raise ValueError(f"expected a whole number >= {minimum}")
        return int(text)
    return parse


def _positive_seconds(text) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a positive number of seconds, e.g. 10 or 0.5")
    return value


def _flag(text) -> bool:
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected 1 or 0 (true/false, yes/no)")


def _http_url(text) -> str:
    url = str(text).strip()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:8765")
    return url.rstrip("/")


def _text(text) -> str:
    return str(text)


def _target_profile(text) -> Path | None:
    """A profile file to build the ISA-dependent INT8 settings for, checked here (readable, a
    profile) so that a bad one stops before anything is built; empty: this machine."""
    from mobilenet.build.target import load_profile
    if not str(text).strip():
        return None
    path = Path(str(text)).expanduser()
    load_profile(path)  # raises ValueError naming the file
    return path


def _model_spec(text) -> str:
    """A model spec, checked (a torchvision name against list_models) and written canonically."""
    from mobilenet.models import ModelError, parse_spec
    if str(text).strip() == DEFAULT_SPEC:  # known good (tests/test_models.py): no torchvision import to check it
        return DEFAULT_SPEC
    try:
        return parse_spec(str(text)).text
    except ModelError as exc:
        raise ValueError(str(exc)) from None


def _mean(text) -> tuple[float, float, float]:
    from mobilenet.models import parse_mean
    return parse_mean(text)


def _std(text) -> tuple[float, float, float]:
    from mobilenet.models import parse_std
    return parse_std(text)


def _interpolation(text) -> str:
    from mobilenet.models import parse_interpolation
    return parse_interpolation(text)


def _variant_globs(text) -> str:
    from mobilenet.registry import select
    select(str(text))  # raises, naming the known variants, when nothing matches
    return str(text)


# ---------------------------------------------------------------- the schema

@dataclass(frozen=True)
class Option:
    name: str  # the Settings field and the task option (--min-seconds for min_seconds)
    parse: Callable
    default: object
    help: str
    to_hosts: bool = False  # passed on to remote-bench hosts as MOBILENET_<NAME>

    @property
    def env(self) -> str:
        return f"MOBILENET_{self.name.upper()}"


OPTIONS: tuple[Option, ...] = (
    Option("build_dir", Path, REPO_ROOT / "build", "where outputs go (default build/)"),
    Option("images_root", Path, REPO_ROOT / "calib_images", "where photos are kept (default calib_images/)"),
    Option("manifest", Path, None, "the photo manifest (default <images_root>/manifest.csv)"),
    Option("model", _model_spec, DEFAULT_SPEC,
           "the classifier: torchvision:<name>[:<WEIGHTS>] or python:<package.module>:<factory> (runs your code)",
           True),
    Option("weights", _text, None, "local state_dict of the model (default: torchvision's download)", True),
    Option("random_weights", _flag, False, "random weights: latency only, accuracy meaningless", True),
    # A python: model's preprocessing; a torchvision model's comes from its weights entry.
    Option("resize", _integer(1), None, "python: model: shorter side resized to this many px (default 256)", True),
    Option("crop", _integer(1), None, "python: model: centre crop and input size in px (default 224)", True),
    Option("mean", _mean, None, "python: model: per-channel mean, e.g. 0.485,0.456,0.406 (ImageNet's)", True),
    Option("std", _std, None, "python: model: per-channel std, e.g. 0.229,0.224,0.225 (ImageNet's)", True),
    Option("interpolation", _interpolation, None, "python: model: resize interpolation (default bilinear)", True),
    Option("mirror", _http_url, None, "base URL serving the manifest's files", True),
    Option("local_images", _text, None, "your own folder of photos instead of the manifest"),
    Option("local_labels", _text, None, "CSV filename,label for --local-images"),
    Option("calib_count", _integer(1), 50, "calibration photos", True),
    Option("eval_count", _integer(1), 200, "evaluation photos", True),
    Option("all_photos", _flag, False,
           "all 1000 manifest photos, not the default 250 (needs internet: the offline mirror has only those): "
           "calib_count calibrate, all the others are scored (eval_count does not apply)", True),
    Option("threads", parse_threads, (1,), "thread counts: 1, 1,2 or all", True),
    Option("only", _variant_globs, None, "variant globs, e.g. 'onnx-*,int8-*'", True),
    Option("sessions", _integer(1), 7, "fresh processes per variant (intervals need 2 or more)", True),
    Option("warmup", _integer(0), 10, "untimed calls per process before timing", True),
    # Totals over all sessions. The intervals' width comes from the number of sessions (the
    # process-to-process spread), not from more calls within one, so sessions get the budget.
    Option("min_runs", _integer(1), 100, "timed calls per variant over all sessions, at least", True),
    Option("min_seconds", _positive_seconds, 5.0, "timed seconds per variant over all sessions, at least", True),
    Option("burst", _integer(1), 10, "calls per burst in the interleaved rounds", True),
    Option("tag", _text, None, "machine id in results (default hostname + CPU model)"),
    Option("quiet", _flag, False, "no progress bars or step messages (warnings and errors stay)"),
    # Build steps after export run in child processes, this many at once (1: one after another,
    # in the task's own process). A build takes up to about 2 GB and, in places, every core.
    Option("build_jobs", _integer(1), min(2, os.cpu_count() or 1),
           "build steps run at once after export (default 2, or 1 on a 1-core machine)"),
    # Device mode sets it for the INT8 artifacts it builds for a device whose CPU takes other
    # settings than this one; its build's child processes read it back with the other settings.
    Option("target", _target_profile, None,
           "a CPU profile JSON (arch and isa_flags, or a device mode device.json) to choose the ISA-dependent INT8 "
           "settings for instead of this machine; models, stamps and logs then go to build/targets/<arch>-<flags>/"),
)
BY_NAME = {o.name: o for o in OPTIONS}


def parse(option: Option, value, source: str):
    try:
        return option.parse(value)
    except ValueError as exc:
        raise SettingError(f"{source}={value!r}: {exc}") from None


def task_help(*names: str) -> dict[str, str]:
    """Invoke's help dict for these options: the schema's text plus its variable."""
    return {name: f"{BY_NAME[name].help} (env {BY_NAME[name].env})" for name in names}


def _as_text(value) -> str:
    """A value as its MOBILENET_* variable spells it: 1/0, comma-separated, empty for None."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


def _given(option: Option, value, environ) -> tuple[object, str] | None:
    """What the user wrote for this option, and where: the task's option (not None), else its
    variable (not empty), else None."""
    if value is not None:
        return value, f"--{option.name.replace('_', '-')}"
    if environ.get(option.env):
        return environ[option.env], option.env
    return None


def written(name: str, value=None, environ=os.environ) -> str:
    """A setting as written, checked but not parsed, for values passed on as text: remote-bench's
    thread counts, where 'all' means each host's cores rather than this machine's. The task's
    option, else its variable, else the schema's default."""
    option = BY_NAME[name]
    given = _given(option, value, environ)
    if given is None:
        return _as_text(option.default)
    parse(option, *given)
    return _as_text(given[0])


def host_env(values: dict, environ=os.environ) -> dict[str, str]:
    """MOBILENET_* for remote hosts: this shell's, then the task's options, validated here
    so that a typo fails before any host is contacted."""
    env = {}
    for option in OPTIONS:
        given = _given(option, values.get(option.name), environ) if option.to_hosts else None
        if given is not None:
            parse(option, *given)  # checked here; passed on as written ('all' means each host's cores)
            env[option.env] = _as_text(given[0])
    return env


# ---------------------------------------------------------------- settings

_FROM_ENV = object()  # a field not given to Settings(...) comes from its variable or the schema's default


@dataclass(frozen=True)
class Settings:
    """Settings() reads every MOBILENET_* variable (validated); with_options() applies a task's."""
    build_dir: Path = _FROM_ENV
    images_root: Path = _FROM_ENV
    manifest: Path = _FROM_ENV
    model: str = _FROM_ENV
    weights: str | None = _FROM_ENV
    random_weights: bool = _FROM_ENV
    resize: int | None = _FROM_ENV
    crop: int | None = _FROM_ENV
    mean: tuple[float, float, float] | None = _FROM_ENV
    std: tuple[float, float, float] | None = _FROM_ENV
    interpolation: str | None = _FROM_ENV
    mirror: str | None = _FROM_ENV
    local_images: str | None = _FROM_ENV
    local_labels: str | None = _FROM_ENV
    calib_count: int = _FROM_ENV
    eval_count: int = _FROM_ENV
    all_photos: bool = _FROM_ENV
    threads: tuple[int, ...] = _FROM_ENV
    only: str | None = _FROM_ENV
    sessions: int = _FROM_ENV
    warmup: int = _FROM_ENV
    min_runs: int = _FROM_ENV
    min_seconds: float = _FROM_ENV
    burst: int = _FROM_ENV
    tag: str | None = _FROM_ENV
    quiet: bool = _FROM_ENV
    build_jobs: int = _FROM_ENV
    target: Path | None = _FROM_ENV

    def __post_init__(self):
        for option in OPTIONS:
            if getattr(self, option.name) is _FROM_ENV:
                raw = os.environ.get(option.env)
                value = option.default if raw in (None, "") else parse(option, raw, option.env)
                object.__setattr__(self, option.name, value)
        if self.manifest is None:
            object.__setattr__(self, "manifest", Path(self.images_root) / "manifest.csv")
        for name in ("build_dir", "images_root", "manifest"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.target is not None:
            object.__setattr__(self, "target", Path(self.target))
        self._check_preprocessing()

    def _check_preprocessing(self) -> None:
        """Preprocessing options that cannot go with the model stop here, naming the option."""
        from mobilenet.models import ModelError, preprocessing_of
        spec = self.model
        if spec.startswith("python:") or any(getattr(self, name) is not None
                                             for name in ("resize", "crop", "mean", "std", "interpolation")):
            try:
                preprocessing_of(spec, self.resize, self.crop, self.mean, self.std, self.interpolation)
            except ModelError as exc:
                raise SettingError(str(exc)) from None

    def with_options(self, **options) -> Settings:
        """Apply task options (None: not given), each validated like its variable; a name the
        schema does not know is refused, so that a misspelt option cannot be dropped silently."""
        unknown = [name for name in options if name not in BY_NAME]
        if unknown:
            raise SettingError(f"unknown setting {unknown[0]!r}; known: {', '.join(BY_NAME)}")
        given = {}
        for name, value in options.items():
            if value is None:
                continue
            option = BY_NAME[name]
            flag = isinstance(value, bool) and option.parse is _flag
            given[name] = value if flag else parse(option, value, f"--{name.replace('_', '-')}")
        return replace(self, **given)

    def as_env(self) -> dict[str, str]:
        """Every setting as its MOBILENET_* variable, for a child process whose Settings() must
        read back these very values (a task's options included)."""
        return {option.env: _as_text(getattr(self, option.name)) for option in OPTIONS}

    @property
    def images_dir(self) -> Path:
        return self.images_root

    @property
    def target_dir(self) -> Path | None:
        """build/targets/<arch>-<flags>/ when building for a profile (`target`), else None. The
        photos (data/) and results stay shared: only what is built for that CPU moves."""
        if self.target is None:
            return None
        from mobilenet.build.target import load_profile
        return self.build_dir / "targets" / load_profile(self.target).name

    @property
    def models_dir(self) -> Path:
        return (self.target_dir or self.build_dir) / "models"

    @property
    def results_dir(self) -> Path:
        return self.build_dir / "results"

    @property
    def data_dir(self) -> Path:
        """build/data for ImageNet's classic transform (the default model's); another transform's
        photos live in build/data/<its digest> (mobilenet.data.store)."""
        from mobilenet.data.store import store_folder
        from mobilenet.models import preprocessing_for
        return store_folder(self.build_dir / "data", preprocessing_for(self))

    @property
    def logs_dir(self) -> Path:
        return (self.target_dir or self.build_dir) / "logs"

    @property
    def stamps_dir(self) -> Path:
        return (self.target_dir or self.build_dir) / "stamps"
