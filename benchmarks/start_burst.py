"""Does a run start without a burst? (issue 14.8)

A sandbox whose Segment space allows 1,000 requests/s in a strict one-second window, no
latency, and `migrator run --dry-run` at SEGMENT_RATE_LIMIT=1000 started afresh N times:
each run's first seconds are where a limiter that lets its capacity out at once, while the
first connections are still being opened, draws 429s. Per run it prints the Segment
requests, the 429s, and the 429s by second since the run's first request.

    .venv/bin/python benchmarks/start_burst.py --runs 5 --markdown

Target: no 429 in any run's first three seconds, counted from its first Segment request
(README promises the limit is never crossed). A start burst shows in second 1 more than 0:
the window that rejects it is the one that also holds the burst's first second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from migrator_sandbox.server import ThreadedSandbox  # noqa: E402
from migrator_sandbox.settings import SandboxSettings  # noqa: E402

RATE = 1000


def _post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10).read()


def _stats(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url + "/_sandbox/stats", timeout=10) as answer:
        return dict(json.load(answer))


def _start(by_second: dict[int, int]) -> int:
    return sum(n for second, n in by_second.items() if second < 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profiles", type=int, default=3000)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    settings = SandboxSettings(profiles=args.profiles, segment_rate=RATE, voucherify_rate=0)
    rows = []
    with ThreadedSandbox(settings) as sb:
        env = {**os.environ, **sb.env(), "SEGMENT_RATE_LIMIT": str(RATE)}
        for run in range(1, args.runs + 1):
            _post(sb.url + "/_sandbox/reset-stats")
            with tempfile.TemporaryDirectory() as out:
                done = subprocess.run(
                    [sys.executable, "-m", "migrator.entry", "run", "--no-input", "--dry-run"]
                    + ["--out-dir", out],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
            stats = _stats(sb.url)
            by_second = {int(k): v for k, v in dict(stats["segment_429_by_second"]).items()}
            rows.append((run, done.returncode, stats["segment_requests"], by_second))
    header = "| run | exit | Segment requests | 429 | 429 in the first 3 s | 429 by second |"
    print(header)
    print("|---|---|---|---|---|---|")
    for run, code, requests, by_second in rows:
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(by_second.items())) or "-"
        print(
            f"| {run} | {code} | {requests} | {sum(by_second.values())} | "
            f"{_start(by_second)} | {shown} |"
        )
    missed = [run for run, _, _, by_second in rows if _start(by_second)]
    print(f"\ntarget (no 429 in any run's first 3 s): {'MISSED' if missed else 'met'}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
