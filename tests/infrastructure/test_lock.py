"""src/requirements.txt: the function's lock is whole, hashed, and what the test virtualenv runs.

What `sam build` packages (the lock, see the Makefile's `build`) must be what the suite tested: every package
of the closure pinned and hashed, nothing missing for the Lambda runtime nor for this interpreter, and this
virtualenv running exactly those versions. Offline: it reads files and the installed metadata only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "src" / "requirements.txt"
DIRECT = ROOT / "src" / "requirements.in"
CONSTRAINTS = ROOT / "constraints.txt"
BUILD = ROOT / ".aws-sam" / "build"

_ARCHITECTURES = {"arm64": "aarch64", "x86_64": "x86_64"}


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: Version
    marker: Marker | None
    hashes: tuple[str, ...]
    line: str

    def applies(self, environment: dict[str, str]) -> bool:
        return self.marker is None or self.marker.evaluate(environment)


def _logical_lines(path: Path) -> list[str]:
    """The file's requirement lines, continuations joined, comments and blank lines dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _parse_lock() -> list[Pin]:
    pins = []
    for line in _logical_lines(LOCK):
        requirement_text, *options = re.split(r"\s+(?=--)", line)
        assert not requirement_text.startswith("-"), f"not a requirement: {line}"
        requirement = Requirement(requirement_text)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1, f"not pinned with exactly one ==: {requirement_text}"
        assert specifiers[0].operator == "==", f"not pinned with ==: {requirement_text}"
        assert not specifiers[0].version.endswith(".*"), f"wildcard pin: {requirement_text}"
        unknown = [option for option in options if not option.startswith("--hash=")]
        assert not unknown, f"{requirement.name}: unexpected options {unknown}"
        pins.append(
            Pin(
                name=canonicalize_name(requirement.name),
                version=Version(specifiers[0].version),
                marker=requirement.marker,
                hashes=tuple(option.removeprefix("--hash=") for option in options),
                line=requirement_text,
            )
        )
    return pins


def _lambda_environment() -> dict[str, str]:
    """PEP 508 marker values of the function's runtime, read from template.yaml's Globals."""
    template = (ROOT / "template.yaml").read_text()
    runtime = re.search(r"^\s+Runtime:\s*python(3\.\d+)\s*$", template, re.MULTILINE)
    architectures = re.search(r"^\s+Architectures:\s*\[\s*(\w+)\s*\]\s*$", template, re.MULTILINE)
    assert runtime is not None, "template.yaml declares no python Runtime"
    assert architectures is not None, "template.yaml declares no Architectures"
    version = runtime.group(1)
    return {
        **default_environment(),
        "implementation_name": "cpython",
        "implementation_version": f"{version}.0",
        "os_name": "posix",
        "platform_machine": _ARCHITECTURES[architectures.group(1)],
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{version}.0",
        "python_version": version,
        "sys_platform": "linux",
    }


LOCKED = _parse_lock()
LAMBDA = _lambda_environment()
HERE: dict[str, str] = dict(default_environment())
ENVIRONMENTS = {"lambda": LAMBDA, "this interpreter": HERE}


def _pins_for(environment: dict[str, str]) -> dict[NormalizedName, Pin]:
    pins: dict[NormalizedName, Pin] = {}
    for pin in LOCKED:
        if pin.applies(environment):
            assert pin.name not in pins, f"{pin.name} is locked twice for {environment['python_version']}"
            pins[pin.name] = pin
    return pins


def _direct_requirements() -> list[Requirement]:
    return [Requirement(line) for line in _logical_lines(DIRECT)]


def _applies(requirement: Requirement, environment: dict[str, str], extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in {"", *extras})


def test_the_lock_says_how_to_regenerate_it() -> None:
    assert "make lock" in "\n".join(LOCK.read_text().splitlines()[:3])


def test_every_locked_package_is_pinned_and_hashed() -> None:
    assert LOCKED, "src/requirements.txt locks nothing"
    for pin in LOCKED:
        assert pin.hashes, f"{pin.name} has no --hash"
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{pin.name}: not a sha256 hash: {digest}"


@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_every_direct_requirement_is_locked_at_a_satisfying_version(environment: dict[str, str]) -> None:
    pins = _pins_for(environment)
    for requirement in _direct_requirements():
        if not _applies(requirement, environment, set()):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in src/requirements.txt"
        assert requirement.specifier.contains(pins[name].version, prereleases=True), (
            f"{requirement} but the lock has {pins[name].line}: run `make lock`"
        )


@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_the_lock_is_closed(environment: dict[str, str]) -> None:
    """Every dependency of a locked package (with the extras asked for) is locked at a version it accepts.

    Dependencies are read from the metadata installed here, which is the locked version's (see the next test);
    a package locked only for another platform is not installed here and cannot be read offline.
    """
    pins = _pins_for(environment)
    extras: dict[NormalizedName, set[str]] = {}
    pending: list[NormalizedName] = []
    for requirement in _direct_requirements():
        if _applies(requirement, environment, set()):
            name = canonicalize_name(requirement.name)
            extras.setdefault(name, set()).update(requirement.extras)
            pending.append(name)
    checked: dict[NormalizedName, frozenset[str]] = {}
    problems = []
    while pending:
        name = pending.pop()
        wanted = frozenset(extras.get(name, set()))
        if checked.get(name) == wanted or name not in pins:
            continue
        checked[name] = wanted
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            if pins[name].applies(HERE):
                problems.append(f"{name} is locked but not installed here")
            continue
        for dependency in map(Requirement, requires):
            if not _applies(dependency, environment, set(wanted)):
                continue
            dependency_name = canonicalize_name(dependency.name)
            pin = pins.get(dependency_name)
            if pin is None:
                problems.append(f"{name} needs {dependency}, which is not in the lock")
                continue
            if not dependency.specifier.contains(pin.version, prereleases=True):
                problems.append(f"{name} needs {dependency} but the lock has {pin.line}")
            if not dependency.extras <= extras.get(dependency_name, set()):
                extras.setdefault(dependency_name, set()).update(dependency.extras)
                checked.pop(dependency_name, None)
            pending.append(dependency_name)
    unreached = sorted(set(pins) - set(checked))
    assert not problems, "src/requirements.txt is not closed:\n" + "\n".join(problems)
    assert not unreached, f"locked but needed by nothing in src/requirements.in: {unreached}"


def test_this_virtualenv_runs_exactly_the_locked_versions() -> None:
    """What the suite tests is what `sam build` packages."""
    wrong = []
    for name, pin in _pins_for(HERE).items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{pin.line}: not installed")
            continue
        if installed != pin.version:
            wrong.append(f"{pin.line}: {installed} installed")
    reinstall = "run `make test`, which reinstalls it"
    assert not wrong, f"this virtualenv differs from src/requirements.txt ({reinstall}):\n" + "\n".join(wrong)


def test_constraints_agree_with_the_lock() -> None:
    constraints = {}
    for line in _logical_lines(CONSTRAINTS):
        requirement = Requirement(line)
        constraints[canonicalize_name(requirement.name)] = requirement
    disagreements = [
        f"constraints.txt has {constraints[name]}, the lock {pin.line}"
        for name, pin in _pins_for(HERE).items()
        if name in constraints and not constraints[name].specifier.contains(pin.version, prereleases=True)
    ]
    assert not disagreements, "\n".join(disagreements)


def test_the_makefile_builds_for_the_templates_runtime() -> None:
    """`make build` asks pip for the Lambda platform's wheels; they must be the template's runtime's."""
    makefile = (ROOT / "Makefile").read_text()
    python_version = re.search(r"PIP_PYTHON_VERSION=(\S+)", makefile)
    abi = re.search(r"PIP_ABI=(\S+)", makefile)
    platforms = re.search(r'PIP_PLATFORM="([^"]+)"', makefile)
    assert python_version is not None
    assert abi is not None
    assert platforms is not None
    assert python_version.group(1) == LAMBDA["python_version"]
    assert abi.group(1) == "cp" + LAMBDA["python_version"].replace(".", "")
    assert all(platform.endswith("_" + LAMBDA["platform_machine"]) for platform in platforms.group(1).split())


def _built_functions() -> list[Path]:
    if not (BUILD / "template.yaml").is_file():
        return []
    if (BUILD / "template.yaml").stat().st_mtime < LOCK.stat().st_mtime:
        return []  # built before the lock last changed: `make build` again
    return sorted(path.parent for path in BUILD.glob("*/tiktok_archive"))


@pytest.mark.skipif(not _built_functions(), reason="no `make build` output newer than src/requirements.txt")
@pytest.mark.parametrize("function", _built_functions(), ids=lambda path: path.name)
def test_the_built_function_packages_exactly_the_lock(function: Path) -> None:
    """`.aws-sam/build/<Function>/` (from `make build`) holds the locked versions for Lambda, nothing else."""
    built = set()
    for dist_info in function.glob("*.dist-info"):
        name, version = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)
        built.add((canonicalize_name(name), Version(version)))
    locked = {(pin.name, pin.version) for pin in _pins_for(LAMBDA).values()}
    assert built - locked == set(), "built but not locked"
    assert locked - built == set(), "locked but not built"


@pytest.mark.skipif(not _built_functions(), reason="no `make build` output newer than src/requirements.txt")
@pytest.mark.parametrize("function", _built_functions(), ids=lambda path: path.name)
def test_the_built_function_ships_its_bytecode_for_lambdas_python(function: Path) -> None:
    """Every module of the package has bytecode for Lambda's Python, valid whatever the files' times.

    Lambda's ``/var/task`` is read-only: without it, every cold start compiles every module it imports.
    """
    tag = "cpython-" + LAMBDA["python_version"].replace(".", "")
    missing, by_time = [], []
    for source in function.rglob("*.py"):
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if not compiled.is_file():
            missing.append(source.relative_to(function))
        elif int.from_bytes(compiled.read_bytes()[4:8], "little") != 0b01:  # PEP 552: unchecked hash
            by_time.append(source.relative_to(function))
    assert missing == [], f"{len(missing)} modules without bytecode, e.g. {missing[:3]}"
    assert by_time == [], f"{len(by_time)} modules checked by file time, e.g. {by_time[:3]}"
