"""The settings `invoke tune` chose, as the ordinary build reads them (build/tune/winners.json).

Winners are kept per target: the CPU they were measured on, keyed by its INT8-relevant flags
(target.Target.record()), so that a build folder moved to another machine, or a target whose
flags differ, falls back to the ISA-derived defaults instead of another CPU's measurement.

An INT8 builder asks `applied(ctx, override)` which settings to change from its defaults:
- the override it was handed (a setting of the tune's grid, while tuning), or else
- this target's winner for its variant, when a tune chose one, or else
- nothing: the ISA-derived defaults of mobilenet/build/target.py.
It records the answer under RECORD_KEY in the options it returns (meta.json, results), and the
build's freshness holds the same override (staleness.py), so a new winner rebuilds the variant.

Imports nothing heavier than json: the builders and the freshness check both read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobilenet.build import target as targets
from mobilenet.files import read_json, write_json

WINNERS = Path("tune") / "winners.json"
RECORD_KEY = "tuned"  # options key of the record in a variant's meta and results

GRID = "tune grid"  # a setting built while tuning
WINNER = "invoke tune winner"  # the ordinary build, with this target's winner
DEFAULTS = "ISA-derived defaults"  # the ordinary build, no winner for this target


def target_key(target: targets.Target) -> str:
    """'x86_64:avx2': what winners are filed under (the flags the INT8 rules read, not the source)."""
    return f"{target.arch}:{'+'.join(target.isa) or 'none'}"


def winners_path(build_dir: Path) -> Path:
    return Path(build_dir) / WINNERS


@dataclass(frozen=True)
class Winner:
    variant: str
    setting: str  # the grid setting's name
    override: dict  # what it changes from the builder's defaults ({}: the shipped setting won)
    tuned_at: str  # UTC time of the tune that chose it
    tuning_photos: int

    def recorded(self) -> dict:
        return {"source": WINNER, "setting": self.setting, "override": self.override, "tuned_at": self.tuned_at,
                "tuning_photos": self.tuning_photos}


def _read(build_dir: Path) -> dict:
    path = winners_path(build_dir)
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("targets", {}), dict):
            raise ValueError("no 'targets' table")
    except ValueError as exc:
        raise ValueError(f"{path}: not a winners file ({exc}); delete it (the builds then use the ISA-derived "
                         "defaults) or rerun `invoke tune`") from None
    return data


def winner_for(build_dir: Path, variant_id: str, target: targets.Target | None = None) -> Winner | None:
    """This target's winner for the variant, or None when no tune chose one here."""
    entry = _read(build_dir).get("targets", {}).get(target_key(target or targets.build_target()), {})
    chosen = entry.get("winners", {}).get(variant_id)
    if not isinstance(chosen, dict):
        return None
    return Winner(variant_id, str(chosen["setting"]), dict(chosen.get("override") or {}), str(entry.get("tuned_at")),
                  int(entry.get("tuning_photos") or 0))


def record_winners(build_dir: Path, target: targets.Target, tuned_at: str, tuning_photos: int,
                   winners: dict[str, tuple[str, dict]]) -> Path:
    """File {variant: (setting, override)} as this target's winners, keeping other targets' and this
    target's winners of variants this tune did not cover."""
    data = _read(build_dir) or {"targets": {}}
    key = target_key(target)
    entry = data["targets"].get(key, {"winners": {}})
    entry.update(target=target.record(), tuned_at=tuned_at, tuning_photos=tuning_photos)
    entry["winners"] = {**entry.get("winners", {}),
                        **{v: {"setting": name, "override": override} for v, (name, override) in winners.items()}}
    data["targets"][key] = entry
    path = winners_path(build_dir)
    write_json(path, data)
    return path


@dataclass(frozen=True)
class Applied:
    """What a builder changes from its defaults, and the record saying why."""
    override: dict
    record: dict


def applied(ctx, override: dict | None) -> Applied:
    """The override a builder applies: the one it was handed, else this target's winner, else none."""
    if override is not None:
        return Applied(dict(override), {"source": GRID, "override": dict(override)})
    variant = getattr(ctx, "variant", None)
    settings = getattr(ctx, "settings", None)
    if variant is None or settings is None:  # a builder called outside a build step (tests, explain)
        return Applied({}, {"source": DEFAULTS})
    winner = winner_for(settings.build_dir, variant.id)
    if winner is None:
        return Applied({}, {"source": DEFAULTS})
    return Applied(dict(winner.override), winner.recorded())


def freshness(settings, variant) -> dict:
    """What enters the variant's build freshness: the override its builder will apply. Empty for a
    variant no tune covers, so that a build folder without winners keeps today's stamps."""
    winner = winner_for(settings.build_dir, variant.id)
    return {RECORD_KEY: {"setting": winner.setting, "override": winner.override}} if winner else {}


def merged(defaults: dict, override: dict, what: str, implicit: dict | None = None) -> dict:
    """defaults with the override's values; a key the builder does not know is refused by name, and
    nested dicts (ONNX Runtime's extra_options) are merged key by key. `implicit`: settings a
    builder takes but does not list among its defaults, with the value it then uses; an override
    to that value changes nothing and is left out, so both spell the same setting."""
    implicit = implicit or {}
    known = {**implicit, **defaults}
    unknown = sorted(set(override) - set(known))
    if unknown:
        raise ValueError(f"{what}: no setting {unknown[0]!r} to override; known: {', '.join(sorted(known))}")
    out = dict(defaults)
    for key, value in override.items():
        if key not in defaults and implicit[key] == value:
            continue
        base = known[key]
        out[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    return out


def with_overridden_choices(recorded: dict, override: dict, source: str) -> dict:
    """A builder's recorded ISA choices (Int8Choices.recorded()) with the choices an override changed
    said so: the report's notes must name the value the artifact was built with, and why."""
    choices = []
    for choice in recorded.get("choices", []):
        setting = choice.get("setting")
        if setting in override and override[setting] != choice.get("value"):
            choice = {"setting": setting, "value": override[setting],
                      "reason": f"chosen by measurement ({source}), not the ISA rule's {choice.get('value')} "
                                f"({choice.get('reason', '')})"}
        choices.append(choice)
    return {**recorded, "choices": choices}
