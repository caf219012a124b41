"""``/var/task`` look-alikes for cold-start measurements, as ``sam build`` ships the functions.

``sam build`` unpacks the lock's wheels and copies ``src/`` without bytecode, and ``/var/task`` is read-only:
every cold start compiles each module it imports. :func:`build_trees` makes that tree from this machine's
installed distributions, and a second one compiled ahead, for comparison.
"""

from __future__ import annotations

import compileall
import re
import shutil
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK = REPO_ROOT / "src" / "requirements.txt"
SHIPPED, COMPILED = "no bytecode (plain sam build)", "bytecode compiled ahead (as make build ships it)"
MODES = (SHIPPED, COMPILED)


def lock_distributions() -> list[str]:
    """The distributions src/requirements.txt pins (the function's whole runtime closure)."""
    return re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==", LOCK.read_text(), flags=re.MULTILINE)


def copy_distribution(name: str, dest: Path) -> int:
    """Copy one installed distribution's files (no bytecode) into ``dest``; its size in bytes."""
    distribution = metadata.distribution(name)
    size = 0
    for file in distribution.files or ():
        if file.parts[0] == ".." or "__pycache__" in file.parts or file.suffix == ".pyc":
            continue
        source = Path(str(distribution.locate_file(file)))
        if not source.is_file():
            continue
        target = dest / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        size += source.stat().st_size
    return size


def build_trees(root: Path, groups: dict[str, Iterable[str]]) -> tuple[dict[str, Path], dict[str, int]]:
    """Two trees under ``root`` (:data:`SHIPPED`, :data:`COMPILED`) and the installed size of each group.

    ``groups``: the distributions to copy, by group name (``{"lock": lock_distributions()}`` at least);
    ``src/tiktok_archive`` is copied too.
    """
    bare = root / "bare"
    sizes = {group: sum(copy_distribution(name, bare) for name in names) for group, names in groups.items()}
    shutil.copytree(
        REPO_ROOT / "src" / "tiktok_archive",
        bare / "tiktok_archive",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    compiled = root / "compiled"
    shutil.copytree(bare, compiled)
    compileall.compile_dir(compiled, quiet=2, workers=0)
    return {SHIPPED: bare, COMPILED: compiled}, sizes
