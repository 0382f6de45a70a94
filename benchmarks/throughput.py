"""Throughput, pacing and memory benchmarks of `migrator run` against the sandbox.

Every scenario starts the sandbox in its own process (`python -m migrator_sandbox`), runs
`migrator run --no-input` as a second process against it, and measures from the outside:

* Segment throughput from the sandbox's stats: profiles / (last - first Segment request),
  against the ceiling R / 2.01 (traits + external ids + 1/100 of a list call per profile);
  Segment calls per profile (answered, 429s excluded) and the 429s answered;
* the migrator's peak RSS (the kernel's high-water mark from `wait4`, psutil as a fallback)
  and its CPU time, with the sandbox's CPU time beside it (both share the machine);
* Voucherify pacing, from the stats sampled once a second: over the write window (first
  Voucherify request to the last new bulk POST), writes / budget = bulk POSTs /
  (limit x window - polls), polls being list calls + GETs of single actions;
* correctness from the sandbox's oracle (`GET /_sandbox/verify`).

Scenarios and their targets (latency 50-150 ms per request unless said otherwise):

  r100        5,000 profiles, Segment 100 req/s: >= 95% of the ceiling, <= 1% 429s
  r1000       20,000 profiles, Segment 1,000 req/s: >= 90% of the ceiling
  nolimit     10,000 profiles, no limit, no latency: the tool itself (profiles per CPU
              second of the migrator) >= 1,500 profiles/s
  memory      100,000 profiles as nolimit: peak RSS within 20% of nolimit's, < 150 MB
  voucherify  12,000 profiles, Voucherify 100 req/min (Segment unlimited): no 429,
              writes >= 95% of the budget polling leaves

It prints one table and exits 1 when a target is missed, 2 when a run broke. Usage:

    .venv/bin/python benchmarks/throughput.py                    # every scenario
    .venv/bin/python benchmarks/throughput.py --scenarios r100,nolimit --markdown
    .venv/bin/python benchmarks/throughput.py --quick            # a CI smoke, no timed targets

Nothing here loosens the sandbox: the limits are strict, as the real APIs enforce them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Segment calls per profile at best: traits + external_ids + 1/100 of a list call.
CALLS_PER_PROFILE = 2.01
#: Peak RSS limits of the memory targets.
RSS_LIMIT_MB = 150.0
RSS_GROWTH = 1.20

_children: list[subprocess.Popen[Any]] = []
#: For profiling: a command put before the interpreter (py-spy record ... --) and options
#: put before `-m migrator.cli` (-m cProfile -o ...). Peak RSS is then the wrapper's.
MIGRATOR_WRAPPER: list[str] = []
MIGRATOR_PREFIX: list[str] = []


# -- scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    profiles: int
    quick_profiles: int
    segment_rate: int  # the sandbox's (0 = no limit) and, when > 0, the migrator's
    voucherify_rate: int  # per minute; same convention
    latency: str | None = "50,150"
    migrator_env: dict[str, str] = field(default_factory=dict)
    target_pct: float | None = None  # of the Segment ceiling R / 2.01
    max_429_share: float | None = None  # of the Segment requests
    target_profiles_per_s: float | None = None  # of the tool itself (per migrator CPU s)
    timeout: float = 600.0
    sample_every: float = 1.0  # seconds between stats samples during the run


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "r100",
            "Segment 100 req/s",
            5_000,
            200,
            segment_rate=100,
            voucherify_rate=2_000,
            target_pct=95.0,
            max_429_share=0.01,
        ),
        Scenario(
            "r1000",
            "Segment 1,000 req/s",
            20_000,
            1_000,
            segment_rate=1_000,
            voucherify_rate=2_000,
            target_pct=90.0,
        ),
        Scenario(
            "nolimit",
            "no limit, no latency",
            10_000,
            300,
            segment_rate=0,
            voucherify_rate=0,
            latency=None,
            migrator_env={"SEGMENT_RATE_LIMIT": "100000", "VOUCHERIFY_RATE_LIMIT": "600000"},
            target_profiles_per_s=1_500.0,
        ),
        Scenario(
            "memory",
            "no limit, 100k profiles",
            100_000,
            3_000,
            segment_rate=0,
            voucherify_rate=0,
            latency=None,
            migrator_env={"SEGMENT_RATE_LIMIT": "100000", "VOUCHERIFY_RATE_LIMIT": "600000"},
            timeout=900.0,
        ),
        Scenario(
            "voucherify",
            "Voucherify 100 req/min",
            12_000,
            300,
            segment_rate=0,
            voucherify_rate=100,
            migrator_env={"SEGMENT_RATE_LIMIT": "100000"},
            timeout=900.0,
            sample_every=0.25,  # the write window ends at the last new bulk POST
        ),
    )
}
#: `memory` compares its peak RSS with this scenario's (run first when both are asked for).
MEMORY_BASELINE = "nolimit"


# -- processes ------------------------------------------------------------------------------


def _spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(cmd, **kwargs)
    _children.append(proc)
    return proc


def _stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGINT (the sandbox stops cleanly on it), then SIGKILL after `grace` seconds."""
    if proc.returncode is None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
    if proc in _children:
        _children.remove(proc)


def _kill_all() -> None:
    for proc in list(_children):
        with contextlib.suppress(Exception):
            _stop(proc, 2.0)


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sandbox_process(
    scenario: Scenario, profiles: int, workdir: Path, timeout: float = 60.0
) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[Any]]]:
    """Start `python -m migrator_sandbox` on a free port; yield its URL and exports."""
    cmd = [
        sys.executable,
        "-m",
        "migrator_sandbox",
        "--port",
        "0",
        "--profiles",
        str(profiles),
        "--segment-rate",
        str(scenario.segment_rate),
        "--voucherify-rate",
        str(scenario.voucherify_rate),
    ]
    if scenario.latency:
        cmd += ["--latency-ms", scenario.latency]
    log = (workdir / "sandbox.log").open("w")
    proc = _spawn(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=_clean_env(),
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    exports: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"the sandbox did not start within {timeout:.0f} s") from None
            if line is None:
                raise RuntimeError(f"the sandbox exited: {(workdir / 'sandbox.log').read_text()}")
            match = re.match(r"export (\w+)=(.*)$", line.strip())
            if match:
                exports[match.group(1)] = match.group(2).strip("'")
            elif line.startswith("# sandbox"):
                break
        yield exports["SEGMENT_API_URL"], exports, proc
    finally:
        _stop(proc)
        log.close()


def _clean_env() -> dict[str, str]:
    """The caller's environment without any migrator setting that could skew a scenario."""
    prefixes = ("SEGMENT_", "VOUCHERIFY_", "IDENTIFIER_", "REQUEST_TIMEOUT", "MAX_ATTEMPTS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _get(url: str, timeout: float = 30.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def _post(url: str, timeout: float = 10.0) -> None:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - loopback
        pass


@dataclass
class Sample:
    at: float
    bulk: int
    polls: int
    voucherify: int
    segment: int
    segment_429: int
    rss_mb: float


@dataclass
class MigratorRun:
    returncode: int
    wall: float
    peak_rss_mb: float
    cpu_seconds: float
    samples: list[Sample]
    timed_out: bool
    output_tail: str


def _polls(stats: dict[str, Any]) -> int:
    endpoints = stats.get("voucherify_endpoints") or {}
    return int(endpoints.get("voucherify.actions", 0)) + int(endpoints.get("voucherify.action", 0))


def run_migrator(
    url: str, env: dict[str, str], workdir: Path, timeout: float, sample_every: float = 1.0
) -> MigratorRun:
    """`migrator run --no-input` in its own process; peak RSS and stats samples on the side."""
    import psutil

    out_dir = workdir / "out"
    log_path = workdir / "migrator.log"
    samples: list[Sample] = []
    started = time.monotonic()
    peak = 0
    timed_out = False
    rusage = None
    with log_path.open("w") as log:
        proc = _spawn(
            [
                *MIGRATOR_WRAPPER,
                sys.executable,
                *MIGRATOR_PREFIX,
                "-m",
                "migrator.cli",
                "run",
                "--no-input",
                "--out-dir",
                str(out_dir),
            ],
            cwd=workdir,  # no stray .env is read
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        ps = psutil.Process(proc.pid)
        next_sample = 0.0
        rss = 0
        try:
            while True:
                # wait4 on this child only: its own rusage, hence its own peak RSS.
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    rusage = usage
                    break
                with contextlib.suppress(psutil.Error):
                    rss = ps.memory_info().rss
                    peak = max(peak, rss)
                now = time.monotonic()
                if now >= next_sample:
                    next_sample = now + sample_every
                    with contextlib.suppress(OSError, ValueError):
                        stats = _get(url + "/_sandbox/stats", timeout=5)
                        samples.append(
                            Sample(
                                time.time(),
                                int(stats["bulk_requests"]),
                                _polls(stats),
                                int(stats["voucherify_requests"]),
                                int(stats["segment_requests"]),
                                int(stats["segment_429"]),
                                rss / 2**20,
                            )
                        )
                if now - started > timeout:
                    timed_out = True
                    proc.kill()
                time.sleep(min(0.2, sample_every))
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait(10)
            if proc in _children:
                _children.remove(proc)
    wall = time.monotonic() - started
    cpu = 0.0
    if rusage is not None:
        peak = max(peak, rusage.ru_maxrss * 1024)  # KiB on Linux
        cpu = rusage.ru_utime + rusage.ru_stime
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
    return MigratorRun(proc.returncode or 0, wall, peak / 2**20, cpu, samples, timed_out, tail)


# -- one scenario ---------------------------------------------------------------------------


@dataclass
class Result:
    scenario: Scenario
    profiles: int
    elapsed: float = 0.0  # first to last Segment request
    profiles_per_s: float = 0.0
    ceiling: float | None = None
    pct_of_ceiling: float | None = None
    segment_requests: int = 0
    calls_per_profile: float = 0.0
    segment_429: int = 0
    segment_429_first_second: int = 0
    voucherify_429: int = 0
    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0
    sandbox_cpu_seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    verified: bool = False
    exit_code: int = -1
    bulk: int = 0
    polls: int = 0
    write_window_s: float = 0.0
    write_share: float | None = None  # bulk / (limit over the window - polls)
    host_ms: float = 0.0  # the calibration loop just before the run (lower: faster host)
    repetition: int = 0  # 1, 2, ... with --repeat; 0 otherwise
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def own_profiles_per_s(self) -> float:
        """The tool's own speed: profiles per CPU second of the migrator process.

        Wall-clock profiles/s with no limit measures the slower of two processes that share
        this 2-core machine (the sandbox costs about as much CPU as the migrator); this
        number is the migrator's alone, the inverse of its CPU cost per profile.
        """
        return self.profiles / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None

    @property
    def label(self) -> str:
        name = self.scenario.name
        return f"{name} #{self.repetition}" if self.repetition else name


def calibrate() -> float:
    """Milliseconds of a fixed pure-Python loop, best of 3: how fast the host is right now.

    Shared or throttled hosts change speed from minute to minute; this number, taken just
    before each run, tells a slow run on a slow host from a slow migrator.
    """
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        table: dict[int, str] = {}
        for i in range(400_000):
            table[i & 1023] = str(i)
        best = min(best, time.process_time() - started)
    return 1000 * best


def _cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_scenario(scenario: Scenario, quick: bool, keep: bool) -> Result:
    profiles = scenario.quick_profiles if quick else scenario.profiles
    result = Result(scenario, profiles)
    workdir = Path(tempfile.mkdtemp(prefix=f"migrator-bench-{scenario.name}-"))
    try:
        with sandbox_process(scenario, profiles, workdir) as (url, exports, server):
            env = _clean_env() | exports
            if scenario.segment_rate > 0:
                env["SEGMENT_RATE_LIMIT"] = str(scenario.segment_rate)
            if scenario.voucherify_rate > 0:
                env["VOUCHERIFY_RATE_LIMIT"] = str(scenario.voucherify_rate)
            env |= scenario.migrator_env
            _post(url + "/_sandbox/reset-stats")
            result.host_ms = calibrate()
            before = _cpu(server.pid)
            run = run_migrator(url, env, workdir, scenario.timeout, scenario.sample_every)
            result.sandbox_cpu_seconds = _cpu(server.pid) - before
            stats = _get(url + "/_sandbox/stats")
            verdict = _get(url + "/_sandbox/verify", timeout=120)
        _measure(result, scenario, run, stats, verdict, quick)
    except Exception as exc:  # noqa: BLE001 - reported in the table, exit code 2
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if keep:
            result.notes.append(f"files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def _measure(
    result: Result,
    scenario: Scenario,
    run: MigratorRun,
    stats: dict[str, Any],
    verdict: dict[str, Any],
    quick: bool,
) -> None:
    result.exit_code = run.returncode
    result.peak_rss_mb = run.peak_rss_mb
    result.cpu_seconds = run.cpu_seconds
    result.samples = run.samples
    result.segment_requests = int(stats["segment_requests"])
    result.segment_429 = int(stats["segment_429"])
    by_second = stats.get("segment_429_by_second") or {}
    result.segment_429_first_second = int(by_second.get("0", by_second.get(0, 0)))
    result.voucherify_429 = int(stats["voucherify_429"])
    result.bulk = int(stats["bulk_requests"])
    result.polls = _polls(stats)
    first, last = stats["segment_first_request_at"], stats["segment_last_request_at"]
    if first is not None and last is not None and last > first:
        result.elapsed = last - first
        result.profiles_per_s = result.profiles / result.elapsed
    answered = result.segment_requests - result.segment_429
    result.calls_per_profile = answered / result.profiles if result.profiles else 0.0
    if scenario.segment_rate > 0:
        result.ceiling = scenario.segment_rate / CALLS_PER_PROFILE
        result.pct_of_ceiling = 100.0 * result.profiles_per_s / result.ceiling
    result.verified = bool(verdict.get("ok"))
    if run.timed_out:
        result.problems.append(f"migrator killed after {scenario.timeout:.0f} s")
    if run.returncode != 0:
        result.problems.append(f"migrator exited {run.returncode}:\n{run.output_tail}")
    if not result.verified:
        result.problems.append(
            "not verified: "
            + ", ".join(
                f"{k}={verdict.get(k)}"
                for k in ("expected", "arrived", "correct", "missing_count", "wrong_count")
            )
        )
    if scenario.voucherify_rate > 0 and scenario.name == "voucherify":
        _voucherify_pacing(result, scenario, stats)
    if quick:
        return  # a smoke run: too short for the timed targets to mean anything
    if scenario.target_pct is not None and (result.pct_of_ceiling or 0) < scenario.target_pct:
        result.problems.append(
            f"{result.pct_of_ceiling:.1f}% of the ceiling < {scenario.target_pct:.0f}%"
        )
    if scenario.segment_rate > 0 and result.segment_429_first_second:
        result.problems.append(  # issue 14.8: a run starts without a burst
            f"{result.segment_429_first_second} Segment 429s in the first second"
        )
    if scenario.max_429_share is not None:
        share = result.segment_429 / max(1, result.segment_requests)
        if share > scenario.max_429_share:
            result.problems.append(
                f"{100 * share:.2f}% of Segment requests got 429 > "
                f"{100 * scenario.max_429_share:.0f}%"
            )
    target = scenario.target_profiles_per_s
    if target is not None and result.own_profiles_per_s < target:
        result.problems.append(
            f"{result.own_profiles_per_s:.0f} profiles per migrator CPU second < {target:.0f} "
            f"({1000 / max(result.own_profiles_per_s, 1e-9):.2f} ms of CPU per profile)"
        )
    if scenario.name == "voucherify":
        if result.voucherify_429:
            result.problems.append(f"{result.voucherify_429} Voucherify 429s (want none)")
        if result.write_share is not None and result.write_share < 0.95:
            result.problems.append(
                f"writes used {100 * result.write_share:.1f}% of what polling left (< 95%)"
            )


def _voucherify_pacing(result: Result, scenario: Scenario, stats: dict[str, Any]) -> None:
    """Writes per minute against what the limit leaves after polling, while writes happen.

    The window runs from the first Voucherify request to the last bulk POST (the tail that
    only waits for the last actions has nothing to write), both as the sandbox timed them.
    Budget = limit x window - polls in the window; share = bulk POSTs / budget. (Until
    stop 11 the end was the first 0.5 s sample showing the final bulk count, which made
    the window up to 0.5 s too long: ~1% of a 60 s window.)
    """
    first, last = stats.get("voucherify_first_request_at"), stats.get("last_bulk_at")
    bulk = int(stats.get("bulk_requests") or 0)
    if first is None or last is None or bulk == 0:
        return
    window = last - first
    polls = int(stats.get("polls_before_last_bulk") or 0)
    result.write_window_s = window
    if window <= 0:
        return
    budget = scenario.voucherify_rate * window / 60.0 - polls
    result.write_share = bulk / budget if budget > 0 else None
    requests = bulk + polls
    result.notes.append(
        f"voucherify: {bulk} bulk + {polls} polls in the {window:.1f} s write window "
        f"({60 * requests / window:.1f} req/min of {scenario.voucherify_rate}); "
        f"whole run {result.bulk} bulk, {result.polls} polls, "
        f"{stats['voucherify_requests']} requests"
    )


# -- the table ------------------------------------------------------------------------------

COLUMNS = (
    "scenario",
    "profiles",
    "elapsed s",
    "profiles/s",
    "ceiling",
    "% of ceiling",
    "calls/profile",
    "Segment 429",
    "429 in 1st s",
    "Voucherify 429",
    "writes/budget",
    "peak RSS MB",
    "CPU s (migrator / sandbox)",
    "profiles/CPU s",
    "host ms",
    "verified",
    "target",
)


def _row(r: Result) -> list[str]:
    if r.error:
        return [r.label, f"{r.profiles:,}", *["-"] * (len(COLUMNS) - 4), "no", "ERROR"]
    return [
        r.label,
        f"{r.profiles:,}",
        f"{r.elapsed:.1f}",
        f"{r.profiles_per_s:,.1f}",
        f"{r.ceiling:.1f}" if r.ceiling else "-",
        f"{r.pct_of_ceiling:.1f}%" if r.pct_of_ceiling is not None else "-",
        f"{r.calls_per_profile:.3f}",
        f"{r.segment_429} ({100 * r.segment_429 / max(1, r.segment_requests):.2f}%)",
        str(r.segment_429_first_second),
        str(r.voucherify_429),
        f"{100 * r.write_share:.1f}%" if r.write_share is not None else "-",
        f"{r.peak_rss_mb:.1f}",
        f"{r.cpu_seconds:.1f} / {r.sandbox_cpu_seconds:.1f}",
        f"{r.own_profiles_per_s:,.0f}" if r.cpu_seconds else "-",
        f"{r.host_ms:.0f}",
        "yes" if r.verified else "no",
        "met" if r.ok else "MISSED",
    ]


def render(results: list[Result], markdown: bool) -> str:
    rows = [list(COLUMNS)] + [_row(r) for r in results]
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    else:
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
    out = "\n".join(lines)
    details = []
    for r in results:
        for note in r.notes:
            details.append(f"{r.label}: {note}")
        if r.error:
            details.append(f"{r.label}: ERROR {r.error}")
        for problem in r.problems:
            details.append(f"{r.label}: MISSED {problem}")
    if details:
        bullet = "- " if markdown else "  "
        out += "\n\n" + "\n".join(bullet + d for d in details)
    return out


def _memory_check(results: dict[str, Result], quick: bool) -> None:
    big, small = results.get("memory"), results.get(MEMORY_BASELINE)
    if big is None or big.error:
        return
    if small is not None and not small.error and small.peak_rss_mb > 0:
        growth = big.peak_rss_mb / small.peak_rss_mb
        big.notes.append(
            f"peak RSS {big.peak_rss_mb:.1f} MB for {big.profiles:,} profiles vs "
            f"{small.peak_rss_mb:.1f} MB for {small.profiles:,} ({100 * (growth - 1):+.1f}%)"
        )
        if growth > RSS_GROWTH and not quick:
            big.problems.append(f"peak RSS grew {100 * (growth - 1):.1f}% (> 20%)")
    for r in results.values():
        if not r.error and r.peak_rss_mb > RSS_LIMIT_MB and not quick:
            r.problems.append(f"peak RSS {r.peak_rss_mb:.1f} MB >= {RSS_LIMIT_MB:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)} (memory also runs "
        f"{MEMORY_BASELINE}, its baseline)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, no timed targets")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--keep", action="store_true", help="keep each run's files")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="run the scenarios N times (rows #1..#N)"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; pick from {', '.join(SCENARIOS)}")
    if "memory" in names and MEMORY_BASELINE not in names:
        names.insert(names.index("memory"), MEMORY_BASELINE)

    signal.signal(signal.SIGTERM, _on_signal)
    ordered: list[Result] = []
    try:
        for repetition in range(1, max(1, args.repeat) + 1):
            results: dict[str, Result] = {}
            for name in names:
                print(f"# running {name} ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                result = run_scenario(SCENARIOS[name], args.quick, args.keep)
                result.repetition = repetition if args.repeat > 1 else 0
                results[name] = result
                print(
                    f"# {name} done in {time.monotonic() - started:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            _memory_check(results, args.quick)
            ordered += results.values()
    finally:
        _kill_all()
    print(render(ordered, args.markdown))
    if args.json:
        args.json.write_text(
            json.dumps([_as_json(r) for r in ordered], indent=2) + "\n", encoding="utf-8"
        )
    if any(r.error for r in ordered):
        return 2
    return 0 if all(r.ok for r in ordered) else 1


def _as_json(r: Result) -> dict[str, Any]:
    data = {k: v for k, v in r.__dict__.items() if k not in ("scenario", "samples")}
    data["samples"] = [s.__dict__ for s in r.samples]
    data["scenario"] = r.scenario.name
    return data


if __name__ == "__main__":
    sys.exit(main())
