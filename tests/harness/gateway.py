"""API Gateway as template.yaml configures it: routes, their authorization, the resource policy, SigV4.

For the tests and ``make serve``, what API Gateway does before a function runs:

* **Routes** come from the SAM-expanded template (``Template.expanded``): the REST API's ``Body`` (its
  OpenAPI definition) lists each method and path, the function its ``aws_proxy`` integration invokes,
  and its ``security`` (``AWS_IAM`` or ``NONE``). The stage is the expanded ``AWS::ApiGateway::Stage``'s.
  A method and path the API does not have is answered ``403 {"message":"Missing Authentication Token"}``,
  as API Gateway answers it.
* **Authorization** of an ``AWS_IAM`` route: no identity is ``403 Missing Authentication Token``; a caller
  is judged by the API's resource policy together with the caller's own identity policy, with
  :func:`tests.harness.iam_policy.evaluate` (same account: an explicit Deny anywhere refuses; an Allow in
  either grants, a resource-policy Allow naming only the account root delegates to the identity policy).
  The resource policy is template.yaml's ``Auth.ResourcePolicy.CustomStatements`` resolved with the
  harness's own resolver (``Template.resolve``, which gives a ``CommaDelimitedList`` as a list — the
  expanded template cannot be used: samtranslator writes such a parameter's value in as one string), and
  ``execute-api:/…`` resources expanded to ``arn:aws:execute-api:<region>:<account>:<api id>/…`` as API
  Gateway expands them. A refusal is API Gateway's ``403 {"Message":"User: <arn> is not authorized to
  perform: execute-api:Invoke on resource: <arn>[ with an explicit deny]"}``. ``NONE`` routes are judged
  by the resource policy alone, for an anonymous caller.
* **SigV4** (:class:`SigV4Verifier`, for ``make serve``'s HTTP front): a request's ``Authorization``
  header is verified against local credentials (access key id → secret and the ARN it stands for), the
  signature recomputed with botocore's own ``SigV4Auth`` pieces over the request's ``SignedHeaders`` and
  ``X-Amz-Date``, and API Gateway's answers given for what it refuses.
* **The event** (:meth:`Gateway.event`): the REST proxy event the function gets — path and query
  parameters, headers, the body (base64 when it is not UTF-8 text), ``requestContext`` with the stage and
  the caller's ``identity`` (``userArn``, ``accountId``, ``caller``, ``user``, ``accessKey``).

For the shared fixtures, :meth:`Gateway.refusal` takes an already-built proxy event (and the caller, by
default its ``requestContext.identity.userArn``) and returns ``None`` when API Gateway would pass it on,
or API Gateway's own answer, shaped like a Lambda proxy answer.

Not modelled: throttling (the stage's MethodSettings), request validators, binary media types (any
non-UTF-8 body is base64-encoded), presigned (query-string) SigV4, session tokens (the local credentials
have none; a request carrying one is refused as an invalid token), cross-account callers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from tests.harness.cfn_template import LocalResources, Template, TemplateError
from tests.harness.iam_policy import Requirement, evaluate

API: Final = "DownloadsApi"
DEFAULT_API_ID: Final = "abc123"  # the sample events' API id
INVOKE: Final = "execute-api:Invoke"
_SESSION_ARN = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]+)/([\w+=,.@-]+)$")
_IAM_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):(user|role)/(.+)$")
_FUNCTION_ARN = re.compile(r"\$\{(\w+)\.Arn\}")
_SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_SKEW = timedelta(minutes=5)  # how far X-Amz-Date may be from API Gateway's clock


# -- answers ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GatewayAnswer:
    """An answer API Gateway gives itself (the function never runs)."""

    status: int
    body: Mapping[str, str]
    error_type: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "x-amzn-ErrorType": self.error_type}

    @property
    def data(self) -> bytes:
        return json.dumps(dict(self.body), separators=(",", ":")).encode()

    def proxy(self) -> dict[str, Any]:
        """The answer shaped like a Lambda proxy answer (``statusCode``, ``headers``, ``body``)."""
        return {
            "statusCode": self.status,
            "headers": self.headers,
            "multiValueHeaders": {name: [value] for name, value in self.headers.items()},
            "body": self.data.decode(),
            "isBase64Encoded": False,
        }


MISSING_AUTHENTICATION_TOKEN: Final = GatewayAnswer(
    403, {"message": "Missing Authentication Token"}, "MissingAuthenticationTokenException"
)
INVALID_TOKEN: Final = GatewayAnswer(
    403, {"message": "The security token included in the request is invalid."}, "UnrecognizedClientException"
)
SIGNATURE_MISMATCH_TEXT: Final = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)


def _signature_problem(message: str) -> GatewayAnswer:
    return GatewayAnswer(403, {"message": message}, "InvalidSignatureException")


def _incomplete_signature(message: str) -> GatewayAnswer:
    return GatewayAnswer(403, {"message": message}, "IncompleteSignatureException")


class _FromEvent:
    """The type of ``FROM_EVENT``."""


FROM_EVENT: Final = _FromEvent()
"""``Gateway.refusal``'s default caller: the event's own ``requestContext.identity.userArn``."""


# -- callers ------------------------------------------------------------------------------------
def principal_arn(user_arn: str) -> str:
    """``aws:PrincipalArn`` of a caller: an assumed role's session ARN gives its role's ARN
    (``arn:aws:sts::1:assumed-role/Role/session`` → ``arn:aws:iam::1:role/Role``); an IAM user's or
    role's ARN is its own."""
    session = _SESSION_ARN.fullmatch(user_arn)
    if session:
        partition, account, role, _ = session.groups()
        return f"arn:{partition}:iam::{account}:role/{role}"
    return user_arn


def account_of(user_arn: str) -> str:
    parts = user_arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def _unique_id(user_arn: str) -> str:
    """What API Gateway gives as ``identity.caller``/``user``: the role's id and the session name for an
    assumed role (``AROA…:session``), the user's id for an IAM user. Made up locally, stable per ARN."""
    digest = hashlib.sha256(principal_arn(user_arn).encode()).hexdigest().upper()[:17]
    session = _SESSION_ARN.fullmatch(user_arn)
    if session:
        return f"AROA{digest}:{session.group(4)}"
    return f"AIDA{digest}"


def _access_key(user_arn: str) -> str:
    """A made-up access key id for a caller named only by its ARN (an event built without SigV4)."""
    return "ASIA" + hashlib.sha256(user_arn.encode()).hexdigest().upper()[:16]


# -- routes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """One method of the REST API."""

    method: str
    resource: str  # the path template, e.g. /downloads/{request_id}
    function: str  # the logical id of the function its aws_proxy integration invokes
    authorization: str  # AWS_IAM or NONE
    pattern: re.Pattern[str] = field(compare=False, repr=False)

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters (URL-decoded, as API Gateway hands them over) when ``method path`` is
        this route, else None."""
        if method.upper() != self.method:
            return None
        found = self.pattern.fullmatch(path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}


def _route_pattern(resource: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\+?\})", resource)
    regex = ""
    for part in parts:
        parameter = re.fullmatch(r"\{(\w+)(\+?)\}", part)
        if parameter:
            regex += f"(?P<{parameter.group(1)}>{'.+' if parameter.group(2) else '[^/]+'})"
        else:
            regex += re.escape(part)
    return re.compile(regex)


def _routes(expanded: Mapping[str, Any], api: str) -> list[Route]:
    body = (expanded["Resources"][api].get("Properties") or {}).get("Body") or {}
    routes: list[Route] = []
    for resource, methods in (body.get("paths") or {}).items():
        for method, operation in methods.items():
            if method.lower() not in ("get", "post", "put", "patch", "delete", "head", "options"):
                continue
            integration = operation.get("x-amazon-apigateway-integration") or {}
            if integration.get("type") != "aws_proxy":
                raise TemplateError(
                    f"{api} {method.upper()} {resource}: only aws_proxy integrations are modelled"
                )
            uri = json.dumps(integration.get("uri"))
            function = _FUNCTION_ARN.search(uri)
            if function is None:
                raise TemplateError(f"{api} {method.upper()} {resource}: no function in {uri}")
            security = operation.get("security") or [{"NONE": []}]
            schemes = {name for requirement in security for name in requirement}
            if schemes not in ({"AWS_IAM"}, {"NONE"}):
                raise TemplateError(
                    f"{api} {method.upper()} {resource}: authorization {sorted(schemes)} is not modelled"
                )
            routes.append(
                Route(method.upper(), resource, function.group(1), schemes.pop(), _route_pattern(resource))
            )
    if not routes:
        raise TemplateError(f"{api} has no routes in the expanded template")
    return routes


def _stage(expanded: Mapping[str, Any], api: str) -> str:
    for resource in expanded["Resources"].values():
        properties = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::ApiGateway::Stage" and properties.get("RestApiId") == {"Ref": api}:
            return str(properties["StageName"])
    raise TemplateError(f"{api} has no stage in the expanded template")


# -- the gateway --------------------------------------------------------------------------------
class Gateway:
    """The template's REST API, in front of its functions.

    Args:
        template: template.yaml (loaded when None).
        parameters: template parameters (overrides of the defaults, or what ``Template.parameters``
            returned); ``CallerRoleArns`` shapes the resource policy.
        local: the local resources (the API's id is ``DownloadsApi``'s Ref there when it has one, else
            the sample events' ``abc123``); its region and account are API Gateway's.
        identity_policies: the callers' own IAM statements, by ``aws:PrincipalArn`` (a role's or user's
            ARN) or by the caller's ARN. None: every caller holds :meth:`invoke_policy` (the test
            backends' policy); a caller not in a given mapping holds none.
        api: the logical id of the ``AWS::Serverless::Api``.
    """

    def __init__(
        self,
        template: Template | None = None,
        parameters: Mapping[str, str] | None = None,
        local: LocalResources | None = None,
        *,
        identity_policies: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        api: str = API,
    ) -> None:
        self.template = template or Template.load()
        self.parameters = self.template.parameters(parameters)
        self.local = local or LocalResources()
        self.region = self.local.region
        self.account = self.local.account_id
        self.api_id = self.local.ref(api) if api in self.local.resources else DEFAULT_API_ID
        expanded = self.template.expanded(self.parameters, region=self.region)
        self.routes = _routes(expanded, api)
        self.stage = _stage(expanded, api)
        self.resource_policy = self._resource_policy(api)
        self.identity_policies = identity_policies

    # the API's ARNs and its resource policy
    @property
    def arn_prefix(self) -> str:
        """``arn:aws:execute-api:<region>:<account>:<api id>``."""
        return f"arn:{self.local.partition}:execute-api:{self.region}:{self.account}:{self.api_id}"

    def resource_arn(self, method: str, path: str) -> str:
        """The ARN API Gateway authorizes a call of ``method path`` (path without the stage) on."""
        return f"{self.arn_prefix}/{self.stage}/{method.upper()}/{path.lstrip('/')}"

    def invoke_policy(self) -> list[dict[str, Any]]:
        """An identity policy allowing ``execute-api:Invoke`` on every route of the API (what a backend's
        role holds)."""
        return [{"Effect": "Allow", "Action": INVOKE, "Resource": f"{self.arn_prefix}/*"}]

    def _resource_policy(self, api: str) -> list[dict[str, Any]]:
        properties = self.template.document["Resources"][api].get("Properties") or {}
        policy = (properties.get("Auth") or {}).get("ResourcePolicy")
        if policy is None:
            return []
        if set(policy) != {"CustomStatements"}:
            raise TemplateError(
                f"{api}.Auth.ResourcePolicy: only CustomStatements are modelled, not {sorted(policy)}"
            )
        statements = self.template.resolve(policy["CustomStatements"], self.local, self.parameters)
        if not isinstance(statements, list):
            statements = [statements]
        return [self._expand(statement) for statement in statements]

    def _expand(self, statement: Mapping[str, Any]) -> dict[str, Any]:
        def arn(resource: str) -> str:
            if resource.startswith("execute-api:/"):
                return f"{self.arn_prefix}/{resource.removeprefix('execute-api:/')}"
            return resource

        expanded = dict(statement)
        for key in ("Resource", "NotResource"):
            if key in expanded:
                value = expanded[key]
                expanded[key] = [arn(v) for v in value] if isinstance(value, list) else arn(value)
        return expanded

    # routes and authorization
    def route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route of ``method path`` (path without the stage) and its path parameters, if any."""
        for route in self.routes:
            parameters = route.match(method, path)
            if parameters is not None:
                return route, parameters
        return None

    def authorize(self, method: str, path: str, caller: str | None) -> GatewayAnswer | None:
        """API Gateway's answer to ``method path`` called by ``caller`` (its verified ARN, None when the
        request carries no identity), or None when the call reaches the function."""
        found = self.route(method, path)
        if found is None:
            return MISSING_AUTHENTICATION_TOKEN
        route, _ = found
        if route.authorization == "AWS_IAM" and not caller:
            return MISSING_AUTHENTICATION_TOKEN
        resource = self.resource_arn(method, path)
        context: dict[str, str | list[str]] = {
            "aws:CurrentTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        }
        identity: Sequence[Mapping[str, Any]] = ()
        principal: str | None = None
        if route.authorization == "AWS_IAM" and caller:
            principal = principal_arn(caller)
            context |= {
                "aws:PrincipalArn": principal,
                "aws:PrincipalAccount": account_of(caller),
                "aws:userid": _unique_id(caller),
            }
            identity = self._identity(caller)
        decision = evaluate(
            Requirement(INVOKE, resource, context), identity, self.resource_policy, principal_arn=principal
        )
        if decision.allowed:
            return None
        who = caller if route.authorization == "AWS_IAM" and caller else "anonymous"
        explicit = " with an explicit deny" if "explicit Deny" in decision.reason else ""
        message = f"User: {who} is not authorized to perform: {INVOKE} on resource: {resource}{explicit}"
        return GatewayAnswer(403, {"Message": message}, "AccessDeniedException")

    def _identity(self, caller: str) -> Sequence[Mapping[str, Any]]:
        if self.identity_policies is None:
            return self.invoke_policy()
        for key in (principal_arn(caller), caller):
            if key in self.identity_policies:
                return self.identity_policies[key]
        return ()

    def refusal(
        self, event: Mapping[str, Any], caller: str | _FromEvent | None = FROM_EVENT
    ) -> dict[str, Any] | None:
        """API Gateway's answer to an already-built proxy ``event`` (a Lambda proxy answer), or None when
        it reaches the function. ``caller``: the verified caller's ARN (None: no identity); by default
        the event's ``requestContext.identity.userArn``."""
        if isinstance(caller, _FromEvent):
            identity = (event.get("requestContext") or {}).get("identity") or {}
            caller = identity.get("userArn") or None
        method, path = str(event.get("httpMethod") or ""), str(event.get("path") or "")
        answer = self.authorize(method, path, caller or None)
        return None if answer is None else answer.proxy()

    # the event
    def event(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: Mapping[str, Sequence[str]] | None = None,
        body: bytes | None = None,
        caller: str | None = None,
        access_key: str | None = None,
        source_ip: str = "127.0.0.1",
    ) -> dict[str, Any]:
        """The REST proxy event of ``method path?query`` (path without the stage) for its function.

        ``headers`` as sent (a name to its values), ``body`` the raw bytes (base64-encoded in the event
        when they are not UTF-8), ``caller`` the verified caller's ARN (None: no identity, as on a
        ``NONE`` route), ``access_key`` the key id it signed with."""
        found = self.route(method, path)
        if found is None:
            raise KeyError(f"{method} {path} is no route of the API")
        route, path_parameters = found
        multi_headers = {name: list(values) for name, values in (headers or {}).items()}
        multi_query = parse_qs(query, keep_blank_values=True)
        text: str | None
        encoded = False
        if not body:
            text = None
        else:
            try:
                text = body.decode()
            except UnicodeDecodeError:
                text, encoded = base64.b64encode(body).decode(), True
        host = next((v[-1] for k, v in multi_headers.items() if k.lower() == "host" and v), "")
        user_agent = next((v[-1] for k, v in multi_headers.items() if k.lower() == "user-agent" and v), None)
        now = time.time()
        identity: dict[str, Any] = {
            "cognitoIdentityPoolId": None,
            "accountId": None,
            "cognitoIdentityId": None,
            "caller": None,
            "sourceIp": source_ip,
            "principalOrgId": None,
            "accessKey": None,
            "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None,
            "userArn": None,
            "userAgent": user_agent,
            "user": None,
        }
        if caller:
            unique = _unique_id(caller)
            identity |= {
                "accountId": account_of(caller),
                "caller": unique,
                "user": unique,
                "userArn": caller,
                "accessKey": access_key or _access_key(caller),
            }
        return {
            "resource": route.resource,
            "path": path,
            "httpMethod": route.method,
            "headers": {name: values[-1] for name, values in multi_headers.items() if values} or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "accountId": self.account,
                "apiId": self.api_id,
                "resourceId": hashlib.sha256(route.resource.encode()).hexdigest()[:6],
                "resourcePath": route.resource,
                "httpMethod": route.method,
                "extendedRequestId": base64.b64encode(uuid.uuid4().bytes[:9]).decode(),
                "requestTime": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{self.stage}{path}",
                "protocol": "HTTP/1.1",
                "stage": self.stage,
                "domainPrefix": host.split(".", 1)[0] if host else self.api_id,
                "requestTimeEpoch": int(now * 1000),
                "requestId": str(uuid.uuid4()),
                "identity": identity,
                "domainName": host or f"{self.api_id}.execute-api.{self.region}.{self.local.url_suffix}",
            },
            "body": text,
            "isBase64Encoded": encoded,
        }


# -- SigV4 --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalCredential:
    """A local access key: its secret and the principal API Gateway names for it (``userArn``)."""

    access_key_id: str
    secret_access_key: str
    arn: str


@dataclass(frozen=True)
class Verified:
    """A request whose signature held: who signed it."""

    arn: str
    access_key_id: str


def _header(headers: Mapping[str, Sequence[str]], name: str) -> list[str]:
    return [value for key, values in headers.items() if key.lower() == name for value in values]


class SigV4Verifier:
    """Verifies a request's SigV4 ``Authorization`` header as API Gateway does for ``AWS_IAM`` routes.

    The signature is recomputed with botocore's ``SigV4Auth`` (its ``canonical_request``,
    ``string_to_sign`` and ``signature``) over exactly the request's ``SignedHeaders``, with the
    request's own ``X-Amz-Date``, and compared in constant time.

    Args:
        credentials: the local access keys.
        region: the API's region (the credential scope must name it).
        service: ``execute-api``.
        clock: seconds since the epoch (``time.time``); a signature more than 5 minutes off is refused.
    """

    def __init__(
        self,
        credentials: Sequence[LocalCredential],
        region: str = "eu-west-1",
        service: str = "execute-api",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = {credential.access_key_id: credential for credential in credentials}
        self.region = region
        self.service = service
        self.clock = clock

    def verify(
        self, method: str, target: str, headers: Mapping[str, Sequence[str]], body: bytes
    ) -> Verified | GatewayAnswer:
        """Who signed ``method target`` (the request line's target: path and query as sent), or API
        Gateway's answer refusing it."""
        # Imported here: only make serve and its tests verify signatures.
        from botocore.auth import SigV4Auth  # noqa: PLC0415
        from botocore.awsrequest import AWSRequest  # noqa: PLC0415
        from botocore.credentials import Credentials  # noqa: PLC0415

        authorization = _header(headers, "authorization")
        if not authorization:
            return MISSING_AUTHENTICATION_TOKEN
        header = authorization[-1].strip()
        if not header.startswith("AWS4-HMAC-SHA256 "):
            digest = base64.b64encode(hashlib.sha256(header.encode()).digest()).decode()
            return _incomplete_signature(
                "Invalid key=value pair (missing equal-sign) in Authorization header (hashed with SHA-256 "
                f"and encoded with Base64): '{digest}'."
            )
        fields: dict[str, str] = {}
        for part in header.removeprefix("AWS4-HMAC-SHA256 ").split(","):
            key, equals, value = part.strip().partition("=")
            if equals:
                fields[key] = value
        missing = [name for name in ("Credential", "Signature", "SignedHeaders") if not fields.get(name)]
        if missing:
            return _incomplete_signature(
                " ".join(f"Authorization header requires '{name}' parameter." for name in missing)
            )
        dates = _header(headers, "x-amz-date")
        if not dates:
            return _incomplete_signature(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            )
        timestamp = dates[-1].strip()
        scope = fields["Credential"].split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            return _incomplete_signature(
                "Credential must have exactly 5 slash-delimited elements, e.g. "
                "keyid/date/region/service/aws4_request."
            )
        key_id, day, region, service, _ = scope
        credential = self.credentials.get(key_id)
        if credential is None or _header(headers, "x-amz-security-token"):
            return INVALID_TOKEN
        if region != self.region:
            return _signature_problem(f"Credential should be scoped to a valid region, not '{region}'. ")
        if service != self.service:
            return _signature_problem(f"Credential should be scoped to correct service: '{self.service}'. ")
        try:
            signed_at = datetime.strptime(timestamp, _SIGV4_TIMESTAMP).replace(tzinfo=UTC)
        except ValueError:
            return _incomplete_signature(f"Date must be in ISO-8601 'basic format'. Got '{timestamp}'.")
        if day != timestamp[:8]:
            return _signature_problem(
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{day}' != '{timestamp[:8]}', from 'X-Amz-Date'."
            )
        now = datetime.fromtimestamp(self.clock(), UTC).replace(microsecond=0)
        if signed_at < now - _SKEW:
            return _signature_problem(
                f"Signature expired: {timestamp} is now earlier than "
                f"{(now - _SKEW).strftime(_SIGV4_TIMESTAMP)} ({now.strftime(_SIGV4_TIMESTAMP)} - 5 min.)"
            )
        if signed_at > now + _SKEW:
            return _signature_problem(
                f"Signature not yet current: {timestamp} is still later than "
                f"{(now + _SKEW).strftime(_SIGV4_TIMESTAMP)} ({now.strftime(_SIGV4_TIMESTAMP)} + 5 min.)"
            )
        signed_names = [name.strip().lower() for name in fields["SignedHeaders"].split(";") if name.strip()]
        if "host" not in signed_names:
            return _signature_problem(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
            )
        signed: list[tuple[str, str]] = []
        for name in signed_names:
            values = _header(headers, name)
            if not values:
                return _signature_problem(SIGNATURE_MISMATCH_TEXT)
            signed += [(name, value) for value in values]
        parts = urlsplit(target)
        url = f"http://{_header(headers, 'host')[-1]}{parts.path}" + (
            f"?{parts.query}" if parts.query else ""
        )
        request = AWSRequest(method=method.upper(), url=url, data=body or b"")
        for name, value in signed:
            request.headers[name] = value  # HTTPHeaders: each assignment adds a value
        request.context["timestamp"] = timestamp
        signer = SigV4Auth(
            Credentials(credential.access_key_id, credential.secret_access_key), service, region
        )
        canonical = signer.canonical_request(request)
        string_to_sign = signer.string_to_sign(request, canonical)
        expected = signer.signature(string_to_sign, request)
        if not hmac.compare_digest(expected.encode(), fields["Signature"].encode()):
            return _signature_problem(
                f"{SIGNATURE_MISMATCH_TEXT}\n\nThe Canonical String for this request should have been\n"
                f"'{canonical}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
            )
        return Verified(credential.arn, credential.access_key_id)
