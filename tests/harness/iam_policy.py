"""IAM for the harness: what a recorded AWS call needs, and whether policy statements grant it.

Two halves, independent of the template:

* ``required_permissions(call)`` turns one recorded botocore call (``AwsCall``) into the IAM
  ``Requirement``s AWS checks for it (action, resource ARN, request context), following the Service
  Authorization Reference. An operation it does not know raises ``UnknownOperation``: a suite that
  meets a new call fails loudly instead of passing unchecked.
* ``evaluate(requirement, identity_statements, resource_statements)`` applies IAM's evaluation logic
  for one principal in one account: an explicit Deny anywhere wins; otherwise an identity Allow
  grants, a resource-policy Allow naming the principal (or ``*``) grants, and a KMS key additionally
  needs its key policy to allow, directly or by delegating to IAM through the account root.

What is modelled is written at each function; what is not is refused with an exception rather than
guessed (unknown condition operators, malformed statements, Principal in an identity statement).
Not modelled at all: permissions boundaries, SCPs/RCPs, session policies, cross-account access, KMS
grants, S3 ACLs and access points. ``NotPrincipal`` is simplified: it covers every principal that none
of its entries names (an entry naming the account root excludes the whole account).

Statements are plain IAM statement dicts. A statement may carry ``ORIGIN_KEY`` (added by
``tests.harness.cfn_template``) telling where it came from; the evaluator ignores it except in
reasons and in ``unused_permissions``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

ORIGIN_KEY = "HarnessOrigin"
"""Key of a statement dict naming its source: ``{"kind": ..., "name": ...}``; not an IAM element."""

ORIGIN_KINDS = ("inline", "customer-managed", "aws-managed", "key-policy", "bucket-policy")
"""The ``kind`` values of an origin. ``inline`` and ``customer-managed`` are the template's own."""

CUSTOMER_ORIGIN_KINDS = frozenset({"inline", "customer-managed"})

ContextValue = str | list[str]
"""A request-context value: one string, or several for a multivalued key."""

KeyArnResolver = Callable[[str], str]
"""Turns a KMS key id or alias (name or ARN) into the key's ARN."""

SecretArnResolver = Callable[[str], str]
"""Turns a Secrets Manager secret name or partial ARN into its full ARN (with the random suffix)."""


class UnknownOperation(LookupError):  # noqa: N818 - the name the suite uses
    """A recorded call whose IAM requirements this module does not know."""


class PolicyError(ValueError):
    """A statement this evaluator will not guess about (malformed, or an unknown operator)."""


@dataclass(frozen=True)
class AwsCall:
    """One AWS API call a function made, as botocore saw it.

    ``service`` is botocore's service name (``s3``, ``dynamodb``, ...), ``operation`` its operation
    name (``UpdateItem``), ``params`` the API parameters botocore was given. ``context`` holds facts
    the recorder learned besides the parameters; the one read today is ``"KeyArn"``: the key ARN of a
    KMS ``Decrypt`` called without ``KeyId`` (the response's ``KeyId``).
    A presigned URL is recorded as the operation it presigns (``GetObject``), or as
    ``operation="GeneratePresignedUrl"`` with ``{"ClientMethod": "get_object", "Params": {...}}``.
    """

    function: str
    service: str
    operation: str
    params: Mapping[str, Any]
    region: str
    account: str
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Requirement:
    """One IAM authorization AWS performs for a call: ``action`` on ``resource_arn`` with ``context``.

    ``context`` is the request context: condition keys (any case) to one value or a list of values.
    """

    action: str
    resource_arn: str
    context: Mapping[str, ContextValue] = field(default_factory=dict)

    def with_context(self, extra: Mapping[str, ContextValue]) -> Requirement:
        """The same requirement with ``extra`` keys added to (or replacing those in) its context."""
        return Requirement(self.action, self.resource_arn, {**self.context, **extra})


@dataclass(frozen=True)
class Decision:
    """The outcome of ``evaluate``: ``allowed`` and a reason naming the deciding statement(s)."""

    allowed: bool
    reason: str


# -- matching primitives -------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """Whether ``value`` matches ``pattern`` whole, ``*`` being any run of characters (``/`` and ``:``
    included) and ``?`` any one character, as IAM matches Action, Resource and ``StringLike``."""
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def action_matches(pattern: str, action: str) -> bool:
    """IAM Action matching: ``*`` alone matches all; otherwise ``service:name`` globbing, case-insensitive."""
    if pattern != "*" and ":" not in pattern:
        raise PolicyError(f"Action {pattern!r} is neither '*' nor 'service:action'")
    return wildcard_match(pattern, action, ignore_case=True)


_POLICY_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_SPECIAL_VARIABLES = {"*": "*", "?": "?", "$": "$"}


def _substitute(pattern: str, context: _Context) -> str | None:
    """``pattern`` with policy variables (``${aws:username}``) replaced from ``context``.

    ``None`` when a variable has no single value in the context (the element then matches nothing).
    ``${*}``, ``${?}`` and ``${$}`` stand for the literal characters.
    """
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group(1).strip()
        if name in _SPECIAL_VARIABLES:
            return _SPECIAL_VARIABLES[name]
        default = None
        if "," in name:
            name, _, fallback = name.partition(",")
            name, default = name.strip(), fallback.strip().strip("'")
        values = context.get(name)
        if values is not None and len(values) == 1:
            return values[0]
        if default is not None:
            return default
        missing = True
        return ""

    result = _POLICY_VARIABLE.sub(replace, pattern)
    return None if missing else result


def resource_matches(pattern: str, arn: str, context: Mapping[str, ContextValue] | None = None) -> bool:
    """IAM Resource matching: case-sensitive, ``*``/``?`` wildcards over the whole ARN, policy variables
    substituted from ``context``."""
    substituted = _substitute(pattern, _Context(context or {}))
    return substituted is not None and wildcard_match(substituted, arn)


def _arn_parts(arn: str) -> list[str] | None:
    parts = arn.split(":", 5)
    return parts if len(parts) == 6 and parts[0] == "arn" else None


def _arn_like(pattern: str, value: str) -> bool:
    """ArnLike/ArnEquals: each of the six colon-separated parts matched on its own, wildcards allowed."""
    pattern_parts, value_parts = _arn_parts(pattern), _arn_parts(value)
    if pattern_parts is None or value_parts is None:
        return pattern == "*" or wildcard_match(pattern, value)
    return all(wildcard_match(p, v) for p, v in zip(pattern_parts, value_parts, strict=True))


# -- request context -----------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise PolicyError(f"{value!r} is not a scalar condition value")


class _Context:
    """The request context with case-insensitive key names; every value a list of strings."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in raw.items():
            values = [_scalar(v) for v in value] if isinstance(value, list | tuple) else [_scalar(value)]
            self._values[key.lower()] = values

    def get(self, key: str) -> list[str] | None:
        return self._values.get(key.lower())

    def single(self, key: str) -> str | None:
        values = self.get(key)
        return values[0] if values and len(values) == 1 else None


# -- condition operators -------------------------------------------------------------------------


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _date(text: str) -> datetime | None:
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _compare(kind: str, test: Callable[[Any, Any], bool]) -> Callable[[str, str], bool]:
    parse = _number if kind == "number" else _date

    def compare(request: str, policy: str) -> bool:
        wanted = parse(policy)
        if wanted is None:
            raise PolicyError(f"condition value {policy!r} is not a {kind}")
        got = parse(request)
        return got is not None and test(got, wanted)

    return compare


def _ip_in(request: str, policy: str) -> bool:
    try:
        network = ipaddress.ip_network(policy, strict=False)
    except ValueError as error:
        raise PolicyError(f"condition value {policy!r} is not an IP address or CIDR") from error
    try:
        return ipaddress.ip_address(request) in network
    except ValueError:
        return False


# Positive base operators: request value, policy value -> match.
_POSITIVE: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda r, p: r == p,
    "StringEqualsIgnoreCase": lambda r, p: r.casefold() == p.casefold(),
    "StringLike": lambda r, p: wildcard_match(p, r),
    "NumericEquals": _compare("number", lambda a, b: a == b),
    "NumericLessThan": _compare("number", lambda a, b: a < b),
    "NumericLessThanEquals": _compare("number", lambda a, b: a <= b),
    "NumericGreaterThan": _compare("number", lambda a, b: a > b),
    "NumericGreaterThanEquals": _compare("number", lambda a, b: a >= b),
    "DateEquals": _compare("date", lambda a, b: a == b),
    "DateLessThan": _compare("date", lambda a, b: a < b),
    "DateLessThanEquals": _compare("date", lambda a, b: a <= b),
    "DateGreaterThan": _compare("date", lambda a, b: a > b),
    "DateGreaterThanEquals": _compare("date", lambda a, b: a >= b),
    "Bool": lambda r, p: r.lower() == p.lower(),
    "BinaryEquals": lambda r, p: r == p,
    "IpAddress": _ip_in,
    "ArnEquals": lambda r, p: _arn_like(p, r),
    "ArnLike": lambda r, p: _arn_like(p, r),
}
# Negated operators: true when the request value matches none of the policy values.
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "NumericNotEquals": "NumericEquals",
    "DateNotEquals": "DateEquals",
    "NotIpAddress": "IpAddress",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}
# Operators whose policy values may hold policy variables.
_VARIABLE_OPERATORS = frozenset(
    {"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike"}
)


@dataclass(frozen=True)
class _Operator:
    name: str
    positive: str  # key of _POSITIVE, or "Null"
    negated: bool
    set_operator: str  # "", "ForAllValues" or "ForAnyValue"
    if_exists: bool

    @staticmethod
    def parse(name: str) -> _Operator:
        rest, set_operator = name, ""
        for prefix in ("ForAllValues:", "ForAnyValue:"):
            if rest.startswith(prefix):
                rest, set_operator = rest[len(prefix) :], prefix[:-1]
        if_exists = rest.endswith("IfExists") and rest != "IfExists"
        base = rest[: -len("IfExists")] if if_exists else rest
        if base == "Null":
            if if_exists or set_operator:
                raise PolicyError(f"condition operator {name!r}: Null takes no IfExists nor set prefix")
            return _Operator(name, "Null", False, "", False)
        if base in _POSITIVE:
            return _Operator(name, base, False, set_operator, if_exists)
        if base in _NEGATED:
            return _Operator(name, _NEGATED[base], True, set_operator, if_exists)
        raise PolicyError(f"unknown condition operator {name!r}")

    def holds(self, key: str, policy_values: list[str], context: _Context) -> bool:
        """Whether this operator's test of ``key`` against ``policy_values`` holds in ``context``."""
        request = context.get(key)
        if self.positive == "Null":
            # "true": the key must be absent; "false": present. Several values: any of them.
            return any((value.lower() == "true") == (request is None) for value in policy_values)
        if request is None:
            if self.if_exists or self.set_operator == "ForAllValues":
                return True
            if self.set_operator == "ForAnyValue":
                return False
            # IAM: a missing key never matches, so a "not" operator holds.
            return self.negated
        if self.set_operator == "ForAllValues":
            return all(self._one(value, policy_values, context) for value in request)
        if self.set_operator == "ForAnyValue":
            return any(self._one(value, policy_values, context) for value in request)
        # A plain operator on several request values: any matches (negated: none matches).
        if self.negated:
            return all(self._one(value, policy_values, context) for value in request)
        return any(self._one(value, policy_values, context) for value in request)

    def _one(self, request: str, policy_values: list[str], context: _Context) -> bool:
        test = _POSITIVE[self.positive]
        matched = False
        for policy in policy_values:
            value = _substitute(policy, context) if self.positive in _VARIABLE_OPERATORS else policy
            if value is not None and test(request, value):
                matched = True
                break
        return not matched if self.negated else matched


# -- statements ----------------------------------------------------------------------------------

_STATEMENT_KEYS = frozenset(
    {
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
)


def _strings(value: Any, element: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) for item in items):
        raise PolicyError(f"{element} must be a string or a non-empty list of strings, not {value!r}")
    return tuple(items)


def origin_of(statement: Mapping[str, Any]) -> dict[str, str]:
    """The statement's origin (``{"kind", "name"}``), or ``{"kind": "inline", "name": "?"}`` without one."""
    origin = statement.get(ORIGIN_KEY)
    if isinstance(origin, Mapping):
        return {"kind": str(origin.get("kind", "inline")), "name": str(origin.get("name", "?"))}
    return {"kind": "inline", "name": "?"}


def describe(statement: Mapping[str, Any]) -> str:
    """A short label for reports: the Sid (or the actions when there is none) and the origin."""
    origin = origin_of(statement)
    sid = statement.get("Sid")
    if not sid:
        actions = statement.get("Action", statement.get("NotAction", "?"))
        sid = f"(no Sid: {','.join(actions) if isinstance(actions, list) else actions})"
    where = f"{origin['kind']} {origin['name']}" if ORIGIN_KEY in statement else "given statements"
    return f"{sid} [{where}]"


@dataclass(frozen=True)
class _Statement:
    raw: Mapping[str, Any]
    allow: bool
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    principals: Mapping[str, tuple[str, ...]] | None
    not_principal: bool
    conditions: tuple[tuple[_Operator, str, list[str]], ...]

    @property
    def label(self) -> str:
        return describe(self.raw)

    def matches_action(self, action: str) -> bool:
        hit = any(action_matches(pattern, action) for pattern in self.actions)
        return hit != self.not_action

    def matches_resource(self, arn: str, context: _Context) -> bool:
        hit = False
        for pattern in self.resources:
            substituted = _substitute(pattern, context)
            if substituted is not None and wildcard_match(substituted, arn):
                hit = True
                break
        return hit != self.not_resource

    def conditions_hold(self, context: _Context) -> bool:
        return all(operator.holds(key, values, context) for operator, key, values in self.conditions)

    def applies(self, requirement: Requirement, context: _Context) -> bool:
        return (
            self.matches_action(requirement.action)
            and self.matches_resource(requirement.resource_arn, context)
            and self.conditions_hold(context)
        )

    def principal_match(self, principal_arn: str | None, account: str, partition: str) -> str | None:
        """``"direct"`` if it names the principal (or everyone), ``"account"`` if it names the principal's
        account (delegation to IAM), else ``None``. NotPrincipal: everyone it does not name is direct."""
        assert self.principals is not None
        found: str | None = None
        for kind, values in self.principals.items():
            for value in values:
                match = _principal_value_match(kind, value, principal_arn, account, partition)
                if match == "direct" or (match == "account" and found is None):
                    found = match
        if self.not_principal:
            return None if found else "direct"
        return found


def _principal_value_match(
    kind: str, value: str, principal_arn: str | None, account: str, partition: str
) -> str | None:
    if kind == "*" or (kind == "AWS" and value == "*"):
        return "direct"
    if kind != "AWS":
        return None  # Service, Federated, CanonicalUser: never a function's role
    if value in (account, f"arn:{partition}:iam::{account}:root"):
        return "account"
    if principal_arn is not None and value == principal_arn:
        return "direct"
    return None


def _parse_statement(statement: Mapping[str, Any], *, resource_policy: bool) -> _Statement:
    unknown = set(statement) - _STATEMENT_KEYS - {ORIGIN_KEY}
    if unknown:
        raise PolicyError(f"statement {statement.get('Sid', '')!r} has unknown elements {sorted(unknown)}")
    effect = statement.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(
            f"statement {statement.get('Sid', '')!r}: Effect must be Allow or Deny, not {effect!r}"
        )
    if ("Action" in statement) == ("NotAction" in statement):
        raise PolicyError(f"statement {statement.get('Sid', '')!r} needs exactly one of Action, NotAction")
    if ("Resource" in statement) == ("NotResource" in statement):
        raise PolicyError(
            f"statement {statement.get('Sid', '')!r} needs exactly one of Resource, NotResource"
        )
    has_principal = "Principal" in statement or "NotPrincipal" in statement
    if has_principal != resource_policy:
        where = "a resource policy statement needs" if resource_policy else "an identity statement takes no"
        raise PolicyError(f"statement {statement.get('Sid', '')!r}: {where} Principal")
    not_action = "NotAction" in statement
    actions = _strings(statement["NotAction" if not_action else "Action"], "Action")
    for action in actions:
        action_matches(action, "validate:action")  # raises on a malformed pattern
    not_resource = "NotResource" in statement
    resources = _strings(statement["NotResource" if not_resource else "Resource"], "Resource")
    principals: dict[str, tuple[str, ...]] | None = None
    not_principal = "NotPrincipal" in statement
    if has_principal:
        raw = statement["NotPrincipal" if not_principal else "Principal"]
        if raw == "*":
            principals = {"*": ("*",)}
        elif isinstance(raw, Mapping):
            principals = {str(kind): _strings(value, f"Principal.{kind}") for kind, value in raw.items()}
        else:
            raise PolicyError(f"statement {statement.get('Sid', '')!r}: malformed Principal {raw!r}")
    conditions: list[tuple[_Operator, str, list[str]]] = []
    block = statement.get("Condition", {})
    if not isinstance(block, Mapping):
        raise PolicyError(f"statement {statement.get('Sid', '')!r}: Condition must be a map")
    for operator_name, tests in block.items():
        operator = _Operator.parse(str(operator_name))
        if not isinstance(tests, Mapping):
            raise PolicyError(f"condition {operator_name!r} must map condition keys to values")
        for key, values in tests.items():
            listed = values if isinstance(values, list) else [values]
            conditions.append((operator, str(key), [_scalar(value) for value in listed]))
    return _Statement(
        statement,
        effect == "Allow",
        actions,
        not_action,
        resources,
        not_resource,
        principals,
        not_principal,
        tuple(conditions),
    )


# -- evaluation ----------------------------------------------------------------------------------

_KMS_KEY_ARN = re.compile(r"^arn:[^:]+:kms:[^:]*:[^:]*:key/")


def _arn_field(arn: str, index: int) -> str:
    parts = _arn_parts(arn)
    return parts[index] if parts else ""


def evaluate(
    requirement: Requirement,
    identity_statements: Iterable[Mapping[str, Any]],
    resource_statements: Iterable[Mapping[str, Any]] = (),
    *,
    principal_arn: str | None = None,
) -> Decision:
    """Whether one principal may do ``requirement``, by IAM's logic for a single account.

    * An applicable ``Deny`` in the identity statements, or in a resource statement whose Principal
      covers the caller (``*``, its account, or ``principal_arn``), denies.
    * For a KMS key (``kms:`` action on a ``key/`` ARN) the resource statements are its key policy, and
      they are required: allowed when the key policy allows the principal (or ``*``) directly, or when it
      allows the account root (delegation to IAM) and an identity statement allows too.
    * Otherwise allowed when an identity statement allows, or a resource statement allows naming the
      principal or ``*`` (one naming only the account root delegates to IAM and does not grant alone).
    * Otherwise denied: "no statement allows".

    Conditions: operators of one statement AND, keys within an operator AND, values of one key OR.
    Key names are case-insensitive. A key missing from the context makes the test false, except that
    ``...IfExists`` and ``ForAllValues:`` then hold, ``Null`` tests exactly that, and a negated operator
    (``StringNotEquals``, ``StringNotLike``, ``ArnNotLike``, ``NotIpAddress``...) holds, as IAM's
    documentation states. A plain operator given several request values holds if any value matches
    (a negated one: if none does). Policy variables (``${aws:username}``) are substituted in Resource
    and in String/Arn condition values; one missing from the context matches nothing.

    The principal's account is the context's ``aws:PrincipalAccount`` (``required_permissions`` sets
    it), else the resource ARN's account. ``principal_arn`` (its role ARN) is only needed to match
    resource statements that name the role itself. Raises ``PolicyError`` on a statement it cannot
    judge: an unknown condition operator, a malformed element, a Principal in an identity statement,
    or a KMS key requirement without a key policy.
    """
    context_raw: dict[str, ContextValue] = dict(requirement.context)
    if principal_arn is not None:
        context_raw.setdefault("aws:PrincipalArn", principal_arn)
    context = _Context(context_raw)
    identity = [_parse_statement(s, resource_policy=False) for s in identity_statements]
    resource = [_parse_statement(s, resource_policy=True) for s in resource_statements]
    account = context.single("aws:PrincipalAccount") or _arn_field(requirement.resource_arn, 4)
    partition = _arn_field(requirement.resource_arn, 1) or "aws"
    what = f"{requirement.action} on {requirement.resource_arn}"

    for statement in identity:
        if not statement.allow and statement.applies(requirement, context):
            return Decision(False, f"{what}: explicit Deny by {statement.label}")
    principal = {id(s): s.principal_match(principal_arn, account, partition) for s in resource}
    for statement in resource:
        if not statement.allow and principal[id(statement)] and statement.applies(requirement, context):
            return Decision(False, f"{what}: explicit Deny by {statement.label}")

    identity_allow = next((s for s in identity if s.allow and s.applies(requirement, context)), None)
    direct = next(
        (s for s in resource if s.allow and principal[id(s)] == "direct" and s.applies(requirement, context)),
        None,
    )
    delegated = next(
        (
            s
            for s in resource
            if s.allow and principal[id(s)] == "account" and s.applies(requirement, context)
        ),
        None,
    )

    if requirement.action.lower().startswith("kms:") and _KMS_KEY_ARN.match(requirement.resource_arn):
        if not resource:
            raise PolicyError(f"{what}: a KMS key needs its key policy as resource_statements")
        if direct is not None:
            return Decision(True, f"{what}: allowed by key policy {direct.label}")
        if identity_allow is not None and delegated is not None:
            return Decision(
                True,
                f"{what}: allowed by {identity_allow.label}; key policy {delegated.label} delegates to IAM",
            )
        if identity_allow is not None:
            return Decision(
                False,
                f"{what}: {identity_allow.label} allows, but the key policy neither allows the principal "
                "nor delegates to the account",
            )
        return Decision(False, f"{what}: no statement allows")

    if identity_allow is not None:
        return Decision(True, f"{what}: allowed by {identity_allow.label}")
    if direct is not None:
        return Decision(True, f"{what}: allowed by resource policy {direct.label}")
    return Decision(False, f"{what}: no statement allows")


def unused_permissions(
    statements_by_function: Mapping[str, Sequence[Mapping[str, Any]]],
    requirements_by_function: Mapping[str, Sequence[Requirement]],
) -> list[str]:
    """For a report: each (function, action, resource pattern) that a customer Allow statement grants
    and that no recorded requirement of that function used, as ``"Fn: action on resource (label)"``.

    Customer statements are those of origin ``inline`` or ``customer-managed`` (or without an origin);
    AWS managed policies, key and bucket policies are not reported. A pair counts as used when one of
    the function's requirements matches its action and resource and the statement's conditions hold
    for that requirement. ``NotAction``/``NotResource`` elements are reported as written.
    """
    unused: list[str] = []
    for function in sorted(statements_by_function):
        requirements = requirements_by_function.get(function, ())
        for raw in statements_by_function[function]:
            if ORIGIN_KEY in raw and origin_of(raw)["kind"] not in CUSTOMER_ORIGIN_KINDS:
                continue
            statement = _parse_statement(raw, resource_policy="Principal" in raw or "NotPrincipal" in raw)
            if not statement.allow:
                continue
            action_patterns = (
                [f"NotAction {list(statement.actions)}"] if statement.not_action else list(statement.actions)
            )
            resource_patterns = (
                [f"NotResource {list(statement.resources)}"]
                if statement.not_resource
                else list(statement.resources)
            )
            for action in action_patterns:
                for resource in resource_patterns:
                    used = False
                    for requirement in requirements:
                        context = _Context(requirement.context)
                        action_ok = (
                            statement.matches_action(requirement.action)
                            if statement.not_action
                            else action_matches(action, requirement.action)
                        )
                        resource_ok = (
                            statement.matches_resource(requirement.resource_arn, context)
                            if statement.not_resource
                            else resource_matches(resource, requirement.resource_arn, requirement.context)
                        )
                        if action_ok and resource_ok and statement.conditions_hold(context):
                            used = True
                            break
                    if not used:
                        unused.append(f"{function}: {action} on {resource} ({statement.label})")
    return unused


# -- required permissions ------------------------------------------------------------------------


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _base_context(call: AwsCall) -> dict[str, ContextValue]:
    """Global keys present in every request a function makes with its role over TLS."""
    return {
        "aws:SecureTransport": "true",
        "aws:PrincipalAccount": call.account,
        "aws:PrincipalType": "AssumedRole",
        "aws:RequestedRegion": call.region,
        "aws:ViaAWSService": "false",
    }


def _param(call: AwsCall, name: str) -> Any:
    if name not in call.params:
        raise ValueError(
            f"{call.service}.{call.operation}: parameter {name!r} missing from the recorded call"
        )
    return call.params[name]


def _requirement(
    call: AwsCall, action: str, arn: str, extra: Mapping[str, ContextValue] | None = None
) -> Requirement:
    context = _base_context(call)
    if extra:
        context.update(extra)
    return Requirement(action, arn, context)


# S3 -----------------------------------------------------------------------------------------------

# operation -> (action, action when a VersionId is given)
_S3_OBJECT_ACTIONS: dict[str, tuple[str, str]] = {
    "PutObject": ("s3:PutObject", "s3:PutObject"),
    "CreateMultipartUpload": ("s3:PutObject", "s3:PutObject"),
    "UploadPart": ("s3:PutObject", "s3:PutObject"),
    "CompleteMultipartUpload": ("s3:PutObject", "s3:PutObject"),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload", "s3:AbortMultipartUpload"),
    "GetObject": ("s3:GetObject", "s3:GetObjectVersion"),
    "HeadObject": ("s3:GetObject", "s3:GetObjectVersion"),
    "GetObjectAttributes": ("s3:GetObjectAttributes", "s3:GetObjectVersionAttributes"),
    "DeleteObject": ("s3:DeleteObject", "s3:DeleteObjectVersion"),
    "ListParts": ("s3:ListMultipartUploadParts", "s3:ListMultipartUploadParts"),
    "GetObjectTagging": ("s3:GetObjectTagging", "s3:GetObjectVersionTagging"),
    "PutObjectTagging": ("s3:PutObjectTagging", "s3:PutObjectVersionTagging"),
}
_S3_BUCKET_ACTIONS: dict[str, str] = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetBucketLocation": "s3:GetBucketLocation",
}
_S3_WRITES = frozenset({"PutObject", "CreateMultipartUpload", "CopyObject"})
_S3_HEADER_KEYS = {
    "ServerSideEncryption": "s3:x-amz-server-side-encryption",
    "ACL": "s3:x-amz-acl",
    "StorageClass": "s3:x-amz-storage-class",
}


def _s3_bucket(call: AwsCall, value: Any) -> str:
    bucket = str(value)
    if bucket.startswith("arn:"):
        raise UnknownOperation(
            f"s3.{call.operation}: access point or Outposts bucket {bucket!r} is not modelled"
        )
    return bucket


def _s3_object_arn(call: AwsCall, bucket: str, key: str) -> str:
    return f"arn:{_partition(call.region)}:s3:::{bucket}/{key}"


def _s3_context(call: AwsCall, presigned: bool) -> dict[str, ContextValue]:
    context: dict[str, ContextValue] = {
        "s3:signatureversion": "AWS4-HMAC-SHA256",
        "s3:authType": "REST-QUERY-STRING" if presigned else "REST-HEADER",
    }
    if call.operation in _S3_WRITES:
        for parameter, key in _S3_HEADER_KEYS.items():
            if parameter in call.params:
                context[key] = str(call.params[parameter])
        if str(call.params.get("ServerSideEncryption", "")).startswith("aws:kms"):
            raise UnknownOperation(
                f"s3.{call.operation} with SSE-KMS: the kms:GenerateDataKey it also needs is not modelled"
            )
    return context


def _copy_source(call: AwsCall) -> tuple[str, str, str | None]:
    source = _param(call, "CopySource")
    if isinstance(source, Mapping):
        return _s3_bucket(call, source["Bucket"]), str(source["Key"]), source.get("VersionId")
    text, _, query = str(source).lstrip("/").partition("?")
    versions = parse_qs(query).get("versionId")
    bucket, _, key = text.partition("/")
    return _s3_bucket(call, bucket), unquote(key), versions[0] if versions else None


def _s3(call: AwsCall, presigned: bool) -> list[Requirement]:
    context = _s3_context(call, presigned)
    operation = call.operation
    if operation in _S3_OBJECT_ACTIONS:
        bucket, key = _s3_bucket(call, _param(call, "Bucket")), str(_param(call, "Key"))
        plain, versioned = _S3_OBJECT_ACTIONS[operation]
        action = versioned if call.params.get("VersionId") else plain
        if call.params.get("VersionId"):
            context["s3:VersionId"] = str(call.params["VersionId"])
        return [_requirement(call, action, _s3_object_arn(call, bucket, key), context)]
    if operation in _S3_BUCKET_ACTIONS:
        bucket = _s3_bucket(call, _param(call, "Bucket"))
        for parameter, key in (
            ("Prefix", "s3:prefix"),
            ("Delimiter", "s3:delimiter"),
            ("MaxKeys", "s3:max-keys"),
        ):
            if parameter in call.params:
                context[key] = str(call.params[parameter])
        arn = f"arn:{_partition(call.region)}:s3:::{bucket}"
        return [_requirement(call, _S3_BUCKET_ACTIONS[operation], arn, context)]
    if operation in ("UploadPartCopy", "CopyObject"):
        bucket, key = _s3_bucket(call, _param(call, "Bucket")), str(_param(call, "Key"))
        source_bucket, source_key, version = _copy_source(call)
        read = "s3:GetObjectVersion" if version else "s3:GetObject"
        return [
            _requirement(call, "s3:PutObject", _s3_object_arn(call, bucket, key), context),
            _requirement(call, read, _s3_object_arn(call, source_bucket, source_key), context),
        ]
    if operation == "DeleteObjects":
        bucket = _s3_bucket(call, _param(call, "Bucket"))
        objects = _param(call, "Delete").get("Objects", [])
        return [
            _requirement(
                call,
                "s3:DeleteObjectVersion" if item.get("VersionId") else "s3:DeleteObject",
                _s3_object_arn(call, bucket, str(item["Key"])),
                context,
            )
            for item in objects
        ]
    raise UnknownOperation(f"s3.{operation}: no IAM mapping in tests/harness/iam_policy.py")


# DynamoDB -----------------------------------------------------------------------------------------

_DYNAMODB_TABLE_OPERATIONS = frozenset(
    {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "DescribeTable"}
)
_TRANSACT_WRITE_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


def _table_arn(call: AwsCall, table: Any, index: Any = None) -> str:
    name = str(table)
    arn = (
        name
        if name.startswith("arn:")
        else f"arn:{_partition(call.region)}:dynamodb:{call.region}:{call.account}:table/{name}"
    )
    return f"{arn}/index/{index}" if index else arn


def _dynamodb_context(params: Mapping[str, Any]) -> dict[str, ContextValue]:
    context: dict[str, ContextValue] = {}
    for parameter, key in (
        ("ReturnValues", "dynamodb:ReturnValues"),
        ("ReturnConsumedCapacity", "dynamodb:ReturnConsumedCapacity"),
        ("Select", "dynamodb:Select"),
    ):
        if parameter in params:
            context[key] = str(params[parameter])
    return context


def _dynamodb(call: AwsCall) -> list[Requirement]:
    operation = call.operation
    if operation in _DYNAMODB_TABLE_OPERATIONS:
        index = call.params.get("IndexName") if operation in ("Query", "Scan") else None
        arn = _table_arn(call, _param(call, "TableName"), index)
        return [_requirement(call, f"dynamodb:{operation}", arn, _dynamodb_context(call.params))]
    if operation in ("BatchGetItem", "BatchWriteItem"):
        context = _dynamodb_context(call.params)
        return [
            _requirement(call, f"dynamodb:{operation}", _table_arn(call, table), context)
            for table in _param(call, "RequestItems")
        ]
    if operation == "TransactWriteItems":
        found: list[Requirement] = []
        for item in _param(call, "TransactItems"):
            if len(item) != 1 or next(iter(item)) not in _TRANSACT_WRITE_ACTIONS:
                raise UnknownOperation(f"dynamodb.TransactWriteItems: item {sorted(item)} not understood")
            kind, body = next(iter(item.items()))
            context = _dynamodb_context(call.params) | _dynamodb_context(body)
            found.append(
                _requirement(
                    call, _TRANSACT_WRITE_ACTIONS[kind], _table_arn(call, body["TableName"]), context
                )
            )
        return found
    if operation == "TransactGetItems":
        return [
            _requirement(call, "dynamodb:GetItem", _table_arn(call, item["Get"]["TableName"]))
            for item in _param(call, "TransactItems")
        ]
    raise UnknownOperation(f"dynamodb.{operation}: no IAM mapping in tests/harness/iam_policy.py")


# SQS ----------------------------------------------------------------------------------------------

_SQS_ACTIONS = {
    "SendMessage": "sqs:SendMessage",
    "SendMessageBatch": "sqs:SendMessage",
    "ReceiveMessage": "sqs:ReceiveMessage",
    "DeleteMessage": "sqs:DeleteMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibility": "sqs:ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "GetQueueAttributes": "sqs:GetQueueAttributes",
    "SetQueueAttributes": "sqs:SetQueueAttributes",
    "PurgeQueue": "sqs:PurgeQueue",
}


def _sqs(call: AwsCall) -> list[Requirement]:
    partition = _partition(call.region)
    if call.operation == "GetQueueUrl":
        owner = str(call.params.get("QueueOwnerAWSAccountId") or call.account)
        arn = f"arn:{partition}:sqs:{call.region}:{owner}:{_param(call, 'QueueName')}"
        return [_requirement(call, "sqs:GetQueueUrl", arn)]
    if call.operation not in _SQS_ACTIONS:
        raise UnknownOperation(f"sqs.{call.operation}: no IAM mapping in tests/harness/iam_policy.py")
    segments = [s for s in urlparse(str(_param(call, "QueueUrl"))).path.split("/") if s]
    if not segments:
        raise ValueError(f"sqs.{call.operation}: QueueUrl {call.params['QueueUrl']!r} names no queue")
    owner = segments[-2] if len(segments) >= 2 and re.fullmatch(r"\d{12}", segments[-2]) else call.account
    arn = f"arn:{partition}:sqs:{call.region}:{owner}:{segments[-1]}"
    return [_requirement(call, _SQS_ACTIONS[call.operation], arn)]


# KMS ----------------------------------------------------------------------------------------------

_KMS_OPERATIONS = frozenset(
    {
        "Encrypt",
        "Decrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateMac",
        "VerifyMac",
        "DescribeKey",
        "Sign",
        "Verify",
    }
)


def _kms_key_arn(call: AwsCall, key_id: str, resolver: KeyArnResolver | None) -> tuple[str, str | None]:
    """The key ARN for ``key_id``, and the alias it was named by (for ``kms:RequestAlias``)."""
    if _KMS_KEY_ARN.match(key_id):
        return key_id, None
    alias: str | None = None
    if key_id.startswith("alias/"):
        alias = key_id
    elif key_id.startswith("arn:") and ":alias/" in key_id:
        alias = "alias/" + key_id.split(":alias/", 1)[1]
    if alias is None and not key_id.startswith("arn:"):
        # A bare key id names a key of the caller's account and region.
        return f"arn:{_partition(call.region)}:kms:{call.region}:{call.account}:key/{key_id}", None
    if resolver is None:
        raise ValueError(f"kms.{call.operation}: KeyId {key_id!r} needs key_arn= to find the key's ARN")
    resolved = resolver(key_id)
    if not _KMS_KEY_ARN.match(resolved):
        raise ValueError(f"kms.{call.operation}: resolver turned {key_id!r} into {resolved!r}, not a key ARN")
    return resolved, alias


def _kms(call: AwsCall, key_arn: KeyArnResolver | None) -> list[Requirement]:
    operation = call.operation
    if operation not in _KMS_OPERATIONS:
        raise UnknownOperation(f"kms.{operation}: no IAM mapping in tests/harness/iam_policy.py")
    key_id = call.params.get("KeyId")
    if key_id is None:
        if operation != "Decrypt":
            raise ValueError(f"kms.{operation}: parameter 'KeyId' missing from the recorded call")
        if "KeyArn" not in call.context:
            raise ValueError("kms.Decrypt without KeyId: record the key ARN as AwsCall.context['KeyArn']")
        arn, alias = _kms_key_arn(call, call.context["KeyArn"], key_arn)
    else:
        arn, alias = _kms_key_arn(call, str(key_id), key_arn)
    context: dict[str, ContextValue] = {"kms:CallerAccount": call.account}
    encryption_context = call.params.get("EncryptionContext") or {}
    for key, value in encryption_context.items():
        context[f"kms:EncryptionContext:{key}"] = str(value)
    if encryption_context:
        context["kms:EncryptionContextKeys"] = [str(key) for key in encryption_context]
    if alias is not None:
        context["kms:RequestAlias"] = alias
    for parameter, key in (
        ("EncryptionAlgorithm", "kms:EncryptionAlgorithm"),
        ("MacAlgorithm", "kms:MacAlgorithm"),
        ("SigningAlgorithm", "kms:SigningAlgorithm"),
    ):
        if parameter in call.params:
            context[key] = str(call.params[parameter])
    return [_requirement(call, f"kms:{operation}", arn, context)]


# EventBridge, Secrets Manager, Scheduler ----------------------------------------------------------


def _events(call: AwsCall) -> list[Requirement]:
    if call.operation != "PutEvents":
        raise UnknownOperation(f"events.{call.operation}: no IAM mapping in tests/harness/iam_policy.py")
    found: list[Requirement] = []
    for entry in _param(call, "Entries"):
        bus = str(entry.get("EventBusName") or "default")
        arn = (
            bus
            if bus.startswith("arn:")
            else f"arn:{_partition(call.region)}:events:{call.region}:{call.account}:event-bus/{bus}"
        )
        context: dict[str, ContextValue] = {}
        if "Source" in entry:
            context["events:source"] = str(entry["Source"])
        if "DetailType" in entry:
            context["events:detail-type"] = str(entry["DetailType"])
        found.append(_requirement(call, "events:PutEvents", arn, context))
    return found


_SECRETS_OPERATIONS = frozenset({"GetSecretValue", "DescribeSecret", "PutSecretValue"})


def _secretsmanager(call: AwsCall, secret_arn: SecretArnResolver | None) -> list[Requirement]:
    if call.operation not in _SECRETS_OPERATIONS:
        raise UnknownOperation(
            f"secretsmanager.{call.operation}: no IAM mapping in tests/harness/iam_policy.py"
        )
    secret_id = str(_param(call, "SecretId"))
    # A full ARN ends in "-" and six random characters; IAM evaluates that full ARN.
    if secret_id.startswith("arn:") and re.search(r":secret:.+-[A-Za-z0-9]{6}$", secret_id):
        arn = secret_id
    elif secret_arn is not None:
        arn = secret_arn(secret_id)
    else:
        raise ValueError(
            f"secretsmanager.{call.operation}: SecretId {secret_id!r} is not a full ARN; pass secret_arn= "
            "(IAM evaluates the full ARN, random suffix included)"
        )
    context: dict[str, ContextValue] = {"secretsmanager:SecretId": secret_id}
    for parameter, key in (
        ("VersionStage", "secretsmanager:VersionStage"),
        ("VersionId", "secretsmanager:VersionId"),
    ):
        if parameter in call.params:
            context[key] = str(call.params[parameter])
    return [_requirement(call, f"secretsmanager:{call.operation}", arn, context)]


_SCHEDULER_OPERATIONS = frozenset({"CreateSchedule", "UpdateSchedule", "DeleteSchedule", "GetSchedule"})


def _scheduler(call: AwsCall) -> list[Requirement]:
    if call.operation not in _SCHEDULER_OPERATIONS:
        raise UnknownOperation(f"scheduler.{call.operation}: no IAM mapping in tests/harness/iam_policy.py")
    group = str(call.params.get("GroupName") or "default")
    arn = (
        f"arn:{_partition(call.region)}:scheduler:{call.region}:{call.account}:schedule/"
        f"{group}/{_param(call, 'Name')}"
    )
    found = [_requirement(call, f"scheduler:{call.operation}", arn)]
    if call.operation in ("CreateSchedule", "UpdateSchedule"):
        role = str(_param(call, "Target")["RoleArn"])
        found.append(
            _requirement(
                call,
                "iam:PassRole",
                role,
                {"iam:PassedToService": "scheduler.amazonaws.com", "iam:AssociatedResourceArn": arn},
            )
        )
    return found


def _sts(call: AwsCall) -> list[Requirement]:
    if call.operation == "GetCallerIdentity":
        return []  # needs no permission
    raise UnknownOperation(f"sts.{call.operation}: no IAM mapping in tests/harness/iam_policy.py")


def _pascal(method: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in method.split("_"))


def required_permissions(
    call: AwsCall,
    *,
    key_arn: KeyArnResolver | None = None,
    secret_arn: SecretArnResolver | None = None,
) -> list[Requirement]:
    """Every IAM authorization AWS performs for ``call``, in order (one per item for batch calls).

    Each requirement's context holds the global keys of a function's TLS request with its role
    (``aws:SecureTransport`` "true", ``aws:PrincipalAccount``, ``aws:PrincipalType``,
    ``aws:RequestedRegion``, ``aws:ViaAWSService``) plus the service keys derived from the parameters.

    * S3: PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload → ``s3:PutObject`` on
      ``arn:aws:s3:::bucket/key``; UploadPartCopy and CopyObject → that plus ``s3:GetObject`` on the
      source; AbortMultipartUpload; GetObject/HeadObject (and a presigned get_object) → ``s3:GetObject``;
      DeleteObject; DeleteObjects → ``s3:DeleteObject`` per key; ListObjects(V2)/HeadBucket →
      ``s3:ListBucket`` on the bucket with ``s3:prefix``/``s3:delimiter``/``s3:max-keys``; ListParts →
      ``s3:ListMultipartUploadParts``; ListMultipartUploads → ``s3:ListBucketMultipartUploads``.
      A VersionId selects the ``...Version`` action. SSE-KMS writes raise (the KMS half is not modelled).
    * DynamoDB: item, query, scan and DescribeTable → ``dynamodb:<Operation>`` on the table
      (``/index/<IndexName>`` for Query/Scan on an index); BatchGetItem/BatchWriteItem → that action on
      each table; TransactWriteItems → each item's own action; TransactGetItems → GetItem per item.
    * SQS: ``sqs:<Operation>`` on the queue named by QueueUrl's last segment (the batch forms check the
      single action); GetQueueUrl on the named queue.
    * KMS: Encrypt, Decrypt, GenerateDataKey(WithoutPlaintext), GenerateMac, VerifyMac, DescribeKey,
      Sign, Verify → ``kms:<Operation>`` on the key ARN, with ``kms:EncryptionContext:<k>`` per entry,
      ``kms:EncryptionContextKeys`` and ``kms:CallerAccount``. A key ARN or bare key id needs nothing
      more; an alias needs ``key_arn`` (alias → key ARN); Decrypt without KeyId reads
      ``call.context["KeyArn"]``.
    * EventBridge PutEvents: ``events:PutEvents`` on each entry's bus (name or ARN; ``default``),
      with ``events:source`` and ``events:detail-type``.
    * Secrets Manager GetSecretValue/DescribeSecret/PutSecretValue on the secret's full ARN: a SecretId
      that is not a full ARN (with its random suffix) needs ``secret_arn``.
    * Scheduler Create/Update/Delete/GetSchedule on ``schedule/<group or default>/<name>``; Create and
      Update add ``iam:PassRole`` on ``Target.RoleArn`` (``iam:PassedToService`` scheduler).
    * STS GetCallerIdentity needs nothing.

    Raises ``UnknownOperation`` for anything else, and ``ValueError`` when the call lacks what its
    requirement needs (a parameter, a resolver).
    """
    presigned = False
    if call.operation in ("GeneratePresignedUrl", "generate_presigned_url"):
        inner = _param(call, "ClientMethod")
        call = AwsCall(
            call.function,
            call.service,
            _pascal(str(inner)),
            dict(call.params.get("Params") or {}),
            call.region,
            call.account,
            call.context,
        )
        presigned = True
    if call.service == "s3":
        return _s3(call, presigned)
    if call.service == "kms":
        return _kms(call, key_arn)
    if call.service == "secretsmanager":
        return _secretsmanager(call, secret_arn)
    handler = _HANDLERS.get(call.service)
    if handler is None:
        raise UnknownOperation(
            f"{call.service}.{call.operation}: no IAM mapping in tests/harness/iam_policy.py"
        )
    return handler(call)


_HANDLERS: dict[str, Callable[[AwsCall], list[Requirement]]] = {
    "dynamodb": _dynamodb,
    "sqs": _sqs,
    "events": _events,
    "scheduler": _scheduler,
    "sts": _sts,
}
