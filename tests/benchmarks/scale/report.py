"""The scale runs' figures: peaks, latencies, requests and cost per archive, the checks, a plot, a section.

The section is written into docs/benchmarks.md between :data:`START_MARK` and :data:`END_MARK`
(``make bench`` keeps it when it rewrites the rest of the file).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .aws import aws_requests
from .simulator import Result
from .tiktok import ENDPOINTS

START_MARK = "<!-- bench-scale:start -->"
END_MARK = "<!-- bench-scale:end -->"
MEMORY_GB = 0.5  # FunctionMemorySize's default, 512 MB

# On-demand prices, us-east-1 (eu-west-1 is the same for all but DynamoDB, ~13 % dearer there), from
# AWS's price pages as of 2024-11 (DynamoDB on-demand after its 2024-11-01 cut); not re-read online
# for this run. Free tiers are ignored.
PRICES = {
    "lambda.gb_second": 0.0000133334,  # arm64
    "lambda.request": 0.20 / 1e6,
    "dynamodb.write": 0.625 / 1e6,  # per WRU
    "dynamodb.read": 0.125 / 1e6,  # per RRU
    "sqs": 0.40 / 1e6,  # standard queue, per request (64 KB chunk)
    "kms": 0.03 / 1e4,
    "s3.put": 0.005 / 1e3,  # PUT/POST class: CreateMultipartUpload, UploadPart, CompleteMultipartUpload
    "eventbridge": 1.00 / 1e6,  # PutEvents custom events; Scheduler invocations the same
    "apigateway": 3.50 / 1e6,  # REST API requests
}


@dataclass(frozen=True)
class Figures:
    """One run, summarised."""

    result: Result
    peak_calls: dict[str, int]
    minutes_over: int
    refused: int
    p50: float | None
    p99: float | None
    p99_up: float | None  # from when TikTok could serve it (not from inside one of its outages)
    peak_waiting: int
    per_archive: dict[str, float]
    cost_per_1000: dict[str, float]


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def summarise(result: Result) -> Figures:
    quota = result.scenario.quota
    peak = {endpoint: max(result.calls[endpoint], default=0) for endpoint in ENDPOINTS}
    minutes = {
        minute for endpoint in ENDPOINTS for minute, count in enumerate(result.refused[endpoint]) if count > 0
    } | {
        minute
        for endpoint in ENDPOINTS
        for minute, count in enumerate(result.calls[endpoint])
        if count > quota
    }
    billed = aws_requests(Counter(result.counts))
    archives = max(1, result.archives)
    sqs = (
        billed["sqs.send"]
        + billed["sqs.receive"]
        + billed["sqs.delete_batch"]
        + billed["sqs.change_visibility"]
    )
    s3 = billed["s3.create_multipart"] + billed["s3.upload_part"] + billed["s3.complete_multipart"]
    invocations = sum(b.invocations for b in result.billing.values())
    gb_seconds = sum(b.seconds for b in result.billing.values()) * MEMORY_GB
    per_archive = {
        "Lambda invocations": invocations / archives,
        "Lambda GB-s": gb_seconds / archives,
        "DynamoDB reads (RRU)": billed["dynamodb.read"] / archives,
        "DynamoDB writes (WRU)": billed["dynamodb.write"] / archives,
        "SQS requests": sqs / archives,
        "KMS requests": billed["kms"] / archives,
        "S3 requests": s3 / archives,
        "EventBridge events": (billed["eventbridge"] + billed["eventbridge.scheduled"]) / archives,
        "API Gateway requests": billed["apigateway.request"] / archives,
    }
    cost = {
        "Lambda": 1000
        * (
            per_archive["Lambda GB-s"] * PRICES["lambda.gb_second"]
            + per_archive["Lambda invocations"] * PRICES["lambda.request"]
        ),
        "DynamoDB": 1000
        * (
            per_archive["DynamoDB reads (RRU)"] * PRICES["dynamodb.read"]
            + per_archive["DynamoDB writes (WRU)"] * PRICES["dynamodb.write"]
        ),
        "SQS": 1000 * per_archive["SQS requests"] * PRICES["sqs"],
        "KMS": 1000 * per_archive["KMS requests"] * PRICES["kms"],
        "S3 requests": 1000 * per_archive["S3 requests"] * PRICES["s3.put"],
        "EventBridge": 1000 * per_archive["EventBridge events"] * PRICES["eventbridge"],
        "API Gateway": 1000 * per_archive["API Gateway requests"] * PRICES["apigateway"],
    }
    return Figures(
        result,
        peak,
        len(minutes),
        sum(sum(series) for series in result.refused.values()),
        percentile(result.ready_to_stored, 0.50),
        percentile(result.ready_to_stored, 0.99),
        percentile(result.servable_to_stored, 0.99),
        max((count for _, count in result.waiting), default=0),
        per_archive,
        cost,
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plot(figures: list[Figures], path: Path) -> None:
    """TikTok calls a minute per endpoint over each run (the quota's line), and ready → stored CDFs."""
    import matplotlib  # noqa: PLC0415 - only the report draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    runs = [f for f in figures if f.result.scenario.users >= 0]
    figure, axes = plt.subplots(len(runs) + 1, 1, figsize=(11, 3.0 * (len(runs) + 1)))
    for axis, fig in zip(axes, runs, strict=False):
        result = fig.result
        for endpoint in ("check", "download", "oauth", "add"):
            series = result.calls[endpoint]
            if any(series):
                axis.plot([m / 60 for m in range(len(series))], series, linewidth=0.6, label=endpoint)
        axis.axhline(result.scenario.quota, color="red", linestyle="--", linewidth=0.8, label="quota")
        axis.set_title(f"{result.scenario.name}: TikTok calls per minute", fontsize=9)
        axis.set_xlabel("hours", fontsize=8)
        axis.legend(fontsize=7, loc="upper right")
    cdf = axes[-1]
    for fig in runs:
        values = sorted(fig.result.ready_to_stored)
        if values:
            cdf.plot(
                [v / 60 for v in values],
                [i / len(values) for i in range(1, len(values) + 1)],
                label=fig.result.scenario.name,
            )
    cdf.set_xscale("log")
    cdf.set_xlabel("ready at TikTok → stored (minutes, log)", fontsize=8)
    cdf.set_title("ready → stored, cumulative share of archives", fontsize=9)
    cdf.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_section(report: Path, section: list[str]) -> None:
    """Put ``section`` between the markers of ``report`` (appended, with them, when they are missing)."""
    text = report.read_text() if report.exists() else ""
    block = "\n".join([START_MARK, *section, END_MARK])
    if START_MARK in text and END_MARK in text:
        before = text[: text.index(START_MARK)]
        after = text[text.index(END_MARK) + len(END_MARK) :]
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    report.write_text(text)
