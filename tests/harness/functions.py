"""The stack's Lambda functions as tests and the demo run them: each with exactly its template
environment, and each AWS call it makes checked against its template permissions.

- :meth:`LambdaFunctions.invoke` runs a function's handler (the template's ``Handler``) on an event, with
  a Lambda context counting down from its Timeout.
- :meth:`LambdaFunctions.running` switches the process to one function's environment — template.yaml's
  Globals and the function's own variables, ``!Ref``/``!GetAtt``/``!Sub`` resolved to the local
  resources, plus what Lambda itself sets — so a variable the template does not give a function is
  missing here too. Switching functions rebuilds the service's clients, as a new container would.
- :class:`AwsCallRecorder` records every AWS API call (botocore's ``before-parameter-build`` event,
  which presigned URLs emit too) and which function made it.
- :meth:`LambdaFunctions.violations` judges each recorded call with the function's policies as
  CloudFormation would see them after the SAM transform (plus the key and bucket policies): a call no
  policy allows is named with its function, action and resource.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3

from tests.harness.cfn_template import LocalResources, Template
from tests.harness.iam_policy import AwsCall, Requirement, evaluate, required_permissions, unused_permissions
from tests.harness.lambda_context import FakeLambdaContext
from tests.harness.local_stack import REGION
from tiktok_archive import runtime

ACCOUNT = "123456789012"
Handler = Callable[[dict[str, Any], Any], Any]


class AwsCallRecorder:
    """Records the AWS calls made while a function runs (installed once on boto3's default session).

    Clients copy their session's event handlers when they are created, so :meth:`install` must run
    before the service builds its first client; the service builds them lazily, on first use.
    """

    def __init__(self) -> None:
        self.function: str | None = None
        self.calls: list[AwsCall] = []
        self._lock = threading.Lock()
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        session = boto3._get_default_session()
        session.events.register("before-parameter-build", self._record)
        self._installed = True

    def _record(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        function = self.function
        if function is None:
            return
        call = AwsCall(
            function=function,
            service=model.service_model.service_name,
            operation=model.name,
            params=dict(params),
            region=REGION,
            account=ACCOUNT,
        )
        with self._lock:
            self.calls.append(call)

    def take(self) -> list[AwsCall]:
        """The calls recorded since the last ``take``."""
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


RECORDER = AwsCallRecorder()


@dataclass
class UnusedReport:
    """Permissions no test used: for each function, what was unused in every test that ran it."""

    unused: dict[str, set[str]] = field(default_factory=dict)

    def add(self, function: str, unused_now: set[str]) -> None:
        self.unused[function] = self.unused.get(function, unused_now) & unused_now

    def lines(self) -> list[str]:
        return sorted(line for lines in self.unused.values() for line in lines)


UNUSED = UnusedReport()


class LambdaFunctions:
    """The template's functions over one set of local resources.

    Args:
        template: template.yaml.
        local: what each logical id is locally.
        parameters: template parameter overrides (the emulator's origin, part sizes …).
        plumbing: what Lambda and the local stack provide besides the template (AWS endpoints and
            credentials); never a variable of the service's own.
        overrides: variables a test changes on purpose (``None`` removes one), for every function.
    """

    def __init__(
        self,
        template: Template,
        local: LocalResources,
        parameters: Mapping[str, str],
        plumbing: Mapping[str, str],
        overrides: Mapping[str, str | None] | None = None,
    ) -> None:
        self.template = template
        self.local = local
        self._given = dict(parameters)
        self.parameters = template.parameters(parameters)
        self.plumbing = dict(plumbing)
        self.overrides: dict[str, str | None] = dict(overrides or {})
        self.names = template.functions(self.parameters)
        self._current: str | None = None
        self._saved: dict[str, str | None] = {}
        self._handlers: dict[str, Handler] = {}
        self._kinds = {
            logical_id: resource.get("Type")
            for logical_id, resource in template.document["Resources"].items()
        }

    def environment(self, name: str) -> dict[str, str]:
        """Function ``name``'s whole environment as Lambda would give it, with the test's overrides."""
        variables = {
            **self.template.function_environment(name, self.local, self.parameters),
            **self.plumbing,
        }
        for key, value in self.overrides.items():
            if value is None:
                variables.pop(key, None)
            else:
                variables[key] = value
        return variables

    def override(self, parameters: Mapping[str, str] | None = None, **variables: str | None) -> None:
        """Set template ``parameters`` (the way an operator configures the stack), or change variables
        of every function (``None`` removes one) on purpose; the next call rebuilds the clients."""
        if parameters:
            self.parameters = self.template.parameters({**self._given, **parameters})
            self._given = {**self._given, **parameters}
            self.names = self.template.functions(self.parameters)
        self.overrides.update(variables)
        self._current = None

    @contextlib.contextmanager
    def running(self, name: str) -> Iterator[None]:
        """Run code as function ``name``: its environment in ``os.environ``, its AWS calls recorded."""
        if name not in self.names:
            raise KeyError(f"{name} is not a function of template.yaml (it has {self.names})")
        if self._current != name:
            self._switch_to(name)
        RECORDER.function = name
        try:
            yield
        finally:
            RECORDER.function = None

    def process_environment(self, name: str) -> dict[str, str]:
        """A whole process environment for function ``name`` (a second container's): this process's,
        without any variable of the template's functions, plus exactly the function's."""
        keys = {key for each in self.names for key in self.environment(each)} | set(self.overrides)
        kept = {key: value for key, value in os.environ.items() if key not in keys}
        return {**kept, **self.environment(name)}

    def handler(self, name: str) -> Handler:
        """Function ``name``'s handler: the ``module.function`` its template ``Handler`` names."""
        if name not in self._handlers:
            module, _, attribute = self.environment(name)["_HANDLER"].rpartition(".")
            self._handlers[name] = getattr(importlib.import_module(module), attribute)
        return self._handlers[name]

    def invoke(self, name: str, event: dict[str, Any], remaining_ms: int | None = None) -> Any:
        """Invoke function ``name`` with ``event`` as Lambda would: its handler in its environment, with a
        context whose remaining time counts down from ``remaining_ms`` (the template's Timeout when None)."""
        if remaining_ms is None:
            remaining_ms = self.template.function_timeout(name, self.parameters) * 1000
        handler = self.handler(name)
        with self.running(name):
            return handler(event, FakeLambdaContext(name, remaining_ms))

    def _switch_to(self, name: str) -> None:
        keys = {key for each in self.names for key in self.environment(each)} | set(self.overrides)
        for key in keys:
            self._saved.setdefault(key, os.environ.get(key))
            os.environ.pop(key, None)
        os.environ.update(self.environment(name))
        runtime.reset()
        self._current = name

    def restore(self) -> None:
        """Put the process environment back as it was before the first switch."""
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()
        self._current = None
        runtime.reset()

    # -- permissions ---------------------------------------------------------------------------
    def violations(self, calls: list[AwsCall]) -> list[str]:
        """Each call of ``calls`` that the calling function's policies do not allow, and why.

        Identical requirements (the same action on the same resource in the same context, from the same
        function) are judged once.
        """
        found: list[str] = []
        used: dict[str, dict[str, Requirement]] = {name: {} for name in {call.function for call in calls}}
        policies: dict[str, list[dict[str, Any]]] = {}
        judged: set[tuple[str, str]] = set()
        for call in calls:
            if call.function not in policies:
                policies[call.function] = self.template.function_policies(
                    call.function, self.local, self.parameters
                )
            for requirement in required_permissions(call, key_arn=self._key_arn):
                identity = repr(
                    (requirement.action, requirement.resource_arn, sorted(requirement.context.items()))
                )
                if (call.function, identity) in judged:
                    continue
                judged.add((call.function, identity))
                used[call.function][identity] = requirement
                decision = evaluate(
                    requirement,
                    policies[call.function],
                    self._resource_policy(requirement),
                    principal_arn=self.local.get_att(f"{call.function}Role", "Arn"),
                )
                if not decision.allowed:
                    found.append(
                        f"{call.function} may not {requirement.action} on {requirement.resource_arn} "
                        f"({call.service} {call.operation}): {decision.reason}"
                    )
        for function, requirements in used.items():
            unused = unused_permissions(
                {function: policies[function]}, {function: list(requirements.values())}
            )
            UNUSED.add(function, {self._general(line) for line in unused})
        return found

    def _key_arn(self, key_id: str) -> str:
        for record in self.local.resources.values():
            if key_id in (record.get("Ref"), record.get("Arn"), record.get("KeyId")):
                return record["Arn"]
        return key_id

    def _resource_policy(self, requirement: Requirement) -> list[dict[str, Any]]:
        for logical_id, record in self.local.resources.items():
            arn = record.get("Arn", "")
            kind = self._kinds.get(logical_id)
            if kind == "AWS::KMS::Key" and requirement.resource_arn == arn:
                return self.template.key_policy(logical_id, self.local, self.parameters)
            if kind == "AWS::S3::Bucket" and requirement.resource_arn.startswith(arn):
                return self.template.bucket_policy_statements(logical_id, self.local, self.parameters)
        return []

    def _general(self, line: str) -> str:
        """A report line with the local names replaced by logical ids, so that tests can be compared."""
        for logical_id, record in sorted(self.local.resources.items(), key=lambda kv: -len(kv[1]["Ref"])):
            for value in sorted(record.values(), key=len, reverse=True):
                if len(value) > 8:
                    line = line.replace(value, f"<{logical_id}>")
        return line
