"""What a cold start loads, per function of template.yaml, in a fresh interpreter as Lambda starts one.

Importing a handler loads no X-Ray SDK (tracing off), no use case, no adapter and no AWS SDK: those come
with the first call, and then only the function's own chain. With tracing on, the X-Ray SDK comes with the
first traced call, and that call is traced. (``make bench`` times the same: ``tests/benchmarks/cold_start``.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.benchmarks.cold_start import FIRST_CALL, Function, functions
from tests.harness.local_stack import REPO_ROOT

FUNCTIONS = functions()
S3_TRANSFER = {
    "tiktok_archive.logic.transfer",
    "tiktok_archive.adapters.s3_archive_store",
    "tiktok_archive.adapters.multipart_upload",
}
# What a function's first call must not load: another function's chain.
NOT_ITS_CHAIN = {
    "WebhookFunction": S3_TRANSFER
    | {
        "tiktok_archive.adapters.tiktok",
        "tiktok_archive.logic.tokens",
        "tiktok_archive.adapters.download_records",
    },
    "SweeperFunction": S3_TRANSFER,
}
LOADED = """
import importlib, json, sys
importlib.import_module({module!r})
from tiktok_archive import runtime, runtime_adapters
for name in {builders!r}:
    owner, _, builder = name.partition(".")
    getattr({{"runtime": runtime, "runtime_adapters": runtime_adapters}}[owner], builder)()
print(json.dumps(sorted(sys.modules)))
"""
TRACED = """
import importlib, json, sys
importlib.import_module({module!r})
imported_xray = any(name.startswith("aws_xray_sdk") for name in sys.modules)
from tiktok_archive.observability import tracer

@tracer.capture_method()
def traced_call():
    return 42

class Kept:
    sent = []
    def send_entity(self, entity):
        self.sent.append(entity.serialize())
    def set_daemon_address(self, address):
        pass

from aws_xray_sdk.core import xray_recorder
xray_recorder.configure(emitter=Kept(), sampling=False)
answer = traced_call()
print(json.dumps({{"imported_xray": imported_xray, "answer": answer, "sent": Kept.sent}}))
"""


def run(function: Function, code: str, **environment: str) -> str:
    """``code``'s output, run by a fresh interpreter in ``function``'s Lambda environment."""
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env={**function.environment, "PYTHONPATH": str(REPO_ROOT / "src"), **environment},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.strip().splitlines()[-1]


def loaded(function: Function, builders: tuple[str, ...] = ()) -> set[str]:
    """The modules loaded by importing the handler, then building ``builders``, with tracing off."""
    code = LOADED.format(module=function.module, builders=builders)
    return set(json.loads(run(function, code, POWERTOOLS_TRACE_DISABLED="true")))


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.name)
def test_importing_a_handler_loads_no_tracer_use_case_adapter_or_aws_sdk(function: Function) -> None:
    # Given tracing off, when Lambda imports the handler's module
    modules = loaded(function)

    # Then nothing that can wait for the first call is loaded
    assert not {m for m in modules if m.startswith("aws_xray_sdk")}
    assert not {m for m in modules if m.startswith(("tiktok_archive.logic", "tiktok_archive.adapters"))}
    assert not {"boto3", "s3transfer", "urllib3"} & modules


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.name)
def test_a_first_call_loads_only_its_functions_chain(function: Function) -> None:
    # Given tracing off, when the handler's first call builds every use case it may call
    modules = loaded(function, FIRST_CALL[function.name])

    # Then they are built from the template's environment, without X-Ray or another function's chain
    assert "tiktok_archive.runtime_adapters" in modules
    assert not {m for m in modules if m.startswith("aws_xray_sdk")}
    assert not NOT_ITS_CHAIN.get(function.name, set()) & modules


def test_every_function_of_the_template_is_measured() -> None:
    assert {f.name for f in FUNCTIONS} == set(FIRST_CALL)


def test_tracing_on_imports_x_ray_at_the_first_traced_call_and_traces_it() -> None:
    # Given a function as Lambda runs it with Tracing: Active (a sampled trace of the invocation)
    api = next(f for f in FUNCTIONS if f.name == "ApiFunction")
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

    # When its handler is imported, then a traced method is called
    result = json.loads(run(api, TRACED.format(module=api.module), _X_AMZN_TRACE_ID=trace))

    # Then the import loaded no X-Ray, and the call ran in its own subsegment
    assert result["imported_xray"] is False
    assert result["answer"] == 42
    assert any('"## __main__.traced_call"' in document for document in result["sent"]), result["sent"]
