"""Cold start per function: importing its handler against a bare ``import boto3``, paired, in fresh processes.

For every ``AWS::Serverless::Function`` of template.yaml: its ``Handler``'s module, in the environment the
template gives the function (placeholder resource names), plus what Lambda sets (``LAMBDA_TASK_ROOT``), with
tracing as the template configures it (``Tracing: Active``: the Powertools Tracer is on, as in Lambda). The
packages are laid out as ``sam build`` leaves them (:mod:`tests.benchmarks.lambda_tree`): without bytecode,
so each cold start compiles what it imports, and compiled ahead, as ``make build`` ships them.

Each round runs, per function, two fresh interpreters back to back — ``import boto3`` and ``import <the
handler's module>``, the order alternating by round — and takes the ratio of their import times (timed
inside the process, around the import). Reported per function: the median of those ratios (target ≤ 1.3×),
and

- **init duration**: the fresh process's wall time until the handler is resolved (what Lambda's Init
  Duration covers: the interpreter's start and the handler module's import), and
- **first call**: what the first invocation builds before its first AWS or TikTok call — the Tracer when
  tracing is on (the X-Ray SDK imported, botocore patched), the use cases of every route or message type,
  their adapters and clients — timed in a third process of the round, and import + first call as a ratio
  to the round's bare boto3: what moved out of the import is not gone, and this says so.

Run alone: ``PYTHONPATH=src .venv/bin/python -m tests.benchmarks.cold_start [--rounds N] [--write]``
(``--write`` rewrites docs/benchmarks.md's cold-start section); ``make bench`` runs it for that section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.lambda_tree import MODES, REPO_ROOT, SHIPPED, build_trees, lock_distributions
from tests.harness.cfn_template import LocalResources, Template

TARGET = 1.3
REPORT = REPO_ROOT / "docs" / "benchmarks.md"
REGION = "eu-west-1"
# What each function's first invocation builds (``module.builder`` of the runtime), every route or
# message type's: an upper bound of one call's.
FIRST_CALL = {
    "ApiFunction": (
        "runtime.add_request",
        "runtime.caller_downloads",
        "runtime.cancel_request",
        "runtime.record_queries",
        "runtime_adapters.lifecycle_queue",
    ),
    "WorkerFunction": ("runtime.queued_downloads", "runtime_adapters.message_visibility"),
    "LifecycleFunction": (
        "runtime.status_checks",
        "runtime.archive_ready",
        "runtime.user_purge",
        "runtime_adapters.message_visibility",
    ),
    "WebhookFunction": (
        "runtime.webhook_receiver",
        "runtime_adapters.webhook_deliveries",
        "runtime_adapters.lifecycle_queue",
        "runtime_adapters.app_credentials",
    ),
    "SweeperFunction": ("runtime.status_checks",),
}
CHILD = """import sys, time
started = time.perf_counter()
sys.path[:0] = [{tree!r}]
import importlib, json
module = importlib.import_module({module!r})
handler = getattr(module, {attribute!r}, None)
imported = time.perf_counter()
result = {{"import_ms": (imported - started) * 1000}}
if {first_call!r}:
    from tiktok_archive import observability, runtime, runtime_adapters
    observability.tracer.active()
    for name in {first_call!r}:
        owner, _, builder = name.partition(".")
        getattr({{"runtime": runtime, "runtime_adapters": runtime_adapters}}[owner], builder)()
    result["first_call_ms"] = (time.perf_counter() - imported) * 1000
print(json.dumps(result))
"""


@dataclass(frozen=True)
class Function:
    """One function as the benchmark runs it."""

    name: str
    module: str
    attribute: str
    environment: dict[str, str]


@dataclass(frozen=True)
class Result:
    """One function's medians in one mode."""

    function: str
    mode: str
    boto3_ms: float
    import_ms: float
    ratio: float
    init_ms: float
    first_call_ms: float
    total_ratio: float

    @property
    def passed(self) -> bool:
        return self.ratio <= TARGET


def placeholder_resources(template: Template) -> LocalResources:
    """Every resource of ``template`` under a made-up name, as CloudFormation would name its attributes."""
    local = LocalResources(region=REGION)
    account = local.account_id
    for logical_id, resource in template.document["Resources"].items():
        kind, name = resource["Type"], f"{logical_id.lower()}-bench"
        if kind == "AWS::S3::Bucket":
            local = local.with_bucket(logical_id, name)
        elif kind == "AWS::DynamoDB::Table":
            local = local.with_table(logical_id, name)
        elif kind == "AWS::SQS::Queue":
            local = local.with_queue(logical_id, f"https://sqs.{REGION}.amazonaws.com/{account}/{name}")
        elif kind == "AWS::KMS::Key":
            local = local.with_key(logical_id, "00000000-0000-0000-0000-000000000000")
        elif kind == "AWS::Logs::LogGroup":
            local = local.with_log_group(logical_id, name)
        else:
            service = kind.split("::")[1].lower()
            arn = f"arn:aws:{service}:{REGION}:{account}:{name}"
            local = local.with_resource(logical_id, arn if kind.endswith("Secret") else name, Arn=arn)
            if kind == "AWS::Serverless::Function":
                role = f"arn:aws:iam::{account}:role/{logical_id}Role-bench"
                local = local.with_resource(f"{logical_id}Role", f"{logical_id}Role-bench", Arn=role)
    return local


def functions(template: Template | None = None) -> list[Function]:
    """The template's functions, each with its handler and the environment Lambda would give it."""
    template = template or Template.load()
    local = placeholder_resources(template)
    found = []
    for name in template.functions():
        environment = template.function_environment(name, local)
        module, _, attribute = environment["_HANDLER"].rpartition(".")
        process = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "LAMBDA_TASK_ROOT": "/var/task",
            # /var/task is read-only: nothing the process compiles is kept.
            "PYTHONDONTWRITEBYTECODE": "1",
            **environment,
        }
        found.append(Function(name, module, attribute, process))
    return found


def run_child(tree: Path, function: Function, module: str, *, first_call: bool = False) -> dict[str, float]:
    """One fresh interpreter importing ``module`` from ``tree`` in ``function``'s environment.

    Returns its in-process times and ``process_ms``, the process's wall time.
    """
    code = CHILD.format(
        tree=str(tree),
        module=module,
        attribute=function.attribute,
        first_call=FIRST_CALL.get(function.name, ()) if first_call else (),
    )
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-S", "-B", "-c", code],
        env=function.environment,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = (time.perf_counter() - started) * 1000
    if completed.returncode != 0:
        raise RuntimeError(f"{function.name}: importing {module} failed:\n{completed.stderr[-3000:]}")
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["process_ms"] = wall
    return result


def measure(trees: dict[str, Path], chosen: list[Function], rounds: int) -> list[Result]:
    """``rounds`` paired rounds per function and mode; the medians."""
    samples: dict[tuple[str, str], list[tuple[dict[str, float], dict[str, float], dict[str, float]]]] = {}
    for tree in trees.values():
        for function in chosen:  # once each, not kept: the file-system cache warms alike
            run_child(tree, function, function.module)
    for number in range(rounds):
        for mode, tree in trees.items():
            for function in chosen:
                first, second = ("boto3", function.module)[:: 1 if number % 2 == 0 else -1]
                times = {first: run_child(tree, function, first), second: run_child(tree, function, second)}
                called = run_child(tree, function, function.module, first_call=True)
                samples.setdefault((function.name, mode), []).append(
                    (times["boto3"], times[function.module], called)
                )
        print(f"  cold start: round {number + 1}/{rounds}", file=sys.stderr, flush=True)
    results = []
    for (name, mode), runs in samples.items():
        results.append(
            Result(
                name,
                mode,
                boto3_ms=statistics.median(bare["import_ms"] for bare, _, _ in runs),
                import_ms=statistics.median(mine["import_ms"] for _, mine, _ in runs),
                ratio=statistics.median(mine["import_ms"] / bare["import_ms"] for bare, mine, _ in runs),
                init_ms=statistics.median(mine["process_ms"] for _, mine, _ in runs),
                first_call_ms=statistics.median(called["first_call_ms"] for _, _, called in runs),
                total_ratio=statistics.median(
                    (called["import_ms"] + called["first_call_ms"]) / bare["import_ms"]
                    for bare, _, called in runs
                ),
            )
        )
    return results


def cold_starts(rounds: int = 11, names: list[str] | None = None) -> list[Result]:
    """Measure every function (or those ``names``) in both modes."""
    chosen = [f for f in functions() if names is None or f.name in names]
    with tempfile.TemporaryDirectory(prefix="cold-start-") as scratch:
        trees, _ = build_trees(Path(scratch), {"lock": lock_distributions()})
        return measure(trees, chosen, rounds)


def targets(results: list[Result]) -> list[tuple[bool, str]]:
    """The issue's target per function, without bytecode on either side (``make bench``'s PASS/FAIL lines)."""
    return [
        (
            r.passed,
            f"cold start, {r.function}: import {r.import_ms:.0f} ms ≤ {TARGET} × bare boto3's "
            f"{r.boto3_ms:.0f} ms (median paired ratio {r.ratio:.2f}, no bytecode on either side; "
            f"import + first call: {r.total_ratio:.2f} ×)",
        )
        for r in results
        if r.mode == SHIPPED
    ]


def report(results: list[Result], rounds: int) -> list[str]:
    """The markdown of docs/benchmarks.md's "Import time (cold start)" section (without its heading)."""
    handlers = {f.name: f"{f.module}.{f.attribute}" for f in functions()}
    intro = (
        f"Per function of template.yaml, {rounds} rounds on Python {platform.python_version()}; in each, "
        "fresh interpreters (`python -S -B`) import bare `boto3` and the function's handler module back "
        "to back (order alternating), in the function's template environment with `LAMBDA_TASK_ROOT` set "
        "as Lambda sets it and tracing as the template configures it (`Tracing: Active`: the Tracer is "
        "on). Packages laid out as plain `sam build` leaves them (no bytecode: `/var/task` is read-only, so "
        "every cold start compiles what it imports) and compiled ahead, as `make build` ships them. The "
        "ratio is the "
        "median of the per-round ratios. Init duration: the fresh process's wall time until the handler "
        "is resolved (what Lambda's Init Duration covers). First call: what the first invocation builds "
        "before it calls AWS or TikTok — the Tracer (the X-Ray SDK imported, botocore patched) and every "
        "route's or message type's use cases with their adapters and clients, boto3 included — timed in "
        "a third process of the round; import + first call is that process's total, as a ratio to the "
        "round's bare boto3. `tests/benchmarks/cold_start.py`; run alone with `PYTHONPATH=src "
        ".venv/bin/python -m tests.benchmarks.cold_start --write`."
    )
    lines = [*textwrap.wrap(intro, width=105), ""]
    for mode in MODES:
        lines += [
            f"**{mode}**",
            "",
            "| function (handler) | bare `import boto3` (ms) | handler import (ms) | × bare boto3 "
            f"(target ≤ {TARGET}) | init duration (ms) | first call (ms) | "
            "import + first call, × bare boto3 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in (r for r in results if r.mode == mode):
            lines.append(
                f"| {r.function} (`{handlers[r.function]}`) | {r.boto3_ms:.0f} | {r.import_ms:.0f} | "
                f"{r.ratio:.2f} {'PASS' if r.passed else 'FAIL'} | {r.init_ms:.0f} | {r.first_call_ms:.0f} | "
                f"{r.total_ratio:.2f} |"
            )
        lines.append("")
    lines += textwrap.wrap(
        "What moved: a handler's import loads Powertools (Logger, Metrics, the event handler or the batch "
        "processor), the models and its own module, and nothing else; boto3, the use cases and their "
        "adapters are loaded by the builders the first call runs (each function only its own chain: the "
        "webhook and the sweeper never load the S3 transfer), and the X-Ray SDK by the first traced call — "
        "never when tracing is off. With tracing on, the X-Ray SDK is still paid once per container, in "
        "the first call instead of the init: the import + first call column is the cold start's whole "
        "cost.",
        width=105,
    )
    lines.append("")
    return lines


SECTION = "## Import time (cold start)"


def write_section(path: Path, lines: list[str]) -> None:
    """Replace the cold-start section of ``path`` (its heading up to the next one) with ``lines``."""
    text = path.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    rest = text[end:] if end != -1 else ""
    path.write_text(text[:start] + "\n".join([SECTION, "", *lines]).rstrip("\n") + "\n" + rest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="paired rounds per function and mode")
    parser.add_argument("--function", action="append", help="only this function (repeatable)")
    parser.add_argument("--write", action="store_true", help=f"rewrite {REPORT}'s cold-start section")
    args = parser.parse_args(argv)
    results = cold_starts(args.rounds, args.function)
    lines = report(results, args.rounds)
    print("\n".join(lines))
    if args.write:
        write_section(REPORT, lines)
        print(f"wrote the cold-start section of {REPORT}")
    for ok, text in targets(results):
        print(f"{'PASS' if ok else 'FAIL'} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
