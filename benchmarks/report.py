"""What every benchmark of ``make bench`` shares: a timed figure and its
percentiles, the machine it ran on, and how results are written and printed."""

from __future__ import annotations

import json
import math
import os
import platform
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any


def quantile(samples: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0.5: the median, 0.99: p99)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Figure:
    """The latencies (microseconds) of one operation by one implementation."""

    op: str
    impl: str
    samples_us: list[float] = field(repr=False)
    wall_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def quantile(self, q: float) -> float:
        return quantile(self.samples_us, q)

    def summary(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "impl": self.impl,
            "n": len(self.samples_us),
            "p50_us": round(self.quantile(0.50), 1),
            "p99_us": round(self.quantile(0.99), 1),
            "wall_s": None if self.wall_s is None else round(self.wall_s, 4),
            **self.extra,
        }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": package_version("sqlalchemy"),
        "aiosqlite": package_version("aiosqlite"),
        "asyncpg": maybe_version("asyncpg"),
    }


def maybe_version(name: str) -> str | None:
    try:
        return package_version(name)
    except Exception:
        return None


def write_results(
    out: Path,
    stem: str,
    report: str,
    result: dict[str, Any],
    render: Callable[[dict[str, Any], str | None], str],
    plot: Callable[[Path], bool] | None = None,
) -> Path:
    """``out/<stem>.json`` (every figure), ``out/<stem>.png`` when ``plot``
    draws one, and the markdown report ``out/<report>.md``; the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    png = f"{stem}.png" if plot is not None and plot(out / f"{stem}.png") else None
    path = out / f"{report}.md"
    path.write_text(render(result, png))
    return path


def print_targets(targets: list[dict[str, Any]]) -> None:
    for t in targets:
        print(f"{'ok  ' if t['met'] else 'MISS'} {t['target']}: {t['measured']}")
