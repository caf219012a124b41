"""Every shell block of README.md and docs/*.md that talks to ``make serve`` runs as pasted.

A block talks to ``make serve`` when it sources ``.local/serve.env``. For each document, ``make serve``'s
front (:mod:`tests.harness.serve`: API Gateway's checks, the real handlers, the queues delivered every half
second) starts in-process on a free port with ``make serve``'s parameters and local user, and writes the
file ``make serve`` writes — to the test's own path, which stands in for ``.local/serve.env`` — and the
document's blocks run with bash in order, from the repository's root, with ``set -e -o pipefail``. Each
must exit 0, and nothing it prints may be an API Gateway refusal, an HTTP error status or an error body of
the service — but for what the block shows on purpose: the other caller's ``404 not_found``.

Each document gets a server of its own, as a newcomer who follows one page from ``make serve`` on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SECRETS
from tests.harness.emulator_control import Emulator
from tests.harness.local_stack import REPO_ROOT, Resources
from tests.harness.serve import (
    READY_REQUEST_ID,
    SERVE_PARAMETERS,
    LocalApi,
    environment,
    local_user,
    serving,
)
from tests.integration.support import Configure, functions

DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
ENV_FILE = ".local/serve.env"
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="no curl on this machine")


def serve_blocks(document: Path) -> list[str]:
    """The document's ```bash blocks that source ``.local/serve.env``, in order."""
    return [block for block in BLOCK.findall(document.read_text()) if f"source {ENV_FILE}" in block]


# What API Gateway answers itself, and what the service answers when it refuses (docs/api.md).
GATEWAY_REFUSALS = re.compile(
    r"Missing Authentication Token|The request signature we calculated|security token included in the "
    r"request is invalid|is not authorized to perform|Too Many Requests|Endpoint request timed out"
)
ERROR_CODE = re.compile(r'"error":\s*\{\s*"code":\s*"([a-z_]+)"')
ERROR_STATUS = re.compile(r"^HTTP/[0-9.]+ ([45][0-9][0-9])", re.MULTILINE)


def problems(block: str, output: str) -> list[str]:
    """What in a block's ``output`` says a call failed; the other caller's 404 is what it shows."""
    expected = {"not_found"} if "$OTHER_ACCESS_KEY_ID" in block else set()
    found = [f"API Gateway refused: {m.group(0)}" for m in GATEWAY_REFUSALS.finditer(output)]
    found += [f"HTTP {status}" for status in ERROR_STATUS.findall(output) if status != "404" or not expected]
    found += [f"error {code}" for code in ERROR_CODE.findall(output) if code not in expected]
    return found


@dataclass
class Served:
    env_file: Path
    api: LocalApi


@pytest.fixture
def served(
    configure: Configure, resources: Resources, emulator: Emulator, tmp_path: Path
) -> Iterator[Served]:
    """``make serve`` on a free port: its parameters, its local user, the queues delivered; the file it
    writes for another terminal, at the test's own path."""
    configure(SERVE_PARAMETERS)
    user = local_user(emulator)
    SECRETS.tokens.update({user["access_token"], user["refresh_token"]})
    api = LocalApi(resources, functions())
    with serving(api) as front:
        env_file = tmp_path / "serve.env"
        env_file.write_text(environment(front.url, api.credentials, user, READY_REQUEST_ID))
        yield Served(env_file, api)


def test_the_documents_have_blocks_that_talk_to_make_serve() -> None:
    names = {document.name for document in DOCUMENTS if serve_blocks(document)}
    assert {"README.md", "try-it-locally.md", "api.md"} <= names


@pytest.mark.parametrize(
    "document",
    [d for d in DOCUMENTS if serve_blocks(d)],
    ids=lambda d: str(d.relative_to(REPO_ROOT)),
)
def test_every_block_that_talks_to_make_serve_runs_as_pasted(served: Served, document: Path) -> None:
    for number, block in enumerate(serve_blocks(document), start=1):
        script = "set -e -o pipefail\n" + block.replace(ENV_FILE, str(served.env_file))
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO_ROOT,
            # A newcomer's other terminal: nothing of this process's AWS environment.
            env={"PATH": os.environ["PATH"], "HOME": str(served.env_file.parent), "LANG": "C.UTF-8"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        where = f"{document.name} block {number}:\n{block}"
        assert done.returncode == 0, (
            f"{where}\nexit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
        found = problems(block, done.stdout + done.stderr)
        assert not found, f"{where}\n{found}\n{done.stdout[-2000:]}"


def test_a_refusal_an_error_status_or_an_error_body_is_a_problem() -> None:
    signed = 'curl -sS "$API_URL/downloads/1" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"'
    other = 'curl -sS "$API_URL/downloads/1" --user "$OTHER_ACCESS_KEY_ID:$OTHER_SECRET_ACCESS_KEY"'
    not_found = '{"error": {"code": "not_found", "message": "…", "log_id": null}}'
    assert problems(signed, '{"message": "Missing Authentication Token"}')
    assert problems(signed, '{"Message": "User: arn:… is not authorized to perform: execute-api:Invoke"}')
    assert problems(signed, "HTTP/1.1 400 Bad Request\r\n")
    assert problems(signed, not_found)
    assert problems(other, '{"error": {"code": "missing_token", "message": "…", "log_id": null}}')
    assert not problems(other, "HTTP/1.1 404 Not Found\r\n\r\n" + not_found)
    assert not problems(signed, '{"request_id": "1", "status": "completed"}')
