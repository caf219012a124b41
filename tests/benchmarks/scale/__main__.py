"""``make bench-scale``: run the scale scenarios, print the checks, write docs/benchmarks.md's section.

PYTHONPATH=src python -m tests.benchmarks.scale                      # 100,000 users, a week
PYTHONPATH=src python -m tests.benchmarks.scale --users 2000 --days 1 --report /tmp/b.md   # a smoke run
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from tiktok_archive.models.check_schedule import CheckBudget
from tiktok_archive.models.tiktok_quota import QuotaPlan

from .functions import CHECK_SECONDS
from .report import Figures, duration, plot, summarise, write_section
from .sections import lines
from .simulator import DAY, Scenario, run
from .tiktok import ENDPOINTS

REPO_ROOT = Path(__file__).resolve().parents[3]
KEEPS_UP = 0.97  # the checks keep up when they make this share of those needed (a minute's noise aside)


def scenarios(users: int, days: float, seed: int, quota: int) -> list[Scenario]:
    """The week with and without webhooks, and every user at once (as fast as the API's throttle)."""
    week = days * DAY
    burst = users / 9  # POST /requests at 9 a second: under the stage's 10-a-second throttle
    return [
        Scenario("week, webhooks on", users, week, week + 1.5 * DAY, webhooks=True, seed=seed, quota=quota),
        Scenario("week, webhooks off", users, week, week + 1.5 * DAY, webhooks=False, seed=seed, quota=quota),
        # Measured while they wait: 12 hours after the last add, about 7 % are still being prepared.
        Scenario(
            "all at once, webhooks on", users, burst, burst + DAY / 2, webhooks=True, seed=seed, quota=quota
        ),
    ]


def check_capacity(base: Scenario, check_seconds: float) -> int:
    """Status checks a minute the service makes: the checks' budget, or the lifecycle's pace if lower.

    The budget: what the checks' priority may draw from the shared quota (:class:`CheckBudget`). An
    invocation starts a check at most every ``STATUS_POLL_PACE_MS``, and not before the last one ended
    (``check_seconds``: TikTok's answer and the AWS calls around it).
    """
    pacing = base.lifecycle_concurrency * 60 / max(base.pace_ms / 1000, check_seconds)
    budget = CheckBudget.of(QuotaPlan(base.quota, base.quota_share_percent))
    return min(budget.checks_per_minute, int(pacing))


def capacity_scenarios(base: Scenario, check_seconds: float) -> tuple[int, list[Scenario]]:
    """Webhooks off: the most waiting requests the checks allow at the longest interval, and 1.2× it."""
    most = check_capacity(base, check_seconds) * base.poll_longest // 60
    runs = []
    for label, users in (("N", most), ("1.2 N", int(most * 1.2))):
        arrival = users / 9
        runs.append(
            Scenario(
                f"polling only, {users:,} waiting ({label})",
                users,
                arrival,
                arrival + 3 * 3600,
                webhooks=False,
                seed=base.seed,
                quota=base.quota,
                prep_median_hours=10_000,  # never ready while measured: every request keeps waiting
                prep_sigma=0.0,
                never_ready=0.0,
                outages=0,
            )
        )
    return most, runs


def run_all(runs: list[Scenario], jobs: int) -> list[Figures]:
    """Run ``runs`` on ``jobs`` processes; their figures, in order."""
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(run, runs))
    figures = [summarise(result) for result in results]
    for f in figures:
        result = f.result
        print(
            f"{result.scenario.name}: {result.scenario.users:,} users, {result.wall_seconds:.0f} s, "
            f"{result.events:,} events; peak calls/min {f.peak_calls}; 429s {f.refused:,}; "
            f"ready→stored p50 {duration(f.p50)} p99 {duration(f.p99)} (TikTok up: {duration(f.p99_up)})",
            flush=True,
        )
    return figures


def checks_made(figures: Figures) -> tuple[float, float]:
    """Check calls a minute in the last hour (after the adds and the back-off's ramp), and those needed.

    Needed: every waiting request checked once per longest interval. A check that comes late spaces the
    next one from when it ran, so beyond the most the checks allow they come sparser, not ever later.
    """
    result = figures.result
    made = result.calls["check"][-60:]
    needed = result.scenario.users * 60 / result.scenario.poll_longest
    return sum(made) / max(1, len(made)), needed


def keeps_up(figures: Figures) -> bool:
    made, needed = checks_made(figures)
    return made >= KEEPS_UP * needed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="users, one request each")
    parser.add_argument("--days", type=float, default=7.0, help="the adds are spread over this many days")
    parser.add_argument("--quota", type=int, default=1000, help="TikTok's calls a minute per endpoint")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--report", default=str(REPO_ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--jobs", type=int, default=5, help="scenarios run at once, one process each")
    parser.add_argument("--keep", help="also pickle the runs' figures into this file")
    args = parser.parse_args(argv)
    started = time.monotonic()
    main_runs = scenarios(args.users, args.days, args.seed, args.quota)
    most, capacity_runs = capacity_scenarios(main_runs[1], CHECK_SECONDS)
    figures = run_all([*main_runs, *capacity_runs], args.jobs)
    if args.keep:
        Path(args.keep).write_bytes(pickle.dumps(figures))
    checks = done_when(figures, most)
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    plot(figures[:3], report.with_name("benchmarks-scale.png"))
    write_section(report, section(figures, checks, most, args, time.monotonic() - started))
    print()
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'} {text}")
    minutes = (time.monotonic() - started) / 60
    print(f"\nwrote {report} and {report.with_name('benchmarks-scale.png')} in {minutes:.1f} min")
    return 0


def done_when(figures: list[Figures], most: int) -> list[tuple[bool, str]]:
    burst, at_most, beyond = figures[2], figures[3], figures[4]
    quota = burst.result.scenario.quota
    p99 = burst.p99_up if burst.p99_up is not None else float("inf")
    interval = burst.result.scenario.poll_longest
    return [
        (
            burst.minutes_over == 0,
            f"webhooks on, {burst.peak_waiting:,} waiting at the peak: every minute under TikTok's quota "
            f"({burst.minutes_over} minutes over, {burst.refused:,} 429s; peak calls a minute "
            + ", ".join(f"{e} {burst.peak_calls[e]:,}" for e in ENDPOINTS if burst.peak_calls[e])
            + f"; quota {quota:,})",
        ),
        (
            p99 < 300,
            f"webhooks on, all at once: p99 ready → stored {duration(burst.p99_up)} < 5 min, counted from "
            f"when TikTok could serve the archive ({duration(burst.p99)} counting the time TikTok was down: "
            "nothing is downloaded during its outages)",
        ),
        (
            at_most.minutes_over == 0 and keeps_up(at_most),
            f"webhooks off, {most:,} waiting (check capacity × {interval // 60} min): under the quota "
            f"({at_most.minutes_over} minutes over) and every one checked every {interval // 60} minutes "
            "({:.0f} checks a minute made in the last hour, {:.0f} needed)".format(*checks_made(at_most)),
        ),
        (
            beyond.minutes_over > 0 or not keeps_up(beyond),
            f"webhooks off, 1.2 × that ({beyond.result.scenario.users:,}): exceeds or defers "
            f"({beyond.minutes_over} minutes over; {sum(beyond.result.deferred.values()):,} checks deferred "
            "by the budget; {:.0f} checks a minute made in the last hour, {:.0f} needed: each request's "
            "checks come sparser than every {} minutes)".format(*checks_made(beyond), interval // 60),
        ),
    ]


def section(
    figures: list[Figures],
    checks: list[tuple[bool, str]],
    most: int,
    args: argparse.Namespace,
    elapsed: float,
) -> list[str]:
    return lines(figures, checks, most, args, elapsed, datetime.now(UTC))


if __name__ == "__main__":
    sys.exit(main())
