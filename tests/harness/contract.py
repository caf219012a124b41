"""docs/openapi.yaml as an executable contract: does an answer conform to the document?

``Contract.load()`` reads the document; ``contract.check(method, path, status, headers, body)`` says what
is wrong with one answer (an empty list when it conforms):

- the operation is found by matching the concrete path against the document's templated paths
  (``/downloads/123`` → ``/downloads/{request_id}``, ``/users/-000ab/requests`` →
  ``/users/{open_id}/requests``; a literal segment wins over a template). The path is relative to the
  server URL, so API Gateway's stage (``/v1``) is not part of it; a query string is ignored (answers are
  checked, not requests). An undocumented path, or a method the path does not document, is a problem;
- the response is the one documented for the status, else its range (``4XX``), else ``default``; an
  undocumented status is a problem;
- every header the response marks ``required`` must be present (names are case-insensitive), and every
  documented header present must match its schema (``Cache-Control: no-store`` …); a ``Content-Type``
  must be one of the response's media types;
- the body must be there exactly when the response documents content, and must validate against the
  media type's schema with openapi-schema-validator (``OAS30Validator`` or ``OAS31Validator`` by the
  document's version, formats checked, every local ``$ref`` resolved);
- an error body's ``code`` that the document lists for some answer (``x-error-codes`` of a response) must
  be listed for this one: a known code answered with another status is a problem, while a code the
  document does not know (TikTok's unknown codes pass through) only has to match ``ErrorCode``'s pattern.

``contract.validate_document()`` checks the document itself with openapi-spec-validator;
``contract.security(operation)`` and ``contract.parameters(operation)`` say what a request needs (the
effective security requirements, e.g. ``[{"awsSigv4": []}]``, and the resolved parameters), for tests that
compare the document with the template and the handlers. ``Contract.load()`` is cached per file while the
file is unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import yaml
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from openapi_schema_validator import (
    OAS30Validator,
    OAS31Validator,
    oas30_format_checker,
    oas31_format_checker,
)
from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_PATH = REPO_ROOT / "docs" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ERROR_CODES_KEY = "x-error-codes"
_MAX_MESSAGE = 300
_NO_BODY = object()

Json: TypeAlias = Any
Node: TypeAlias = Mapping[str, Any]
HeaderValue: TypeAlias = str | Sequence[str]


@dataclass(frozen=True)
class Operation:
    """One documented operation: ``POST /downloads``, ``GET /downloads/{request_id}`` …

    Attributes:
        method: the HTTP method, upper-case.
        template: the document's path, e.g. ``/downloads/{request_id}``.
        spec: the operation object as written in the document (``$ref`` not resolved).
    """

    method: str
    template: str
    spec: Node

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def operation_id(self) -> str | None:
        value = self.spec.get("operationId")
        return value if isinstance(value, str) else None

    @property
    def statuses(self) -> tuple[str, ...]:
        """The response keys as documented (``"200"``, ``"4XX"``, ``"default"`` …)."""
        return tuple(str(key) for key in self.spec.get("responses", {}))

    @property
    def security(self) -> Sequence[Mapping[str, Sequence[str]]] | None:
        """The operation's own ``security`` (``[]`` means none), or None when it inherits the document's."""
        value = self.spec.get("security")
        return value if isinstance(value, list) else None


class Contract:
    """An OpenAPI 3.0/3.1 document that answers are checked against.

    Args:
        document: the parsed document (not copied; treated as read-only).
        source: where it was read from, for messages.
    """

    def __init__(self, document: Mapping[str, Any], source: Path | None = None) -> None:
        self.document = document
        self.source = source
        self.version = str(document.get("openapi", ""))
        if not re.fullmatch(r"3\.[01]\.\d+", self.version):
            raise ValueError(f"only OpenAPI 3.0 and 3.1 documents are supported, not {self.version!r}")
        self._validator_class: Any = OAS31Validator if self.version.startswith("3.1") else OAS30Validator
        self._format_checker = (
            oas31_format_checker if self.version.startswith("3.1") else oas30_format_checker
        )
        # Keyed by id(); the schema is kept alive beside its validator, so that id is never reused.
        self._validators: dict[int, tuple[Node, Validator]] = {}
        self.operations: tuple[Operation, ...] = tuple(self._operations())
        self.known_error_codes: frozenset[str] = frozenset(
            code for _, _, response in self._all_responses() for code in _error_codes(response)
        )

    # -- loading -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str = DOCUMENT_PATH) -> Contract:
        """Read the document at ``path`` (YAML or JSON); docs/openapi.yaml by default.

        Cached: while the file is unchanged (the same modification time and size), every call with the
        same ``path`` returns the same contract, its validators already built. The contract is shared:
        treat its ``document`` as read-only (copy it to change it).
        """
        source = Path(path)
        status = source.stat()
        stamp = (status.st_mtime_ns, status.st_size)
        cached = _LOADED.get(source)
        if cached is not None and cached[0] == stamp and type(cached[1]) is cls:
            return cached[1]
        document = yaml.safe_load(source.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise ValueError(f"{source} does not hold an OpenAPI document (a mapping)")
        contract = cls(document, source)
        _LOADED[source] = (stamp, contract)
        return contract

    # -- the document --------------------------------------------------------------------------------
    def validate_document(self) -> list[str]:
        """What openapi-spec-validator finds wrong with the document (empty when it is valid)."""
        validator_class: Any = (
            OpenAPIV31SpecValidator if self.version.startswith("3.1") else OpenAPIV30SpecValidator
        )
        problems = []
        try:
            for error in validator_class(self.document).iter_errors():
                where = "/".join(str(part) for part in getattr(error, "absolute_path", ()) or ())
                problems.append(f"{where or '(document)'}: {_short(str(error.message))}")
        except Exception as crash:  # an unresolvable $ref raises instead of being listed
            problems.append(f"(document): {type(crash).__name__}: {_short(str(crash))}")
        return problems

    def routes(self) -> set[tuple[str, str]]:
        """Every documented ``(METHOD, template)``."""
        return {(operation.method, operation.template) for operation in self.operations}

    def operation(self, method: str, template: str) -> Operation:
        """The documented operation ``method template`` (a template, not a concrete path).

        Raises:
            KeyError: it is not documented.
        """
        for candidate in self.operations:
            if candidate.method == method.upper() and candidate.template == template:
                return candidate
        raise KeyError(f"{method.upper()} {template} is not documented")

    def match(self, method: str, path: str) -> Operation | None:
        """The operation a concrete request addresses (``/downloads/123`` → ``/downloads/{request_id}``)."""
        found = self._match_path(path)
        if found is None:
            return None
        for operation in self.operations:
            if operation.template == found and operation.method == method.upper():
                return operation
        return None

    def security(self, operation: Operation) -> list[Mapping[str, Sequence[str]]]:
        """The security requirements of ``operation``: its own, else the document's; ``[]``: none needed.

        Each requirement maps scheme names (``components.securitySchemes``) that must all be satisfied;
        any one requirement of the list is enough.
        """
        own = operation.security
        requirements = own if own is not None else self.document.get("security") or []
        return [dict(requirement) for requirement in requirements]

    def parameters(self, operation: Operation) -> dict[tuple[str, str], Node]:
        """``operation``'s parameters by ``(in, name)``, resolved: the path item's, overridden by its own."""
        item = self.resolve((self.document.get("paths") or {}).get(operation.template) or {})
        found: dict[tuple[str, str], Node] = {}
        for parameter in [*(item.get("parameters") or []), *(operation.spec.get("parameters") or [])]:
            resolved = self.resolve(parameter)
            found[(str(resolved["in"]), str(resolved["name"]))] = resolved
        return found

    def response(self, operation: Operation, status: int | str) -> tuple[str, Node] | None:
        """The response documented for ``status`` (exact, then ``4XX``, then ``default``), resolved."""
        responses = self.resolve(operation.spec.get("responses", {}))
        code = str(status)
        for key in (code, f"{code[:1]}XX", f"{code[:1]}xx", "default"):
            if key in responses:
                return key, self.resolve(responses[key])
        return None

    def resolve(self, node: Any) -> Any:
        """``node`` with its local ``$ref`` (and the ``$ref`` that one may be) followed."""
        seen: set[str] = set()
        while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in seen:
                raise ValueError(f"circular $ref {ref}")
            seen.add(ref)
            node = self.pointer(ref)
        return node

    def pointer(self, ref: str) -> Any:
        """The document's node at a local reference ``#/a/b~1c``."""
        if not ref.startswith("#"):
            raise ValueError(f"only local references are supported, not {ref!r}")
        node: Any = self.document
        for raw in filter(None, ref[1:].split("/")):
            part = raw.replace("~1", "/").replace("~0", "~")
            try:
                node = node[int(part)] if isinstance(node, list) else node[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise ValueError(f"unresolvable $ref {ref!r}") from None
        return node

    def schema(self, name: str) -> Node:
        """``components.schemas[name]``."""
        return self.document["components"]["schemas"][name]  # type: ignore[no-any-return]

    # -- answers -------------------------------------------------------------------------------------
    def check(
        self,
        method: str,
        path: str,
        status: int | str,
        headers: Mapping[str, HeaderValue] | None = None,
        body: Json = _NO_BODY,
    ) -> list[str]:
        """What is wrong with one answer; an empty list when it conforms to the document.

        Args:
            method: the request's method (any case).
            path: the request's concrete path relative to the server URL (no stage), e.g.
                ``/downloads/123``; a query string is ignored.
            status: the answer's HTTP status.
            headers: the answer's headers, single values or lists of values (``multiValueHeaders``);
                None: no headers at all.
            body: the answer's body: ``bytes`` or ``str`` are the raw text (parsed as JSON), anything
                else is an already-parsed JSON value (``dict``, ``list``, ``None`` for JSON ``null`` …);
                ``b""``, ``""`` or leaving it out: no body.
        """
        verb = method.upper()
        concrete = urlsplit(path).path or path
        template = self._match_path(concrete)
        if template is None:
            return [f"{verb} {concrete}: undocumented path"]
        operation = self.match(verb, concrete)
        if operation is None:
            return [f"{verb} {concrete}: undocumented method for {template}"]
        found = self.response(operation, status)
        if found is None:
            documented = ", ".join(operation.statuses)
            return [f"{operation.label} {status}: undocumented status (documented: {documented})"]
        key, response = found
        where = f"{operation.label} {status}" + ("" if key == str(status) else f" (as {key})")
        normalized = _normalize_headers(headers or {})
        problems = list(self._check_headers(response, normalized))
        problems.extend(self._check_body(response, normalized, body))
        return [f"{where}: {problem}" for problem in problems]

    def check_schema(self, schema: Node | str, instance: Json) -> list[str]:
        """What is wrong with ``instance`` under ``schema`` (a schema, or a ``components.schemas`` name)."""
        node = self.schema(schema) if isinstance(schema, str) else schema
        return [self._describe(error) for error in self._validator(node).iter_errors(instance)]

    # -- internals -----------------------------------------------------------------------------------
    def _operations(self) -> Iterator[Operation]:
        for template, item in (self.document.get("paths") or {}).items():
            resolved = self.resolve(item)
            for method in HTTP_METHODS:
                if isinstance(resolved.get(method), Mapping):
                    yield Operation(method.upper(), str(template), resolved[method])

    def _all_responses(self) -> Iterator[tuple[Operation, str, Node]]:
        for operation in self.operations:
            for key, response in self.resolve(operation.spec.get("responses", {})).items():
                yield operation, str(key), self.resolve(response)

    def _match_path(self, path: str) -> str | None:
        segments = path.split("/")
        best: tuple[int, str] | None = None
        for template in {operation.template for operation in self.operations}:
            parts = template.split("/")
            if len(parts) != len(segments):
                continue
            literal = 0
            for part, segment in zip(parts, segments, strict=True):
                if re.fullmatch(r"\{[^{}/]+\}", part):
                    if not segment:
                        break
                elif part == segment:
                    literal += 1
                else:
                    break
            else:
                if best is None or literal > best[0]:
                    best = (literal, template)
        return best[1] if best else None

    def _check_headers(self, response: Node, headers: Mapping[str, list[str]]) -> Iterator[str]:
        for name, spec in (response.get("headers") or {}).items():
            if name.lower() == "content-type":
                continue  # OpenAPI: a Content-Type response header definition is ignored
            header = self.resolve(spec)
            values = headers.get(name.lower())
            if not values:
                if header.get("required"):
                    yield f"missing required header {name}"
                continue
            schema = header.get("schema")
            if schema is None:
                continue
            for value in values:
                for problem in self.check_schema(schema, value):
                    yield f"header {name}: {problem}"
        content = response.get("content") or {}
        for value in headers.get("content-type", []):
            media = value.split(";")[0].strip().lower()
            if content and not _media_type_documented(media, content):
                yield f"Content-Type {media!r} is not documented (documented: {', '.join(content)})"

    def _check_body(self, response: Node, headers: Mapping[str, list[str]], body: Json) -> Iterator[str]:
        content: Mapping[str, Any] = response.get("content") or {}
        absent = body is _NO_BODY or (isinstance(body, bytes | str) and not body)
        if not content:
            if not absent:
                yield "a body, where the document describes none"
            return
        if absent:
            yield f"no body, where the document describes {', '.join(content)}"
            return
        media = _pick_media_type(content, headers.get("content-type", []))
        schema = self.resolve(content[media]).get("schema") if media else None
        if schema is None:
            return
        if isinstance(body, bytes | str):
            try:
                body = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                yield f"the body is not JSON: {_short(repr(body))}"
                return
        problems = self.check_schema(schema, body)
        if problems:
            yield from (f"body: {problem}" for problem in problems)
            return
        yield from self._check_error_code(response, body)

    def _check_error_code(self, response: Node, body: Json) -> Iterator[str]:
        # Only an error answer ({"error": {...}} and nothing else): a failed record's ``error`` is not one.
        if not isinstance(body, Mapping) or set(body) != {"error"}:
            return
        error = body["error"]
        code = error.get("code") if isinstance(error, Mapping) else None
        if not isinstance(code, str) or code not in self.known_error_codes:
            return
        listed = _error_codes(response)
        if code not in listed:
            yield f"error code {code!r} is not documented for this answer (documented: {', '.join(listed)})"

    def _validator(self, schema: Node) -> Validator:
        cached = self._validators.get(id(schema))
        if cached is None:
            # Local $refs (#/components/...) resolve against the root: the schema beside the components.
            root = {"allOf": [schema], "components": self.document.get("components", {})}
            cached = (schema, self._validator_class(root, format_checker=self._format_checker))
            self._validators[id(schema)] = cached
        return cached[1]

    @staticmethod
    def _describe(error: ValidationError) -> str:
        where = error.json_path
        message = error.message
        if error.context:
            deepest = best_match(error.context)
            message = f"{message} ({deepest.json_path}: {deepest.message})"
        return f"{where}: {_short(message)}"


# Contract.load's cache: by the path as given, with the file's (mtime_ns, size) when it was read.
_LOADED: dict[Path, tuple[tuple[int, int], Contract]] = {}


def _error_codes(response: Node) -> tuple[str, ...]:
    codes = response.get(ERROR_CODES_KEY) or ()
    return tuple(str(code) for code in codes)


def _normalize_headers(headers: Mapping[str, HeaderValue]) -> dict[str, list[str]]:
    normalized: dict[str, list[str]] = {}
    for name, value in headers.items():
        values: Iterable[str] = [value] if isinstance(value, str) else value
        normalized.setdefault(name.lower(), []).extend(str(one) for one in values)
    return normalized


def _media_type_documented(media: str, content: Mapping[str, Any]) -> bool:
    for documented in content:
        kind = documented.split(";")[0].strip().lower()
        if kind in (media, "*/*") or (kind.endswith("/*") and media.startswith(kind[:-1])):
            return True
    return False


def _pick_media_type(content: Mapping[str, Any], content_types: Sequence[str]) -> str | None:
    for value in content_types:
        media = value.split(";")[0].strip().lower()
        for documented in content:
            if documented.split(";")[0].strip().lower() == media:
                return str(documented)
    if "application/json" in content:
        return "application/json"
    return next(iter(content), None)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
