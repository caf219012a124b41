"""The service's tracer: Powertools' Tracer, built at the first traced call, and only when tracing is on.

Creating Powertools' ``Tracer`` imports the X-Ray SDK (and, when tracing is on, patches botocore and
the other libraries it knows), even to switch itself off — a cost every cold start paid
at import, in every function. :class:`DeferredTracer` offers the same two decorators, but they build
nothing: the first call of a decorated function decides, by Powertools' own rule (:func:`tracing_enabled`),
and

- tracing off (``POWERTOOLS_TRACE_DISABLED=true``, or not in Lambda): the function is called as it is, and
  the X-Ray SDK is never imported;
- tracing on: the Tracer is built then, once per container, and the function runs under Powertools'
  decorator exactly as if it had been decorated at import (the same subsegments, annotations and metadata).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

# Powertools' tracing module imports the X-Ray SDK lazily: creating a Tracer is what imports it.
from aws_lambda_powertools import Tracer
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

# What X-Ray records calls of: every AWS call (TikTok's calls are the traced methods' subsegments).
PATCHED = ("botocore",)
P = ParamSpec("P")
R = TypeVar("R")


def tracing_enabled() -> bool:
    """Whether tracing is on, by Powertools' rule for its Tracer.

    On in Lambda (``LAMBDA_TASK_ROOT`` set) unless ``POWERTOOLS_TRACE_DISABLED`` is true; off under SAM's
    and Chalice's local emulators.
    """
    if resolve_truthy_env_var_choice(env=os.getenv(constants.TRACER_DISABLED_ENV, "false")):
        return False
    emulated = os.getenv(constants.SAM_LOCAL_ENV) or os.getenv(constants.CHALICE_LOCAL_ENV)
    return bool(os.getenv(constants.LAMBDA_TASK_ROOT_ENV)) and not emulated


class DeferredTracer:
    """Powertools' ``capture_lambda_handler`` and ``capture_method``, with the Tracer built on first use.

    Thread-safe: part uploads call traced methods from worker threads; one Tracer is built.
    """

    def __init__(self, service: str) -> None:
        self._service = service
        self._lock = threading.Lock()
        self._decided = False
        self._tracer: Tracer | None = None

    def active(self) -> Tracer | None:
        """The container's Tracer, built on the first call; ``None`` when tracing is off."""
        if not self._decided:
            with self._lock:
                if not self._decided:
                    if tracing_enabled():
                        # Of the libraries X-Ray's patch_all knows, botocore is the only one in use here
                        # (patch_all would also import its sqlite3 and psycopg patches, for nothing).
                        self._tracer = Tracer(service=self._service, patch_modules=PATCHED)
                    self._decided = True
        return self._tracer

    def use(self, tracer: Tracer | None) -> None:
        """Trace with ``tracer`` from now on; ``None``: decide again at the next traced call (tests only)."""
        with self._lock:
            self._tracer, self._decided = tracer, tracer is not None

    def capture_lambda_handler(
        self, handler: Callable[P, R], *, capture_response: bool = False
    ) -> Callable[P, R]:
        """``handler`` under the Tracer's ``## <handler name>`` subsegment, with the cold-start annotation."""

        def decorate(tracer: Tracer, function: Callable[P, R]) -> Callable[P, R]:
            traced: Callable[P, R] = tracer.capture_lambda_handler(
                function, capture_response=capture_response
            )
            return traced

        return self._deferred(handler, decorate)

    def capture_method(self, *, capture_response: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A decorator: the method under the Tracer's ``## <module.qualified name>`` subsegment."""

        def decorate(tracer: Tracer, function: Callable[P, R]) -> Callable[P, R]:
            traced: Callable[P, R] = tracer.capture_method(capture_response=capture_response)(function)
            return traced

        return lambda function: self._deferred(function, decorate)

    def _deferred(
        self, function: Callable[P, R], decorate: Callable[[Tracer, Callable[P, R]], Callable[P, R]]
    ) -> Callable[P, R]:
        """``function``, called as it is when tracing is off.

        When on, decorated by ``decorate`` with the active Tracer at its first call (and again should the
        Tracer change).
        """
        decorated: list[tuple[Tracer, Callable[P, R]]] = []

        @functools.wraps(function)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            tracer = self.active()
            if tracer is None:
                return function(*args, **kwargs)
            current = decorated[0] if decorated else None
            if current is None or current[0] is not tracer:
                current = (tracer, decorate(tracer, function))
                decorated[:] = [current]
            return current[1](*args, **kwargs)

        return call
