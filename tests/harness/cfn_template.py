"""template.yaml, resolved against local resources: "the template is the environment".

The integration harness creates the template's resources in moto and records what each logical id
is locally (``LocalResources``). ``Template`` then tells, from template.yaml alone:

* each function's environment, as Lambda would hand it over (``function_environment``), its
  memory and timeout;
* the template as CloudFormation sees it after the SAM transform (``expanded``), translated offline
  with ``samtranslator`` (see ``expanded`` for what is stubbed);
* every IAM statement a function's execution role gets (``function_policies``) and the resource
  policies that also judge its calls (``key_policy``, ``bucket_policy_statements``), every intrinsic
  resolved, ready for ``tests.harness.iam_policy.evaluate``.

Nothing here is lenient: an unknown intrinsic, a reference the local resources cannot answer, a
parameter value the template would refuse, all raise ``TemplateError`` (a ``ValueError``) naming
where in the template it happened.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

import yaml

from tests.harness.iam_policy import ORIGIN_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
DEFAULT_REGION = "eu-west-1"
DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_STACK_NAME = "tiktok-archive-local"
SAM_TRANSFORM = "AWS::Serverless-2016-10-31"


class TemplateError(ValueError):
    """The template cannot be resolved as asked: unknown intrinsic, unresolvable reference, bad value."""


class NoValueType:
    """The type of ``NO_VALUE``: what ``Ref: AWS::NoValue`` resolves to before it is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Final = NoValueType()
"""``resolve`` returns this when the whole value is ``AWS::NoValue`` (inside maps and lists the
entry is removed instead)."""


# -- loading -------------------------------------------------------------------------------------


# YAML loader that turns CloudFormation's short tags into their long forms (built with type(): PyYAML
# may have no type stubs here).
_CfnLoader: Any = type("_CfnLoader", (yaml.SafeLoader,), {})


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else "Condition" if suffix == "Condition" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        raise TemplateError(f"unexpected YAML node for !{suffix}")
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_document(text: str) -> dict[str, Any]:
    """A CloudFormation YAML (or JSON) document as a dict, short tags (``!Ref``, ``!Sub``...) in long form."""
    document = yaml.load(text, Loader=_CfnLoader)
    if not isinstance(document, dict):
        raise TemplateError("the template is not a mapping")
    return document


# -- local resources -----------------------------------------------------------------------------


def partition_of(region: str) -> str:
    """The AWS partition of ``region`` (``aws``, ``aws-cn``, ``aws-us-gov``)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


@dataclass(frozen=True)
class LocalResources:
    """What each logical resource id is locally, plus the pseudo parameters.

    ``resources`` maps a logical id to its ``"Ref"`` value and its ``Fn::GetAtt`` attributes, e.g.
    ``{"DownloadsTable": {"Ref": "downloads-abc", "Arn": "arn:aws:dynamodb:...:table/downloads-abc"}}``.
    The ``with_*`` methods build such records the way CloudFormation would for the common types.
    """

    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    stack_name: str = DEFAULT_STACK_NAME

    @property
    def partition(self) -> str:
        return partition_of(self.region)

    @property
    def url_suffix(self) -> str:
        return "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com"

    def ref(self, logical_id: str) -> str:
        """The resource's ``Ref`` value; ``TemplateError`` when the caller gave none."""
        return self.get_att(logical_id, "Ref")

    def get_att(self, logical_id: str, attribute: str) -> str:
        """The resource's attribute (``"Ref"`` for its Ref value); ``TemplateError`` when not given."""
        record = self.resources.get(logical_id)
        if record is None:
            raise TemplateError(
                f"no local resource {logical_id!r} (local resources: {sorted(self.resources) or 'none'})"
            )
        if attribute not in record:
            what = "a Ref value" if attribute == "Ref" else f"attribute {attribute!r}"
            raise TemplateError(f"local resource {logical_id!r} has no {what} (it has {sorted(record)})")
        return record[attribute]

    def pseudo_parameter(self, name: str) -> str | list[str] | NoValueType:
        """``AWS::Region``, ``AWS::AccountId``, ``AWS::Partition``, ``AWS::URLSuffix``, ``AWS::StackName``,
        ``AWS::StackId``, ``AWS::NotificationARNs`` or ``AWS::NoValue``; ``TemplateError`` otherwise."""
        values: dict[str, str | list[str] | NoValueType] = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": self.url_suffix,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (
                f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}:stack/"
                f"{self.stack_name}/00000000-0000-0000-0000-000000000000"
            ),
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        if name not in values:
            raise TemplateError(f"unknown pseudo parameter {name!r}")
        return values[name]

    def with_resource(self, logical_id: str, ref: str, **attributes: str) -> LocalResources:
        """A copy with ``logical_id`` recorded as ``ref`` and ``attributes``."""
        resources = {key: dict(value) for key, value in self.resources.items()}
        resources[logical_id] = {"Ref": ref, **attributes}
        return LocalResources(resources, self.region, self.account_id, self.stack_name)

    def with_bucket(self, logical_id: str, name: str) -> LocalResources:
        """An ``AWS::S3::Bucket``: Ref is the name; Arn, DomainName, RegionalDomainName."""
        return self.with_resource(
            logical_id,
            name,
            Arn=f"arn:{self.partition}:s3:::{name}",
            DomainName=f"{name}.s3.{self.url_suffix}",
            RegionalDomainName=f"{name}.s3.{self.region}.{self.url_suffix}",
        )

    def with_table(self, logical_id: str, name: str) -> LocalResources:
        """An ``AWS::DynamoDB::Table``: Ref is the name; Arn."""
        arn = f"arn:{self.partition}:dynamodb:{self.region}:{self.account_id}:table/{name}"
        return self.with_resource(logical_id, name, Arn=arn)

    def with_queue(self, logical_id: str, url: str) -> LocalResources:
        """An ``AWS::SQS::Queue``: Ref is the URL; Arn, QueueName (the URL's last segment), QueueUrl."""
        name = urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]
        arn = f"arn:{self.partition}:sqs:{self.region}:{self.account_id}:{name}"
        return self.with_resource(logical_id, url, Arn=arn, QueueName=name, QueueUrl=url)

    def with_key(self, logical_id: str, key_id: str) -> LocalResources:
        """An ``AWS::KMS::Key``: Ref is the key id; Arn, KeyId (``key_id`` may also be the key ARN)."""
        if key_id.startswith("arn:"):
            arn, key_id = key_id, key_id.rsplit("/", 1)[-1]
        else:
            arn = f"arn:{self.partition}:kms:{self.region}:{self.account_id}:key/{key_id}"
        return self.with_resource(logical_id, key_id, Arn=arn, KeyId=key_id)

    def with_log_group(self, logical_id: str, name: str) -> LocalResources:
        """An ``AWS::Logs::LogGroup``: Ref is the name; Arn."""
        arn = f"arn:{self.partition}:logs:{self.region}:{self.account_id}:log-group:{name}:*"
        return self.with_resource(logical_id, name, Arn=arn)


# -- resolution ----------------------------------------------------------------------------------

_UNSUPPORTED_INTRINSICS = frozenset(
    {
        "Fn::GetAZs",
        "Fn::ImportValue",
        "Fn::Cidr",
        "Fn::Transform",
        "Fn::Length",
        "Fn::ToJsonString",
        "Fn::ForEach",
    }
)
_CONDITION_FUNCTIONS = frozenset({"Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"})
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_LIST_PARAMETER_TYPES = ("CommaDelimitedList", "List<")


def _is_intrinsic_key(key: str) -> bool:
    return key == "Ref" or key.startswith("Fn::")


def _as_string(value: Any, where: str) -> str:
    """A resolved scalar as CloudFormation would write it into a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise TemplateError(f"{where}: expected a string, got {value!r}")


class _Resolver:
    """Evaluates intrinsics of one document against local resources and parameter values."""

    def __init__(
        self, document: Mapping[str, Any], local: LocalResources, parameters: Mapping[str, str]
    ) -> None:
        self._document = document
        self._local = local
        self._parameters = parameters
        self._specs: Mapping[str, Any] = document.get("Parameters") or {}
        self._resources: Mapping[str, Any] = document.get("Resources") or {}
        self._conditions: Mapping[str, Any] = document.get("Conditions") or {}
        self._condition_values: dict[str, bool] = {}
        self._evaluating: set[str] = set()

    # conditions
    def condition(self, name: str, where: str = "Conditions") -> bool:
        if name in self._condition_values:
            return self._condition_values[name]
        if name not in self._conditions:
            raise TemplateError(f"{where}: unknown condition {name!r}")
        if name in self._evaluating:
            raise TemplateError(f"{where}: condition {name!r} refers to itself")
        self._evaluating.add(name)
        try:
            value = self._condition_expression(self._conditions[name], f"Conditions.{name}")
        finally:
            self._evaluating.discard(name)
        self._condition_values[name] = value
        return value

    def _condition_expression(self, expression: Any, where: str) -> bool:
        if isinstance(expression, Mapping) and len(expression) == 1 and "Condition" in expression:
            return self.condition(str(expression["Condition"]), where)
        value = self.resolve(expression, where)
        if not isinstance(value, bool):
            raise TemplateError(
                f"{where}: a condition must be Fn::Equals/Not/And/Or or Condition, not {expression!r}"
            )
        return value

    # values
    def resolve(self, value: Any, where: str) -> Any:
        if isinstance(value, Mapping):
            intrinsic = [key for key in value if _is_intrinsic_key(str(key))]
            if intrinsic:
                if len(value) != 1:
                    raise TemplateError(f"{where}: {intrinsic[0]} must be the only key of its map")
                key = str(intrinsic[0])
                return self._intrinsic(key, value[key], f"{where}.{key}")
            resolved: dict[str, Any] = {}
            for key, item in value.items():
                result = self.resolve(item, f"{where}.{key}")
                if result is not NO_VALUE:
                    resolved[str(key)] = result
            return resolved
        if isinstance(value, list):
            items = [self.resolve(item, f"{where}[{index}]") for index, item in enumerate(value)]
            return [item for item in items if item is not NO_VALUE]
        return value

    def _intrinsic(self, name: str, args: Any, where: str) -> Any:
        if name == "Ref":
            return self._ref(self._string(args, where), where)
        if name == "Fn::GetAtt":
            return self._get_att(args, where)
        if name == "Fn::Sub":
            return self._sub(args, where)
        if name == "Fn::If":
            if not isinstance(args, list) or len(args) != 3:
                raise TemplateError(f"{where}: Fn::If takes [condition, value if true, value if false]")
            chosen = args[1] if self.condition(self._string(args[0], where), where) else args[2]
            return self.resolve(chosen, where)
        if name == "Fn::Join":
            if not isinstance(args, list) or len(args) != 2:
                raise TemplateError(f"{where}: Fn::Join takes [delimiter, list]")
            items = self.resolve(args[1], where)
            if not isinstance(items, list):
                raise TemplateError(f"{where}: Fn::Join needs a list, got {items!r}")
            return self._string(args[0], where).join(_as_string(item, where) for item in items)
        if name == "Fn::Select":
            if not isinstance(args, list) or len(args) != 2:
                raise TemplateError(f"{where}: Fn::Select takes [index, list]")
            index_text = _as_string(self.resolve(args[0], where), where)
            items = self.resolve(args[1], where)
            if not index_text.isdigit() or not isinstance(items, list) or int(index_text) >= len(items):
                raise TemplateError(f"{where}: Fn::Select index {index_text!r} is not within {items!r}")
            return items[int(index_text)]
        if name == "Fn::Split":
            if not isinstance(args, list) or len(args) != 2:
                raise TemplateError(f"{where}: Fn::Split takes [delimiter, string]")
            return self._string(args[1], where).split(self._string(args[0], where))
        if name == "Fn::Base64":
            return base64.b64encode(self._string(args, where).encode()).decode()
        if name == "Fn::FindInMap":
            return self._find_in_map(args, where)
        if name == "Fn::Equals":
            if not isinstance(args, list) or len(args) != 2:
                raise TemplateError(f"{where}: Fn::Equals takes two values")
            left, right = (self._comparable(self.resolve(arg, where), where) for arg in args)
            return left == right
        if name == "Fn::Not":
            if not isinstance(args, list) or len(args) != 1:
                raise TemplateError(f"{where}: Fn::Not takes one condition")
            return not self._condition_expression(args[0], where)
        if name in ("Fn::And", "Fn::Or"):
            if not isinstance(args, list) or not 2 <= len(args) <= 10:
                raise TemplateError(f"{where}: {name} takes 2 to 10 conditions")
            values = [self._condition_expression(arg, f"{where}[{i}]") for i, arg in enumerate(args)]
            return all(values) if name == "Fn::And" else any(values)
        if name in _UNSUPPORTED_INTRINSICS:
            raise TemplateError(f"{where}: {name} is not supported by the local harness")
        raise TemplateError(f"{where}: unknown intrinsic function {name!r}")

    def _string(self, value: Any, where: str) -> str:
        return _as_string(self.resolve(value, where), where)

    def _comparable(self, value: Any, where: str) -> Any:
        if isinstance(value, list):
            return [_as_string(item, where) for item in value]
        return _as_string(value, where)

    def _ref(self, name: str, where: str) -> Any:
        if name in self._specs:
            if name not in self._parameters:
                raise TemplateError(f"{where}: Ref {name}: no value for this parameter")
            value = self._parameters[name]
            kind = str(self._specs[name].get("Type", "String"))
            if kind.startswith(_LIST_PARAMETER_TYPES):
                return value.split(",") if value else []
            return value
        if name.startswith("AWS::"):
            return self._local.pseudo_parameter(name)
        if name in self._local.resources:
            return self._local.ref(name)
        if name in self._resources:
            kind = self._resources[name].get("Type", "?")
            raise TemplateError(f"{where}: Ref {name}: the local resources give no value for this {kind}")
        raise TemplateError(f"{where}: Ref {name}: no such parameter, pseudo parameter or resource")

    def _get_att(self, args: Any, where: str) -> str:
        if isinstance(args, str):
            args = args.split(".", 1)
        if not isinstance(args, list) or len(args) != 2 or not isinstance(args[0], str):
            raise TemplateError(f"{where}: Fn::GetAtt takes [resource, attribute]")
        resource, attribute = args[0], self._string(args[1], where)
        if resource not in self._local.resources and resource not in self._resources:
            raise TemplateError(f"{where}: Fn::GetAtt {resource}.{attribute}: no such resource")
        try:
            return self._local.get_att(resource, attribute)
        except TemplateError as error:
            raise TemplateError(f"{where}: Fn::GetAtt {resource}.{attribute}: {error}") from None

    def _sub(self, args: Any, where: str) -> str:
        variables: dict[str, Any] = {}
        if isinstance(args, str):
            text = args
        elif (
            isinstance(args, list)
            and len(args) == 2
            and isinstance(args[0], str)
            and isinstance(args[1], Mapping)
        ):
            text = args[0]
            variables = {str(k): self.resolve(v, f"{where}.{k}") for k, v in args[1].items()}
        else:
            raise TemplateError(f"{where}: Fn::Sub takes a string or [string, {{variables}}]")

        def substitute(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            name = inner.strip()
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                value = self._get_att(name.split(".", 1), where)
            else:
                value = self._ref(name, where)
            return _as_string(value, f"{where} ${{{name}}}")

        return _SUB_VARIABLE.sub(substitute, text)

    def _find_in_map(self, args: Any, where: str) -> Any:
        if not isinstance(args, list) or len(args) != 3:
            raise TemplateError(f"{where}: Fn::FindInMap takes [map, top-level key, second-level key]")
        names = [self._string(arg, where) for arg in args]
        try:
            return self.resolve(self._document["Mappings"][names[0]][names[1]][names[2]], where)
        except KeyError:
            raise TemplateError(f"{where}: Fn::FindInMap {names}: no such entry") from None


# -- AWS managed policies ------------------------------------------------------------------------

_LOGS_WRITE = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
_XRAY_WRITE = [
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "xray:GetSamplingStatisticSummaries",
]
AWS_MANAGED_POLICIES: Final[Mapping[str, list[dict[str, Any]]]] = {
    "service-role/AWSLambdaBasicExecutionRole": [{"Effect": "Allow", "Action": _LOGS_WRITE, "Resource": "*"}],
    "AWSXrayWriteOnlyAccess": [{"Effect": "Allow", "Action": _XRAY_WRITE, "Resource": "*"}],
    "AWSXRayDaemonWriteAccess": [{"Effect": "Allow", "Action": _XRAY_WRITE, "Resource": "*"}],
    "service-role/AWSLambdaSQSQueueExecutionRole": [
        {
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", *_LOGS_WRITE],
            "Resource": "*",
        }
    ],
}
"""Statements of the AWS managed policies SAM attaches to this template's roles, by the path after
``arn:<partition>:iam::aws:policy/``. A static snapshot of the documents AWS publishes (default
versions as of 2025): no IAM call is made. A policy not listed here raises ``TemplateError``."""

_AWS_MANAGED_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::aws:policy/(.+)$")


def _managed_policy_names(partition: str) -> dict[str, str]:
    """Name → ARN of the policies in ``AWS_MANAGED_POLICIES``: what SAM's ManagedPolicyLoader returns."""
    return {
        path.rsplit("/", 1)[-1]: f"arn:{partition}:iam::aws:policy/{path}" for path in AWS_MANAGED_POLICIES
    }


def _statements_of(document: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(document, str):
        document = json.loads(document)
    if not isinstance(document, Mapping) or "Statement" not in document:
        raise TemplateError(f"{where}: not a policy document with a Statement")
    statements = document["Statement"]
    statements = statements if isinstance(statements, list) else [statements]
    if not all(isinstance(statement, Mapping) for statement in statements):
        raise TemplateError(f"{where}: every Statement must be a map")
    return [dict(statement) for statement in statements]


def _with_origin(statements: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [{**statement, ORIGIN_KEY: {"kind": kind, "name": name}} for statement in statements]


def _refers_to(value: Any, logical_id: str) -> bool:
    return isinstance(value, Mapping) and dict(value) == {"Ref": logical_id}


# -- the template --------------------------------------------------------------------------------

# Names Lambda sets itself; a template that sets one is refused at deploy time.
_LAMBDA_RESERVED = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
_SERVERLESS_FUNCTION = "AWS::Serverless::Function"


@dataclass(frozen=True)
class SqsEventSource:
    """A function's ``Type: SQS`` event: Lambda polls ``queue`` (a logical id) for ``function``."""

    function: str
    queue: str
    batch_size: int
    reports_batch_item_failures: bool


# SAM's transform wants S3 URIs for code; a local path is replaced, as `sam validate` does.
_LOCAL_URI_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::Api": "DefinitionUri",
    "AWS::Serverless::HttpApi": "DefinitionUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
}
_PLACEHOLDER_S3_URI = "s3://local-harness-placeholder/code.zip"


def _parameter_text(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float | list):
        raise TemplateError(f"parameter {name}: {value!r} is not a string or number")
    if isinstance(value, list):
        return ",".join(_as_string(item, f"parameter {name}") for item in value)
    return _as_string(value, f"parameter {name}")


def _check_parameter(name: str, spec: Mapping[str, Any], value: str) -> None:
    kind = str(spec.get("Type", "String"))
    if kind.startswith("AWS::SSM::Parameter::"):
        raise TemplateError(f"parameter {name}: type {kind} (an SSM lookup) is not supported locally")
    is_list = kind.startswith(_LIST_PARAMETER_TYPES)
    items = value.split(",") if is_list else [value]
    numeric = kind in ("Number", "List<Number>")
    for item in items:
        if numeric:
            try:
                number = float(item)
            except ValueError:
                raise TemplateError(f"parameter {name}: {item!r} is not a number") from None
            if "MinValue" in spec and number < float(spec["MinValue"]):
                raise TemplateError(f"parameter {name}: {item} is below MinValue {spec['MinValue']}")
            if "MaxValue" in spec and number > float(spec["MaxValue"]):
                raise TemplateError(f"parameter {name}: {item} is above MaxValue {spec['MaxValue']}")
        if "AllowedValues" in spec:
            allowed = [_as_string(option, f"parameter {name}") for option in spec["AllowedValues"]]
            same_number = numeric and any(float(item) == float(option) for option in allowed)
            if item not in allowed and not same_number:
                raise TemplateError(f"parameter {name}: {item!r} is not one of AllowedValues {allowed}")
        if "AllowedPattern" in spec and re.fullmatch(str(spec["AllowedPattern"]), item) is None:
            raise TemplateError(
                f"parameter {name}: {item!r} does not match AllowedPattern {spec['AllowedPattern']!r}"
            )
        if "MinLength" in spec and len(item) < int(spec["MinLength"]):
            raise TemplateError(f"parameter {name}: {item!r} is shorter than MinLength {spec['MinLength']}")
        if "MaxLength" in spec and len(item) > int(spec["MaxLength"]):
            raise TemplateError(f"parameter {name}: {item!r} is longer than MaxLength {spec['MaxLength']}")


class Template:
    """A SAM/CloudFormation template and what it gives each function, resolved locally.

    Methods taking ``parameters`` expect what ``parameters()`` returns (validated values; they are not
    checked again); ``None`` stands for the defaults.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document: dict[str, Any] = copy.deepcopy(dict(document))
        self._expanded: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}

    @classmethod
    def load(cls, path: Path | str = TEMPLATE_PATH) -> Template:
        """The template at ``path`` (template.yaml of this repository by default)."""
        return cls(load_document(Path(path).read_text(encoding="utf-8")))

    @property
    def document(self) -> dict[str, Any]:
        """A copy of the template as loaded (intrinsics in long form)."""
        return copy.deepcopy(self._document)

    # parameters and conditions
    def parameters(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every declared parameter's value as a string: its Default unless overridden.

        Raises ``TemplateError`` (a ``ValueError``) naming the parameter when an override names an
        undeclared parameter, when a value breaks Type (Number), AllowedPattern, AllowedValues,
        MinValue/MaxValue or MinLength/MaxLength, or when a parameter has neither Default nor override.
        """
        specs: Mapping[str, Any] = self._document.get("Parameters") or {}
        given = dict(overrides or {})
        unknown = sorted(set(given) - set(specs))
        if unknown:
            raise TemplateError(
                f"unknown template parameter(s) {unknown}; the template declares {sorted(specs)}"
            )
        values: dict[str, str] = {}
        for name, spec in specs.items():
            if name in given:
                value = _parameter_text(name, given[name])
            elif "Default" in spec:
                value = _parameter_text(name, spec["Default"])
            else:
                raise TemplateError(f"parameter {name} has no Default: give it in overrides")
            _check_parameter(name, spec, value)
            values[name] = value
        return values

    def _values(self, parameters: Mapping[str, str] | None) -> Mapping[str, str]:
        return self.parameters() if parameters is None else parameters

    def _resolver(
        self,
        local: LocalResources | None,
        parameters: Mapping[str, str] | None,
        document: Mapping[str, Any] | None = None,
    ) -> _Resolver:
        return _Resolver(
            self._document if document is None else document,
            local or LocalResources(),
            self._values(parameters),
        )

    def conditions(
        self, parameters: Mapping[str, str] | None = None, local: LocalResources | None = None
    ) -> dict[str, bool]:
        """Every condition of the Conditions section, evaluated for ``parameters`` (defaults if None);
        pseudo parameters come from ``local`` (a default ``LocalResources`` if None)."""
        resolver = self._resolver(local, parameters)
        return {name: resolver.condition(name) for name in self._document.get("Conditions") or {}}

    def resolve(self, value: Any, local: LocalResources, parameters: Mapping[str, str] | None = None) -> Any:
        """``value`` with every intrinsic evaluated: Ref (parameters, pseudo parameters, local
        resources), Fn::GetAtt, Fn::Sub (both forms, ``${!Literal}`` kept literal), Fn::If (with
        conditions; ``AWS::NoValue`` entries removed from maps and lists), Fn::Join, Fn::Select,
        Fn::Split, Fn::Base64, Fn::FindInMap and the condition functions (Fn::Equals/Not/And/Or,
        which yield booleans). Returns ``NO_VALUE`` when ``value`` itself is ``AWS::NoValue``.

        Raises ``TemplateError`` for an unknown or unsupported intrinsic and for a reference neither
        the template nor ``local`` can answer; nothing unresolved is passed through.
        """
        return self._resolver(local, parameters).resolve(value, "value")

    # functions
    def _resource(self, logical_id: str, kind: str) -> Mapping[str, Any]:
        resources: Mapping[str, Any] = self._document.get("Resources") or {}
        resource: Mapping[str, Any] | None = resources.get(logical_id)
        if resource is None or resource.get("Type") != kind:
            found = resource.get("Type") if resource else "nothing"
            raise TemplateError(f"{logical_id} is not a {kind} of the template (it is {found})")
        return resource

    def _function_setting(self, name: str, setting: str) -> Any:
        properties = self._resource(name, _SERVERLESS_FUNCTION).get("Properties") or {}
        if setting in properties:
            return properties[setting]
        return ((self._document.get("Globals") or {}).get("Function") or {}).get(setting)

    def functions(self, parameters: Mapping[str, str] | None = None) -> list[str]:
        """Logical ids of the AWS::Serverless::Function resources that exist for ``parameters``
        (defaults if None; a resource whose Condition is false does not exist), in template order."""
        resolver = self._resolver(None, parameters)
        return [
            logical_id
            for logical_id, resource in (self._document.get("Resources") or {}).items()
            if resource.get("Type") == _SERVERLESS_FUNCTION
            and ("Condition" not in resource or resolver.condition(str(resource["Condition"])))
        ]

    def _integer_setting(
        self,
        name: str,
        setting: str,
        parameters: Mapping[str, str] | None,
        default: int,
        bounds: tuple[int, int],
    ) -> int:
        raw = self._function_setting(name, setting)
        if raw is None:
            return default
        value = self._resolver(None, parameters).resolve(raw, f"{name}.{setting}")
        text = _as_string(value, f"{name}.{setting}")
        if not text.isdigit() or not bounds[0] <= int(text) <= bounds[1]:
            raise TemplateError(f"{name}.{setting}: {text!r} is not an integer in {bounds}")
        return int(text)

    def function_timeout(self, name: str, parameters: Mapping[str, str] | None = None) -> int:
        """The function's Timeout in seconds: its own, else Globals', else Lambda's default of 3."""
        return self._integer_setting(name, "Timeout", parameters, 3, (1, 900))

    def function_memory(self, name: str, parameters: Mapping[str, str] | None = None) -> int:
        """The function's MemorySize in MB: its own, else Globals', else Lambda's default of 128."""
        return self._integer_setting(name, "MemorySize", parameters, 128, (128, 10240))

    def sqs_event_sources(self, parameters: Mapping[str, str] | None = None) -> list[SqsEventSource]:
        """Every ``Type: SQS`` event of the functions that exist for ``parameters``, in template order.

        ``Queue`` must be ``!GetAtt <queue>.Arn`` of a queue of the template; ``BatchSize`` is resolved
        (SAM's default: 10); ``ReportBatchItemFailures`` says whether the function answers
        ``batchItemFailures`` (else a failed invocation fails the whole batch).
        """
        resolver = self._resolver(None, parameters)
        found = []
        for function in self.functions(parameters):
            properties = self._resource(function, _SERVERLESS_FUNCTION).get("Properties") or {}
            for event_name, event in (properties.get("Events") or {}).items():
                if event.get("Type") != "SQS":
                    continue
                where = f"{function}.Events.{event_name}"
                spec = event.get("Properties") or {}
                queue = spec.get("Queue")
                if not (isinstance(queue, Mapping) and list(queue) == ["Fn::GetAtt"]):
                    raise TemplateError(f"{where}.Queue: expected !GetAtt <queue>.Arn, got {queue!r}")
                logical_id, attribute = queue["Fn::GetAtt"]
                if attribute != "Arn":
                    raise TemplateError(f"{where}.Queue: expected the queue's Arn, got {attribute!r}")
                self._resource(logical_id, "AWS::SQS::Queue")
                size = _as_string(resolver.resolve(spec.get("BatchSize", 10), where), where)
                if not size.isdigit() or not 1 <= int(size) <= 10_000:
                    raise TemplateError(f"{where}.BatchSize: {size!r} is not an integer in (1, 10000)")
                reports = "ReportBatchItemFailures" in (spec.get("FunctionResponseTypes") or [])
                found.append(SqsEventSource(function, logical_id, int(size), reports))
        return found

    def function_environment(
        self, name: str, local: LocalResources, parameters: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The environment Lambda gives the function, every value a string.

        Globals.Function.Environment.Variables merged with the function's own (the function's win,
        key by key, as SAM merges them), then resolved; a variable resolving to ``AWS::NoValue`` is
        absent. Added as Lambda adds them: ``AWS_LAMBDA_FUNCTION_NAME`` (FunctionName, else the
        logical id), ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, ``AWS_LAMBDA_FUNCTION_VERSION`` ($LATEST),
        ``AWS_REGION`` and ``AWS_DEFAULT_REGION`` (``local.region``), ``AWS_EXECUTION_ENV``
        (``AWS_Lambda_<runtime>``) and ``_HANDLER``. Not added: credentials, the runtime API, log
        group/stream names, ``LAMBDA_TASK_ROOT``, X-Ray daemon and trace ids, ``TZ`` (none is a template
        fact), and no ``AWS_LAMBDA_FUNCTION_TIMEOUT`` (Lambda sets none).

        Raises ``TemplateError`` when a value is not a string after resolution (a map or list), when
        a reference cannot be resolved, or when the template sets a name Lambda reserves.
        """
        resolver = self._resolver(local, parameters)
        globals_environment = ((self._document.get("Globals") or {}).get("Function") or {}).get(
            "Environment"
        ) or {}
        own_environment = (self._resource(name, _SERVERLESS_FUNCTION).get("Properties") or {}).get(
            "Environment"
        ) or {}
        merged: dict[str, Any] = {}
        for where, section in (("Globals.Function", globals_environment), (name, own_environment)):
            variables = section.get("Variables") or {}
            if not isinstance(variables, Mapping) or any(_is_intrinsic_key(str(k)) for k in variables):
                raise TemplateError(f"{where}.Environment.Variables must be a literal map to be merged")
            merged.update(variables)
        environment: dict[str, str] = {}
        for key, raw in merged.items():
            where = f"{name}.Environment.Variables.{key}"
            if key in _LAMBDA_RESERVED:
                raise TemplateError(f"{where}: {key} is reserved by Lambda")
            value = resolver.resolve(raw, where)
            if value is NO_VALUE:
                continue
            environment[str(key)] = _as_string(value, where)
        function_name = self._function_setting(name, "FunctionName")
        runtime = self._function_setting(name, "Runtime")
        handler = self._function_setting(name, "Handler")
        environment["AWS_LAMBDA_FUNCTION_NAME"] = (
            name
            if function_name is None
            else _as_string(resolver.resolve(function_name, f"{name}.FunctionName"), name)
        )
        environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(self.function_memory(name, parameters))
        environment["AWS_LAMBDA_FUNCTION_VERSION"] = "$LATEST"
        environment["AWS_REGION"] = local.region
        environment["AWS_DEFAULT_REGION"] = local.region
        if runtime is not None:
            environment["AWS_EXECUTION_ENV"] = (
                f"AWS_Lambda_{_as_string(resolver.resolve(runtime, name), name)}"
            )
        if handler is not None:
            environment["_HANDLER"] = _as_string(resolver.resolve(handler, f"{name}.Handler"), name)
        return environment

    # the SAM transform
    def expanded(
        self, parameters: Mapping[str, str] | None = None, *, region: str = DEFAULT_REGION
    ) -> dict[str, Any]:
        """The template as CloudFormation sees it after the SAM transform, intrinsics left in place.

        Translated offline with samtranslator's ``Translator`` (what ``transform()`` wraps), given:

        * a boto3 ``Session(region_name=region)`` built locally: it only names the region and
          partition (``transform()`` would build one from the environment, needing
          ``AWS_DEFAULT_REGION``); ``ArnGenerator.BOTO_SESSION_REGION_NAME``, which samtranslator sets
          globally, is restored afterwards;
        * as the managed-policy map, the names of ``AWS_MANAGED_POLICIES`` (in place of
          ``ManagedPolicyLoader``'s IAM ListPolicies call); samtranslator also has a bundled map, and
          a name found in neither raises ``TemplateError`` instead of calling IAM;
        * local code paths (CodeUri, ContentUri, DefinitionUri) replaced by a placeholder
          ``s3://`` URI, as ``sam validate`` does.

        Cached per parameter values and region; each call returns a fresh copy.
        """
        values = self._values(parameters)
        cache_key = (("", region), *sorted(values.items()))
        if cache_key not in self._expanded:
            self._expanded[cache_key] = self._translate(values, region)
        return copy.deepcopy(self._expanded[cache_key])

    def _translate(self, parameters: Mapping[str, str], region: str) -> dict[str, Any]:
        # Imported here: only expanded() needs them, and samtranslator is slow to import.
        import boto3  # noqa: PLC0415
        from samtranslator.parser.parser import Parser  # noqa: PLC0415
        from samtranslator.translator.arn_generator import ArnGenerator  # noqa: PLC0415
        from samtranslator.translator.translator import Translator  # noqa: PLC0415
        from samtranslator.utils.py27hash_fix import (  # noqa: PLC0415
            to_py27_compatible_template,
            undo_mark_unicode_str_in_template,
        )

        transform = self._document.get("Transform")
        transforms = transform if isinstance(transform, list) else [transform]
        if transforms != [SAM_TRANSFORM]:
            raise TemplateError(
                f"Transform must be exactly {SAM_TRANSFORM!r} to expand locally, not {transform!r}"
            )
        document = copy.deepcopy(self._document)
        code_globals = (document.get("Globals") or {}).get("Function") or {}
        if isinstance(code_globals.get("CodeUri"), str) and not code_globals["CodeUri"].startswith("s3://"):
            code_globals["CodeUri"] = _PLACEHOLDER_S3_URI
        for resource in (document.get("Resources") or {}).values():
            uri_property = _LOCAL_URI_PROPERTIES.get(resource.get("Type", ""))
            properties = resource.get("Properties") or {}
            uri = properties.get(uri_property) if uri_property else None
            if isinstance(uri, str) and not uri.startswith("s3://"):
                properties[uri_property] = _PLACEHOLDER_S3_URI

        def no_iam_lookup() -> dict[str, str]:
            raise TemplateError(
                "the SAM transform asked IAM for an AWS managed policy that the harness's static map "
                "(tests/harness/cfn_template.py AWS_MANAGED_POLICIES) and samtranslator's bundled map lack"
            )

        parameter_values: dict[str, Any] = dict(parameters)
        saved_region = ArnGenerator.BOTO_SESSION_REGION_NAME
        try:
            translator = Translator(
                _managed_policy_names(partition_of(region)),
                Parser(),
                boto_session=boto3.session.Session(region_name=region),
            )
            to_py27_compatible_template(document, parameter_values)
            translated = translator.translate(
                document, parameter_values, get_managed_policy_map=no_iam_lookup
            )
            result: dict[str, Any] = undo_mark_unicode_str_in_template(translated)
        finally:
            ArnGenerator.BOTO_SESSION_REGION_NAME = saved_region
        plain: dict[str, Any] = json.loads(json.dumps(result))
        return plain

    # permissions
    def function_policies(
        self, name: str, local: LocalResources, parameters: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every IAM statement the function's execution role gets in the expanded template, resolved.

        The role is found through the function's ``Role`` (``Fn::GetAtt [<Role>, Arn]``). Collected:
        the role's inline ``Policies``; the customer-managed ``AWS::IAM::ManagedPolicy`` resources it
        lists by ``Ref`` in ``ManagedPolicyArns`` or that list the role in their ``Roles``;
        ``AWS::IAM::Policy``/``AWS::IAM::RolePolicy`` resources attached to it; and AWS managed policies
        (by ARN) with their statements from ``AWS_MANAGED_POLICIES``. Each statement carries
        ``ORIGIN_KEY``: ``{"kind": "inline" | "customer-managed" | "aws-managed", "name": ...}``.

        Raises ``TemplateError`` for a role outside the template, a permissions boundary (not
        modelled), an AWS managed policy not in the static map, or anything unresolvable.
        """
        values = self._values(parameters)
        document = self.expanded(values, region=local.region)
        resources: Mapping[str, Any] = document["Resources"]
        resolver = self._resolver(local, values, document)
        function = resources.get(name)
        if function is None or function.get("Type") != "AWS::Lambda::Function":
            raise TemplateError(f"{name} is no function of the expanded template")
        role_ref = (function.get("Properties") or {}).get("Role")
        getatt = role_ref.get("Fn::GetAtt") if isinstance(role_ref, Mapping) else None
        if not (
            isinstance(getatt, list) and len(getatt) == 2 and getatt[1] == "Arn" and getatt[0] in resources
        ):
            raise TemplateError(f"{name}.Role {role_ref!r} is not a role of the template")
        role_id = str(getatt[0])
        role = resources[role_id]
        if role.get("Type") != "AWS::IAM::Role":
            raise TemplateError(f"{name}.Role names {role_id}, a {role.get('Type')}, not an AWS::IAM::Role")
        properties = role.get("Properties") or {}
        if "PermissionsBoundary" in properties:
            raise TemplateError(f"{role_id}: permissions boundaries are not modelled by the harness")

        statements: list[dict[str, Any]] = []
        for index, policy in enumerate(
            resolver.resolve(properties.get("Policies") or [], f"{role_id}.Policies")
        ):
            where = f"{role_id}.Policies[{index}]"
            found = _statements_of(policy.get("PolicyDocument"), where)
            statements += _with_origin(found, "inline", f"{role_id}/{policy.get('PolicyName', index)}")
        customer_managed: list[str] = []
        for index, entry in enumerate(properties.get("ManagedPolicyArns") or []):
            where = f"{role_id}.ManagedPolicyArns[{index}]"
            if isinstance(entry, Mapping) and set(entry) == {"Ref"} and entry["Ref"] in resources:
                target = resources[entry["Ref"]]
                if target.get("Type") != "AWS::IAM::ManagedPolicy":
                    raise TemplateError(
                        f"{where}: Ref {entry['Ref']} is a {target.get('Type')}, not a ManagedPolicy"
                    )
                customer_managed.append(str(entry["Ref"]))
                continue
            resolved = resolver.resolve(entry, where)
            if resolved is NO_VALUE:
                continue
            arn = _as_string(resolved, where)
            match = _AWS_MANAGED_ARN.match(arn)
            if match is None or match.group(2) not in AWS_MANAGED_POLICIES:
                raise TemplateError(
                    f"{where}: {arn!r} is not an AWS managed policy the harness knows "
                    f"({sorted(AWS_MANAGED_POLICIES)}); add its statements to AWS_MANAGED_POLICIES"
                )
            statements += _with_origin(
                copy.deepcopy(list(AWS_MANAGED_POLICIES[match.group(2)])), "aws-managed", arn
            )
        for logical_id, resource in resources.items():
            kind = resource.get("Type")
            attached = resource.get("Properties") or {}
            if "Condition" in resource and not resolver.condition(str(resource["Condition"])):
                continue
            roles = attached.get("Roles") or []
            names_role = any(_refers_to(entry, role_id) for entry in roles) or _refers_to(
                attached.get("RoleName"), role_id
            )
            if kind == "AWS::IAM::ManagedPolicy" and names_role and logical_id not in customer_managed:
                customer_managed.append(logical_id)
            elif kind in ("AWS::IAM::Policy", "AWS::IAM::RolePolicy") and names_role:
                document_value = resolver.resolve(
                    attached.get("PolicyDocument"), f"{logical_id}.PolicyDocument"
                )
                found = _statements_of(document_value, f"{logical_id}.PolicyDocument")
                statements += _with_origin(found, "inline", logical_id)
        for logical_id in customer_managed:
            where = f"{logical_id}.Properties.PolicyDocument"
            policy_document = (resources[logical_id].get("Properties") or {}).get("PolicyDocument")
            found = _statements_of(resolver.resolve(policy_document, where), where)
            statements += _with_origin(found, "customer-managed", logical_id)
        return statements

    def key_policy(
        self, key_logical_id: str, local: LocalResources, parameters: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The KeyPolicy statements of the AWS::KMS::Key, resolved, origin ``key-policy``.

        A key without KeyPolicy gets CloudFormation's default: the account root may do ``kms:*``
        (delegation to IAM).
        """
        properties = self._resource(key_logical_id, "AWS::KMS::Key").get("Properties") or {}
        if "KeyPolicy" not in properties:
            statements: list[dict[str, Any]] = [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:{local.partition}:iam::{local.account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ]
        else:
            where = f"{key_logical_id}.Properties.KeyPolicy"
            statements = _statements_of(
                self._resolver(local, parameters).resolve(properties["KeyPolicy"], where), where
            )
        return _with_origin(statements, "key-policy", key_logical_id)

    def bucket_policy_statements(
        self, bucket_logical_id: str, local: LocalResources, parameters: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The statements of every AWS::S3::BucketPolicy of the bucket (``Bucket: !Ref <bucket>``, or
        resolving to its local name), resolved, origin ``bucket-policy``; empty if it has none."""
        self._resource(bucket_logical_id, "AWS::S3::Bucket")
        resolver = self._resolver(local, parameters)
        statements: list[dict[str, Any]] = []
        for logical_id, resource in (self._document.get("Resources") or {}).items():
            if resource.get("Type") != "AWS::S3::BucketPolicy":
                continue
            if "Condition" in resource and not resolver.condition(str(resource["Condition"])):
                continue
            properties = resource.get("Properties") or {}
            bucket = properties.get("Bucket")
            if not _refers_to(bucket, bucket_logical_id) and resolver.resolve(
                bucket, f"{logical_id}.Bucket"
            ) != local.ref(bucket_logical_id):
                continue
            where = f"{logical_id}.Properties.PolicyDocument"
            found = _statements_of(resolver.resolve(properties.get("PolicyDocument"), where), where)
            statements += _with_origin(found, "bucket-policy", logical_id)
        return statements
