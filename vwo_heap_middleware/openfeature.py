"""An OpenFeature provider over the engine: ``api.set_provider(HeapVWOProvider(engine))`` (the
``[openfeature]`` extra). In a request the middleware saw, it answers from that request's
decisions and the transaction context is the visitor (``targeting_key``: the VWO user id;
attributes: the custom variables). Elsewhere ``targeting_key`` (or ``id``) is the user id and
the other scalar attributes are custom variables. Booleans are a flag's state; strings, numbers
and objects its variables (``"flag.variable"``, or VWO's way: attribute ``key`` names it).
``track`` sends a conversion: the details' ``value`` as ``revenue``, scalars as properties."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from openfeature import api, transaction_context
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.flag_evaluation import Reason as OpenFeatureReason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails
from openfeature.transaction_context.context_var_transaction_context_propagator import (
    ContextVarsTransactionContextPropagator,
)
from openfeature.transaction_context.no_op_transaction_context_propagator import (
    NoOpTransactionContextPropagator,
)

from .decision import PROVIDER_NAME, FlagDecision
from .engine import FlagEngine
from .identity import HeapIdentity, clean_identity
from .observers import Observer, RequestView
from .request_flags import RequestFlags, get_flags
from .visitor import Visitor

NOT_READY = "VWO settings are not loaded yet"
VARIABLE_ATTRIBUTE = "key"  # VWO's provider: the variable's name in the evaluation context
T = TypeVar("T")
_OBJECT = (dict, list)  # what an object flag's value may be
_SCALAR = (str, int, float, bool)
_ERROR, _DISABLED = OpenFeatureReason.ERROR, OpenFeatureReason.DISABLED


class HeapVWOProvider(AbstractProvider):
    """Heap-segment flags through the OpenFeature API. ``initialize`` starts the engine and waits
    up to ``ready_wait`` s for settings (else in error until ``PROVIDER_READY``); each new
    revision emits ``PROVIDER_CONFIGURATION_CHANGED``; ``shutdown`` leaves the engine running."""

    def __init__(self, engine: FlagEngine, *, ready_wait: float = 2.0) -> None:
        if not isinstance(engine, FlagEngine):
            raise TypeError("HeapVWOProvider needs a FlagEngine")
        super().__init__()
        self.engine = engine
        self.ready_wait = ready_wait
        self._watcher = _EngineWatcher(self)
        self._revision: str | None = None

    def get_metadata(self) -> Metadata:
        return Metadata(name=PROVIDER_NAME)

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        current = getattr(transaction_context, "_evaluation_transaction_context_propagator", None)
        if current is None or isinstance(current, NoOpTransactionContextPropagator):
            api.set_transaction_context_propagator(ContextVarsTransactionContextPropagator())
        self.engine.add_observer(self._watcher)
        self.engine.start()
        if not self.engine.wait_ready(self.ready_wait):
            raise ProviderNotReadyError(NOT_READY)
        self._revision = self.engine.readiness()["revision"]

    def shutdown(self) -> None:
        self.engine.observers.remove(self._watcher)

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        key, variable = self._split(flag_key, evaluation_context)
        decision = self._decide(key, evaluation_context)
        return _details(decision, variable, default_value, bool)

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        key, variable = self._split(flag_key, evaluation_context)
        decision = await self._decide_async(key, evaluation_context)
        return _details(decision, variable, default_value, bool)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._variable(flag_key, default_value, evaluation_context, str)

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return await self._variable_async(flag_key, default_value, evaluation_context, str)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._variable(flag_key, default_value, evaluation_context, int)

    async def resolve_integer_details_async(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return await self._variable_async(flag_key, default_value, evaluation_context, int)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._variable(flag_key, default_value, evaluation_context, float)

    async def resolve_float_details_async(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return await self._variable_async(flag_key, default_value, evaluation_context, float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._variable(flag_key, default_value, evaluation_context, _OBJECT)

    async def resolve_object_details_async(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return await self._variable_async(flag_key, default_value, evaluation_context, _OBJECT)

    def _variable(
        self, flag_key: str, default: T, context: EvaluationContext | None, kind: Any
    ) -> FlagResolutionDetails[T]:
        key, variable = self._split(flag_key, context)
        return _details(self._decide(key, context), variable, default, kind)

    async def _variable_async(
        self, flag_key: str, default: T, context: EvaluationContext | None, kind: Any
    ) -> FlagResolutionDetails[T]:
        key, variable = self._split(flag_key, context)
        return _details(await self._decide_async(key, context), variable, default, kind)

    def _split(self, flag_key: str, context: EvaluationContext | None) -> tuple[str, str | None]:
        named = (context.attributes.get(VARIABLE_ATTRIBUTE) if context else None) or None
        if isinstance(named, str):
            return flag_key, named
        flag, dot, variable = flag_key.rpartition(".")
        if dot and flag and not self.engine.knows(flag_key):
            return flag, variable
        return flag_key, None

    def _decide(self, key: str, context: EvaluationContext | None) -> FlagDecision:
        flags = self._request_flags(context)
        if flags is not None:
            return flags.get(key)
        return self.engine.decide(self._visitor(context), [key])[key]

    async def _decide_async(self, key: str, context: EvaluationContext | None) -> FlagDecision:
        flags = self._request_flags(context)
        if flags is not None:
            await flags.load_async([key])
            return flags.get(key)
        return (await self.engine.decide_async(self._visitor(context), [key]))[key]

    def _request_flags(self, context: EvaluationContext | None) -> RequestFlags | None:
        """The current request's flags, when the context is that request's visitor."""
        flags = get_flags()
        if flags is None or flags.engine is not self.engine:
            return None
        wanted = _user_id(context)
        return flags if wanted is None or wanted == flags.user_id else None

    def _visitor(self, context: EvaluationContext | None) -> Visitor:
        user_id = _user_id(context)
        attributes = dict(context.attributes) if context else {}
        custom = {
            name: value
            for name, value in attributes.items()
            if isinstance(value, (str, int, float, bool)) and name not in ("id", VARIABLE_ATTRIBUTE)
        }
        identity = clean_identity(custom.get(self.engine.config.custom_variable))
        heap = HeapIdentity(identity=identity, source="openfeature")
        if user_id is None:
            return Visitor(heap, None, None)
        return Visitor(heap, user_id, {"id": user_id, "custom_variables": custom})

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """A conversion for the visitor of ``evaluation_context`` (else the request's)."""
        details = tracking_event_details or TrackingEventDetails()
        properties = {k: v for k, v in details.attributes.items() if isinstance(v, _SCALAR)}
        if details.value is not None:
            properties["revenue"] = details.value
        flags = self._request_flags(evaluation_context or api.get_transaction_context())
        visitor = flags.visitor if flags is not None else self._visitor(evaluation_context)
        self.engine.track(visitor, tracking_event_name, properties)

    def _settings_loaded(self, revision: str) -> None:
        if self._revision is None:
            self.emit_provider_ready(ProviderEventDetails(message="VWO settings loaded"))
        elif revision != self._revision:
            self.emit_provider_configuration_changed(
                ProviderEventDetails(message=f"VWO settings revision {revision}")
            )
        self._revision = revision


class _EngineWatcher(Observer):
    """Sets the transaction context per request; turns new settings into provider events."""

    def __init__(self, provider: HeapVWOProvider) -> None:
        self._provider = provider

    def request_opened(self, flags: RequestView) -> None:
        custom = (flags.visitor.context or {}).get("custom_variables", {})
        api.set_transaction_context(EvaluationContext(flags.user_id, dict(custom)))

    def request_closed(self, flags: RequestView) -> None:
        api.set_transaction_context(EvaluationContext())  # a thread's next caller is someone else

    def settings_loaded(self, revision: str, flags: int) -> None:
        self._provider._settings_loaded(revision)


def _user_id(context: EvaluationContext | None) -> str | None:
    if context is None:
        return None
    user_id = context.targeting_key or context.attributes.get("id")
    return clean_identity(user_id)


def _metadata(decision: FlagDecision) -> dict[str, bool | int | float | str]:
    """``flag_metadata``: the reason in this package's words, ``stale``, and the decision's
    details that have a value (``segment.<list id>``: that segment's answer)."""
    metadata: dict[str, bool | int | float | str] = {
        "vwo_heap_reason": decision.reason.value,
        "stale": decision.stale,
    }
    details = decision.details
    for name, value in details.to_dict().items():
        if name == "segments":
            metadata.update({f"segment.{list_id}": answer for list_id, answer in value.items()})
        elif isinstance(value, (bool, int, float, str)) and value != "":
            metadata[name] = value
    return metadata


def _details(
    decision: FlagDecision, variable: str | None, default: T, kind: Any
) -> FlagResolutionDetails[T]:
    reason = decision.reason.evaluation_reason
    code = decision.reason.error_code
    error = ErrorCode(code) if code is not None else None
    if decision.stale and error is None:
        reason = OpenFeatureReason.STALE
    metadata = _metadata(decision)
    variant = decision.variant
    if error is not None:
        message = f"flag {decision.key!r}: {decision.reason.value}"
        return FlagResolutionDetails(default, error, message, reason, None, metadata)
    if variable is None:
        if kind is not bool:
            message = f"flag {decision.key!r} is a boolean; name a variable as 'flag.variable'"
            mismatch = ErrorCode.TYPE_MISMATCH
            return FlagResolutionDetails(default, mismatch, message, _ERROR, None, metadata)
        return FlagResolutionDetails(decision.enabled, None, None, reason, variant, metadata)  # type: ignore[arg-type]
    if not decision.enabled:
        return FlagResolutionDetails(default, None, None, _DISABLED, variant, metadata)
    if variable not in decision.variables:
        message = f"flag {decision.key!r} has no variable {variable!r}"
        missing = ErrorCode.FLAG_NOT_FOUND
        return FlagResolutionDetails(default, missing, message, _ERROR, None, metadata)
    value = decision.variables[variable]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        message = f"variable {variable!r} of flag {decision.key!r} is {type(value).__name__}"
        mismatch = ErrorCode.TYPE_MISMATCH
        return FlagResolutionDetails(default, mismatch, message, _ERROR, None, metadata)
    return FlagResolutionDetails(value, None, None, reason, variant, metadata)
