"""Package energy from Linux RAPL counters, where the machine exposes and allows them."""
from __future__ import annotations

from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


def _package_zones(root: Path = POWERCAP) -> list[Path]:
    # Top-level zones (intel-rapl:0, intel-rapl:1) are whole packages; sub-zones would double count.
    return sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)


class RaplMeter:
    """Reads cumulative package energy in microjoules; `available` is False where it cannot."""

    def __init__(self, root: Path = POWERCAP):
        self.zones = []
        for zone in _package_zones(root):
            try:
                int((zone / "energy_uj").read_text())
                limit = int((zone / "max_energy_range_uj").read_text())
                self.zones.append((zone / "energy_uj", limit))
            except (OSError, ValueError):
                continue
        self.available = bool(self.zones)
        self.reason = "RAPL" if self.available else "no RAPL"

    def read(self) -> list[int]:
        return [int(path.read_text()) for path, _ in self.zones]

    def joules_between(self, before: list[int], after: list[int]) -> float:
        total = 0
        for (_, limit), start, end in zip(self.zones, before, after):
            total += end - start if end >= start else end + limit - start  # counter wrapped
        return total / 1e6
