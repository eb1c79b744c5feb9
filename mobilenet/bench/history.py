"""This machine's earlier runs, kept so that a rerun interval can include how far the machine
itself moves from one run to the next (stats.run_level_variance), which no session of one run
can see.

Every bench run adds one file, build/history/<UTC time>.json:

    {"schema": 1, "written": "2026-12-01T21:40:00.123456Z", "machine_id": "...",
     "settings": {what shapes a timing: warmup, burst, calls and seconds per session, sessions,
                  reference processes and their burst, the method's version},
     "rows": [{"variant", "threads", "artifact_sha256", "runtime_version",
               "log_p50": [ln of each session's p50 in ms], "log_speedup": [ln of each
               session's speed-up] or null (the reference itself, or no reference)}]}

Only runs of the same machine id and the same settings count, and a row only with the same
artifact and runtime version: a rebuilt artifact that is really faster is a change, not the
machine's spread. `invoke clean` removes build/, history included.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from mobilenet.bench.stats import RunLevel, run_level_variance
from mobilenet.files import write_json
from mobilenet.registry import REFERENCE_ID

log = logging.getLogger("mobilenet.bench.history")

SCHEMA = 1
# Bump when a change of method makes earlier runs' session values mean something else.
METHOD = 2
MIN_EARLIER_RUNS = 2  # two runs give one degree of freedom for the machine's run-to-run shift
MAX_EARLIER_RUNS = 20  # the newest ones: a machine from months ago is not this one
NOT_YET_KNOWN = "rerun spread not yet known"


def history_dir(build_dir: Path) -> Path:
    return Path(build_dir) / "history"


def timing_settings(plan_fields: dict, sessions: int) -> dict:
    """The settings a run's history must share with this one: what shapes a session's timing
    (thread counts are per row). plan_fields: a SessionPlan as a dict."""
    keep = ("warmup", "burst", "min_runs", "min_seconds", "reference_processes", "reference_burst", "reference_rounds")
    return {**{k: plan_fields.get(k) for k in keep}, "sessions": sessions, "method": METHOD}


@dataclass(frozen=True)
class RunLevels:
    """The run-level variances for absolute p50s and for speed-ups (None each: not known),
    and the sentence the results and the report give as the rerun intervals' basis."""
    p50: RunLevel | None
    speedup: RunLevel | None
    basis: str

    def as_dict(self) -> dict | None:
        """The Result's run_level field: what `invoke compare` needs to judge absolute p50s."""
        if self.p50 is None and self.speedup is None:
            return None
        out = {}
        for name, level in (("p50", self.p50), ("speedup", self.speedup)):
            if level is not None:
                out.update({f"{name}_log_var": level.log_var, f"{name}_log_var_se": level.log_var_se})
        level = self.p50 or self.speedup
        return {**out, "runs": level.runs, "rows": level.rows}


def _row_key(row: dict) -> tuple:
    return row["variant"], row["threads"], row.get("artifact_sha256"), row.get("runtime_version")


def _pooled(runs: list[dict], field: str) -> RunLevel | None:
    by_row: dict[tuple, tuple[list, list]] = {}
    for index, run in enumerate(runs):
        for row in run.get("rows", []):
            logs = row.get(field)
            if logs:
                values, indices = by_row.setdefault(_row_key(row), ([], []))
                values.append(logs)
                indices.append(index)
    rows = [(values, indices) for values, indices in by_row.values() if len(values) >= 2]
    estimate = run_level_variance([v for v, _ in rows], [i for _, i in rows]) if rows else None
    if estimate is None:
        return None
    used = {i for _, indices in rows for i in indices}
    return RunLevel(estimate[0], estimate[1], len(used), len(rows))


def run_levels(runs: list[dict]) -> RunLevels:
    """The pooled run-level variances from earlier runs (earlier_runs), or why not yet."""
    if len(runs) < MIN_EARLIER_RUNS:
        count = f"{len(runs)} earlier run{'' if len(runs) == 1 else 's'}"
        return RunLevels(None, None, f"{NOT_YET_KNOWN}: {count} of this machine with these settings "
                                     f"({MIN_EARLIER_RUNS} needed)")
    p50, speedup = _pooled(runs, "log_p50"), _pooled(runs, "log_speedup")
    if p50 is None:
        return RunLevels(None, None, f"{NOT_YET_KNOWN}: no row measured in two of the {len(runs)} earlier runs "
                                     "with the same artifact")
    parts = [f"p50 {100 * math.sqrt(p50.log_var):.1f} %"]
    if speedup is not None:
        parts.append(f"speed-up {100 * math.sqrt(speedup.log_var):.1f} %")
    return RunLevels(p50, speedup, f"pooled run-level spread from {p50.runs} earlier runs of this machine "
                                   f"({p50.rows} rows): {', '.join(parts)} per run beyond the sessions' noise")


def earlier_runs(folder: Path, machine_id: str, settings: dict, limit: int = MAX_EARLIER_RUNS) -> list[dict]:
    """This machine's runs with these settings, oldest first, the newest `limit` of them. A file
    that cannot be read is skipped with a warning: history informs an interval, it never stops a run."""
    runs = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            run = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("history: %s is not readable (%s); skipped", path, exc)
            continue
        if (isinstance(run, dict) and run.get("schema") == SCHEMA and run.get("machine_id") == machine_id
                and run.get("settings") == settings):
            runs.append(run)
    runs.sort(key=lambda run: run.get("written", ""))
    return runs[-limit:]


def history_rows(results) -> list[dict]:
    """A run's rows for its history file: the session log values of every measured row."""
    rows = []
    for r in results:
        if not r.measured or not r.session_p50_ms or r.env.emulated:
            continue
        speedups = r.session_speedups if r.variant != REFERENCE_ID and r.session_speedups else None
        rows.append({"variant": r.variant, "threads": r.threads, "artifact_sha256": r.inputs.get("artifact_sha256"),
                     "runtime_version": r.runtime_version,
                     "log_p50": [math.log(v) for v in r.session_p50_ms],
                     "log_speedup": [math.log(v) for v in speedups] if speedups else None})
    return rows


def record(folder: Path, machine_id: str, settings: dict, results, now: dt.datetime | None = None) -> Path | None:
    """Add this run to the history; None when no row was measured."""
    rows = history_rows(results)
    if not rows:
        return None
    now = now or dt.datetime.now(dt.UTC)
    written = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    path = Path(folder) / f"{now.strftime('%Y%m%dT%H%M%S%fZ')}.json"
    write_json(path, {"schema": SCHEMA, "written": written, "machine_id": machine_id, "settings": settings,
                      "rows": rows})
    return path
