"""What Powertools' Parser and Idempotency would cost and change here.

The numbers of docs/architecture.md's "Powertools where it fits".

Run: ``PYTHONPATH=src .venv/bin/python -m tests.benchmarks.powertools_cost [--rounds N]``.

1. **Cold start.** The function's packages (``src/requirements.txt``'s distributions, plus pydantic's when it
   is installed) and ``src/tiktok_archive`` are copied into two trees laid out as Lambda's ``/var/task``:
   one without bytecode, as ``sam build`` packages it (wheels unpacked, no ``__pycache__``; ``/var/task``
   is read-only, so every cold start compiles), one compiled ahead. Each variant — what the API and the
   webhook function import today, and that plus Parser with a model of the ``POST /requests`` body (with
   and without the API Gateway envelope), or plus Idempotency — is imported in a fresh ``python -S -B``
   per round, rounds rotating the order; once timed in-process (``perf_counter``) and once under
   ``-X importtime``. Reported: medians, and the median of the per-round ratios variant ÷ base.
2. **Parser's fit.** The same bodies through the hand-written ``parse_new_request`` and the pydantic model:
   where they disagree and whether an error's text echoes what the caller sent (needs pydantic).
3. **Idempotency's behaviour.** The hand-made dedupe (``WebhookDeliveries``, driven as
   ``logic/webhooks.py`` drives it) and ``idempotent_function`` with a ``DynamoDBPersistenceLayer`` on the
   same table schema, against moto (``mock_aws``, in-process): the outcome, the DynamoDB calls and the item
   left for each delivery scenario.

pydantic is not in the function's lock (the dev virtualenv has it, through aws-sam-translator); where it is
not installed, the Parser variants of part 1 and part 2 are skipped with a message, and part 3 without moto.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from botocore.exceptions import ClientError

from tests.benchmarks import lambda_tree
from tests.benchmarks.lambda_tree import MODES, lock_distributions
from tiktok_archive.adapters import webhook_deliveries
from tiktok_archive.models.errors import QueueError, ServiceError
from tiktok_archive.models.portability import parse_new_request
from tiktok_archive.models.webhook_errors import DeliveryInFlightError

PYDANTIC_DISTRIBUTIONS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")
REGION = "us-east-1"
TOKEN = "act.BENCH0000000000000000000000000000000000000000000000000000000000000000!1234.e1"

# POST /requests's body as a Parser model, as faithful to models/portability.py as pydantic allows
# without an error translator: strict types, unknown fields refused, inputs hidden from errors.
PARSER_MODEL = r"""
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

Token = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,2048}$")]
OpenId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,256}$")]
Category = Literal["all_data", "video", "profile", "activity", "direct_message"]


class NewRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)

    access_token: Token
    refresh_token: Token | None = None
    open_id: OpenId | None = None
    data_format: Literal["json", "text"] = "json"
    categories: list[Category] = Field(default=["all_data"], min_length=1)

    @field_validator("categories")
    @classmethod
    def _distinct(cls, value):
        if len(set(value)) != len(value):
            raise ValueError("categories must be distinct")
        return ["all_data"] if "all_data" in value else value

    @model_validator(mode="after")
    def _open_id_with_refresh_token(self):
        if self.open_id is not None and self.refresh_token is None:
            raise ValueError("open_id is confirmed by a refresh: give it with the refresh_token")
        return self
"""

API = "tiktok_archive.handlers.api"
WEBHOOK = "tiktok_archive.handlers.webhook"
PARSER = "from aws_lambda_powertools.utilities.parser import parse\n" + PARSER_MODEL
ENVELOPE = PARSER + "from aws_lambda_powertools.utilities.parser.envelopes import ApiGatewayEnvelope\n"
IDEMPOTENCY = (
    "from aws_lambda_powertools.utilities.idempotency import (\n"
    "    DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function)\n"
)
# name: (handler module, what the variant adds, whether it needs pydantic)
VARIANTS: dict[str, tuple[str, str, bool]] = {
    "api": (API, "", False),
    "api + Parser + model": (API, PARSER, True),
    "api + Parser + model + ApiGatewayEnvelope": (API, ENVELOPE, True),
    "webhook": (WEBHOOK, "", False),
    "webhook + Idempotency": (WEBHOOK, IDEMPOTENCY, False),
}
PAIRS = (
    ("api", "api + Parser + model"),
    ("api", "api + Parser + model + ApiGatewayEnvelope"),
    ("webhook", "webhook + Idempotency"),
)
CHILD = """import sys, time
sys.path[:0] = [{tree!r}]
sys.stderr.write("--start--\\n")
sys.stderr.flush()
t0 = time.perf_counter()
import {module}
{extra}
t1 = time.perf_counter()
sys.stdout.write(f"{{(t1 - t0) * 1000:.3f}}\\n")
"""


def has_pydantic() -> bool:
    try:
        metadata.distribution("pydantic")
    except metadata.PackageNotFoundError:
        return False
    return True


def build_trees(root: Path, pydantic: bool) -> tuple[dict[str, Path], dict[str, int]]:
    """Two ``/var/task`` look-alikes (without bytecode, compiled) and the installed size of each group."""
    groups = {"lock": lock_distributions(), **({"pydantic": PYDANTIC_DISTRIBUTIONS} if pydantic else {})}
    return lambda_tree.build_trees(root, groups)


def child_environment() -> dict[str, str]:
    """What a Lambda function's process has, and no more (no PYTHONPATH: the tree is put on sys.path)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        # In Lambda the X-Ray SDK samples locally; without these it would build an X-Ray client.
        "LAMBDA_TASK_ROOT": "/var/task",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run_variant(tree: Path, variant: str, *, importtime: bool) -> tuple[float, float]:
    """One fresh interpreter: (import ms in-process or, under -X importtime, the sum of its top-level
    cumulative times), and the process's wall ms."""
    module, extra, _ = VARIANTS[variant]
    code = CHILD.format(tree=str(tree), module=module, extra=extra)
    command = [sys.executable, "-S", "-B", *(["-X", "importtime"] if importtime else []), "-c", code]
    started = time.perf_counter()
    completed = subprocess.run(command, env=child_environment(), capture_output=True, text=True, check=False)
    wall = (time.perf_counter() - started) * 1000
    if completed.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{completed.stderr[-3000:]}")
    if not importtime:
        return float(completed.stdout.strip()), wall
    lines = completed.stderr.split("--start--\n", 1)[1].splitlines()
    total = 0
    for line in lines:
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if len(name) - len(name.lstrip(" ")) == 1:  # a top-level import of the measured code
            total += int(cumulative)
    return total / 1000, wall


def measure_imports(
    trees: dict[str, Path], variants: list[str], rounds: int
) -> dict[tuple[str, str, str], list[float]]:
    """samples[(mode, variant, metric)], one per round, the order rotating every round."""
    jobs = [(mode, variant) for mode in trees for variant in variants]
    for mode, variant in jobs:  # a first run of each, not kept: file-system caches warm alike
        run_variant(trees[mode], variant, importtime=False)
    samples: dict[tuple[str, str, str], list[float]] = {}
    for number in range(rounds):
        shift = number % len(jobs)
        for mode, variant in jobs[shift:] + jobs[:shift]:
            imported, wall = run_variant(trees[mode], variant, importtime=False)
            importtime, _ = run_variant(trees[mode], variant, importtime=True)
            for metric, value in (("import", imported), ("process", wall), ("importtime", importtime)):
                samples.setdefault((mode, variant, metric), []).append(value)
        print(f"  round {number + 1}/{rounds}", file=sys.stderr)
    return samples


def report_imports(samples: dict[tuple[str, str, str], list[float]], variants: list[str]) -> None:
    labels = {
        "import": "import, in-process",
        "importtime": "-X importtime, cumulative",
        "process": "fresh process, wall",
    }
    for mode in MODES:
        print(f"\n### Cold start — {mode}: median ms (paired ratio to the base, median of rounds)\n")
        print("| variant | " + " | ".join(labels.values()) + " |")
        print("|---|" + "---:|" * len(labels))
        for variant in variants:
            base = next((b for b, v in PAIRS if v == variant), None)
            cells = []
            for metric in labels:
                values = samples[(mode, variant, metric)]
                cell = f"{statistics.median(values):.0f}"
                if base is not None:
                    ratios = [v / b for v, b in zip(values, samples[(mode, base, metric)], strict=True)]
                    added = [v - b for v, b in zip(values, samples[(mode, base, metric)], strict=True)]
                    cell += f" (×{statistics.median(ratios):.2f}, +{statistics.median(added):.0f})"
                cells.append(cell)
            print(f"| {variant} | " + " | ".join(cells) + " |")


def parser_fit() -> None:
    """The hand-written parser and the Parser model on the same bodies."""
    from pydantic import ValidationError  # noqa: PLC0415 - optional: the project's virtualenv has none

    namespace: dict[str, Any] = {"__name__": "parser_model"}
    # Compiled without this module's ``from __future__ import annotations``, as the children run it.
    code = compile(PARSER_MODEL, "<parser model>", "exec", dont_inherit=True)
    exec(code, namespace)  # the model above, as the children run it
    model = namespace["NewRequestBody"]
    secret = "rft.SECRET0000000000000000000000000000000000000000000000000000!1234.e1"
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("a valid body", {"access_token": TOKEN, "categories": ["video", "profile"]}),
        ("all_data among others", {"access_token": TOKEN, "categories": ["all_data", "video"]}),
        ("repeated category", {"access_token": TOKEN, "categories": ["video", "video"]}),
        ("no access_token", {"data_format": "json"}),
        ("token with a space", {"access_token": "act.A B"}),
        ("open_id without refresh_token", {"access_token": TOKEN, "open_id": "u-1"}),
        ("a token where a field name goes", {"access_token": TOKEN, secret: 1}),
        ("a token in the wrong field", {"access_token": TOKEN, "data_format": secret}),
    ]
    print("\n### Parser's fit: POST /requests bodies, hand-written vs the pydantic model\n")
    print("| body | hand-written | Parser model | Parser's error echoes the secret |")
    print("|---|---|---|---|")
    for label, body in bodies:
        try:
            hand = f"ok {list(parse_new_request(body).categories)}"
        except ServiceError as error:
            hand = f"{error.code}: {error}"
        try:
            parsed = f"ok {model.model_validate(body).categories}"
            echoes = "-"
        except ValidationError as error:
            parsed = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            echoes = "**yes**" if secret in str(error) else "no"
        print(f"| {label} | {hand[:70]} | {parsed[:90]} | {echoes} |")


class CountingClient:
    """A DynamoDB client that counts the item calls made through it and can be told to fail some."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()
        self.failing: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not name.endswith("_item"):
            return attribute

        def call(**kwargs: Any) -> Any:
            self.calls[name] += 1
            if name in self.failing:
                raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, name)
            return attribute(**kwargs)

        return call


class LambdaContextStub:
    def __init__(self, remaining_ms: int) -> None:
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class Died(BaseException):
    """Raised to play an invocation that dies between its record and its queue send."""


@contextmanager
def aws_credentials() -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # moto's, not a secret
            "AWS_DEFAULT_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_NAME": "WebhookFunction-bench",
        }
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def idempotency_behaviour() -> None:
    """Each delivery scenario through the hand-made dedupe and through Powertools Idempotency."""
    try:
        from moto import mock_aws  # noqa: PLC0415 - optional: the part is skipped without it
    except ImportError:
        print("\n(Idempotency's behaviour skipped: moto is not installed.)")
        return

    def table(client: Any, name: str) -> None:
        client.create_table(  # the schema of template.yaml's WebhookDeliveriesTable
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "delivery_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "delivery_id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )

    with aws_credentials(), mock_aws(), warnings.catch_warnings():
        # Powertools warns when no Lambda context was registered: the last scenario shows what that does.
        warnings.simplefilter("ignore", UserWarning)
        raw = boto3.client("dynamodb", region_name=REGION)
        table(raw, "hand")
        table(raw, "powertools")
        hand_client, pt_client = CountingClient(raw), CountingClient(raw)
        deliveries = webhook_deliveries.WebhookDeliveries(hand_client, "hand")
        queue_plan: list[Callable[[], None]] = []

        def send() -> None:
            (queue_plan.pop(0) if queue_plan else lambda: None)()

        def hand_made(delivery_id: str) -> str:
            """logic/webhooks.py's steps after the signature and the parse."""
            arrival = deliveries.arrived(delivery_id, "portability.download.ready")
            if arrival is webhook_deliveries.Arrival.DONE:
                return "duplicate"
            if arrival is webhook_deliveries.Arrival.IN_FLIGHT:
                raise DeliveryInFlightError("in flight")
            try:
                send()
            except ServiceError:
                deliveries.forget(delivery_id)
                raise
            deliveries.queued(delivery_id)
            return "queued"

        config = IdempotencyConfig(
            event_key_jmespath="delivery_id",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=int(webhook_deliveries.KEEP_FOR.total_seconds()),
        )
        persistence = DynamoDBPersistenceLayer(
            table_name="powertools",
            key_attr="delivery_id",
            expiry_attr="expires_at",
            boto3_client=pt_client,
        )

        @idempotent_function(data_keyword_argument="work", config=config, persistence_store=persistence)
        def queue_work(work: dict[str, str]) -> dict[str, str]:
            send()
            return {"status": "queued"}

        def powertools(delivery_id: str) -> str:
            return queue_work(work={"delivery_id": delivery_id, "event": "portability.download.ready"})[
                "status"
            ]

        def attempt(way: Callable[[str], str], delivery_id: str) -> str:
            try:
                return way(delivery_id)
            except Died:
                return "died (no answer: TikTok retries)"
            except Exception as error:  # the outcome is what is reported
                return f"{type(error).__name__} (5xx: TikTok retries)"

        def item_left(table_name: str) -> str:
            items = raw.scan(TableName=table_name)["Items"]
            if not items:
                return "none"
            item = items[-1]
            state = item.get("state", item.get("status", {})).get("S", "?")
            if state == "received":  # the hand-made dedupe takes it again once it is this old
                return f"received, taken again {webhook_deliveries.STUCK_AFTER.seconds} s after it arrived"
            if state != "INPROGRESS":
                return state
            if "in_progress_expiration" in item:
                left = int(item["in_progress_expiration"]["N"]) / 1000 - time.time()
                return f"INPROGRESS, taken again in {left:.0f} s"
            hours = (int(item["expires_at"]["N"]) - time.time()) / 3600
            return f"INPROGRESS, taken again at expiry, in {hours:.0f} h"

        def fail_queue() -> None:
            raise QueueError("injected")

        def die() -> None:
            raise Died

        scenarios: list[tuple[str, list[list[Callable[[], None]]], set[str], int | None]] = [
            # (what, queue plan per attempt, failing DynamoDB calls, Lambda context's remaining ms)
            ("a delivery, then the same again", [[], []], set(), 10_000),
            ("queue send fails, then TikTok's retry", [[fail_queue], []], set(), 10_000),
            ("queue send fails and so does the clean-up", [[fail_queue], []], {"delete_item"}, 10_000),
            ("queued, but marking it done fails; then a retry", [[], []], {"update_item"}, 10_000),
            ("invocation dies after the record; retry at once", [[die], []], set(), 10_000),
            ("… and without register_lambda_context", [[die], []], set(), None),
        ]
        print("\n### Idempotency: the hand-made dedupe vs idempotent_function (moto)\n")
        print("| scenario | attempt | hand-made: answer | calls | item | Powertools: answer | calls | item |")
        print("|---|---|---|---|---|---|---|---|")
        for number, (what, plans, failing, remaining) in enumerate(scenarios):
            delivery_id = f"{number:064x}"
            for count, plan in enumerate(plans):
                row = [what if count == 0 else "", str(count + 1)]
                for way, client, name in (
                    (hand_made, hand_client, "hand"),
                    (powertools, pt_client, "powertools"),
                ):
                    client.calls.clear()
                    client.failing = failing if count == 0 else set()
                    if way is powertools:
                        config.lambda_context = LambdaContextStub(remaining) if remaining else None
                    queue_plan[:] = list(plan)
                    outcome = attempt(way, delivery_id)
                    calls = "+".join(
                        f"{n.removesuffix('_item').title()}×{c}" for n, c in client.calls.items()
                    )
                    row += [outcome, calls or "0", item_left(name)]
                print("| " + " | ".join(row) + " |")
            for name in ("hand", "powertools"):  # the next scenario's item is the only one
                for item in raw.scan(TableName=name)["Items"]:
                    raw.delete_item(TableName=name, Key={"delivery_id": item["delivery_id"]})
        # A duplicate that arrives while the first delivery's work is being queued.
        nested: dict[str, str] = {}
        queue_plan[:] = [lambda: nested.setdefault("hand", attempt(hand_made, "f" * 64))]
        hand_made("f" * 64)
        config.lambda_context = LambdaContextStub(10_000)
        queue_plan[:] = [lambda: nested.setdefault("powertools", attempt(powertools, "f" * 64))]
        powertools("f" * 64)
        print(
            f"| a duplicate while the first is in flight | 2 | {nested['hand']} | | "
            f"| {nested['powertools']} | | |"
        )
        key = raw.scan(TableName="powertools")["Items"][0]["delivery_id"]["S"]
        print(f"\nPowertools' key for delivery {'f' * 8}…: `{key}` (function name + module.function + MD5).")


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--rounds", type=int, default=15, help="fresh-process rounds per variant")
    arguments.add_argument("--skip-imports", action="store_true", help="only the behaviour parts")
    options = arguments.parse_args()
    pydantic = has_pydantic()
    print(f"Python {sys.version.split()[0]} on {sys.platform}, {sys.executable}")
    if not pydantic:
        print(
            "pydantic is not installed (the function's lock has none): the Parser variants and the "
            "Parser fit are skipped. See docs/architecture.md for the scratch virtualenv that has it."
        )
    if not options.skip_imports:
        variants = [name for name, (_, _, needs) in VARIANTS.items() if pydantic or not needs]
        with tempfile.TemporaryDirectory(prefix="powertools-cost-") as scratch:
            trees, sizes = build_trees(Path(scratch), pydantic)
            print(f"\nInstalled size without bytecode: the lock's {len(lock_distributions())} distributions")
            print(f"{sizes['lock'] / 2**20:.1f} MiB", end="")
            if pydantic:
                added = ", ".join(f"{n} {metadata.version(n)}" for n in PYDANTIC_DISTRIBUTIONS)
                print(f"; pydantic adds {sizes['pydantic'] / 2**20:.1f} MiB ({added})", end="")
            print(".")
            samples = measure_imports(trees, variants, options.rounds)
        report_imports(samples, variants)
    if pydantic:
        parser_fit()
    idempotency_behaviour()


if __name__ == "__main__":
    main()
