"""Small measuring tools: latency summaries and a process's memory and CPU from /proc."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """n, p50, p95, p99, mean and max of latencies given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(sum(ms) / len(ms), 2) if ms else math.nan,
        "max_ms": round(max(ms), 2) if ms else math.nan,
    }


def summary_count(values: list[int]) -> dict[str, float]:
    """min, median and max of counts."""
    if not values:
        return {"min": math.nan, "p50": math.nan, "max": math.nan}
    return {
        "min": min(values),
        "p50": percentile([float(v) for v in values], 50),
        "max": max(values),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else math.nan


def rss_mib(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak (VmHWM), MiB."""
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mib": found.get("VmRSS", math.nan), "peak_rss_mib": found.get("VmHWM", math.nan)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may hold spaces; the fields after it are fixed.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSample:
    pid: int
    cpu: float
    wall: float

    @classmethod
    def now(cls, pid: int) -> CpuSample:
        return cls(pid, cpu_seconds(pid), time.monotonic())

    def percent_since(self) -> float:
        """CPU used since this sample, as a percentage of one core."""
        later = CpuSample.now(self.pid)
        wall = later.wall - self.wall
        return round(100 * (later.cpu - self.cpu) / wall, 1) if wall > 0 else math.nan


def machine_busy_cpu_seconds() -> float:
    """CPU time every core of the machine has spent busy so far (/proc/stat: all but idle and
    iowait), whoever used it: on a shared box, what is left for the processes measured."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")
