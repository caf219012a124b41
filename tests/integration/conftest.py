"""The integration tier's fixtures: moto server and the TikTok emulator over real HTTP (one pair per test
process), the test's own resources as template.yaml declares them, and each function run with exactly its
template environment and permissions (``configure``). The calls through them are in ``support.py``; the
permissions no test used are reported by the root conftest (across ``-n`` workers too)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.harness.functions import RECORDER, LambdaFunctions
from tests.harness.local_stack import REGION, Emulator, LocalStack, Resources, provision
from tests.integration.support import FUNCTIONS, TEST_PARAMETERS, Configure


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    RECORDER.install()  # before the service builds any client
    with LocalStack() as local:
        yield local


@pytest.fixture(scope="session")
def emulator(stack: LocalStack) -> Emulator:
    return stack.emulator


@pytest.fixture(scope="session")
def s3(stack: LocalStack) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack.moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"archives-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


@pytest.fixture
def resources(stack: LocalStack, bucket: str) -> Resources:
    """Everything template.yaml creates (tables, queues, key, secret), fresh in moto, with the test's
    bucket as the archive bucket, and an event capture."""
    return provision(stack.moto_url, bucket.removeprefix("archives-"), bucket=bucket)


@pytest.fixture
def configure(stack: LocalStack, resources: Resources) -> Iterator[Configure]:
    """Run each function with exactly its template.yaml environment over the test's local resources;
    call it to change variables on purpose (``None`` removes one). At the end, every AWS call a
    function made must be allowed by that function's template permissions."""
    RECORDER.take()
    lambdas = LambdaFunctions(
        resources.template,
        resources.local,
        {**TEST_PARAMETERS, **stack.parameters()},
        stack.environment(),
    )
    FUNCTIONS.append(lambdas)
    try:
        yield lambdas.override
    finally:
        FUNCTIONS.remove(lambdas)
        lambdas.restore()
        # Archives live in both servers' memory: drop them so a long session stays small.
        stack.emulator.reset()
        stack.reset_aws()
    refused = lambdas.violations(RECORDER.take())
    assert not refused, "AWS calls the template's policies do not allow:\n" + "\n".join(refused)
