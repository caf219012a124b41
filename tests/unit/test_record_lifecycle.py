"""The record's lifecycle table: the diagram in docs/architecture.md is the one generated from it."""

from __future__ import annotations

import re
from pathlib import Path

from tiktok_archive.models.record_lifecycle import mermaid

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_the_documented_state_diagram_is_the_lifecycle_tables() -> None:
    blocks = re.findall(r"```mermaid\n(stateDiagram-v2\n.*?)\n```", ARCHITECTURE.read_text(), flags=re.S)
    assert blocks, "docs/architecture.md has no stateDiagram-v2 block"
    assert blocks[0] == mermaid(), "paste this into docs/architecture.md:\n" + mermaid()
