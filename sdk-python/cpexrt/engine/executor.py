"""Runs the plugins of one hook over a payload: the five phases in order, each with
its authority, plugin failures turned into records or a failed call per on_error."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from cpexrt import payloads
from cpexrt._generated.records import PluginError, PluginViolation
from cpexrt._lazy import LazyModule
from cpexrt.engine import driver, gating, observe
from cpexrt.engine.background import RUNNER, BackgroundBatch, start_inline
from cpexrt.engine.config import Mode, OnError, PluginSpec
from cpexrt.engine.context import RequestState
from cpexrt.engine.gating import Grant
from cpexrt.engine.watchdog import PluginDeadline
from cpexrt.errors import PipelineError, PipelineTimeoutError
from cpexrt.plugin import Plugin, PluginContext, bound_context, detached_context
from cpexrt.results import _ALLOW as _SHARED_ALLOW
from cpexrt.results import PluginResult
from cpexrt.wire import _ONLY_STR, _set_dict, _set_extra, _set_fields_set
from cpexrt.wire import _new as _new_record

if TYPE_CHECKING:
    import asyncio
else:
    asyncio = LazyModule("asyncio", globals())  # imported by the first async handler or loop

LOG = logging.getLogger("cpexrt.engine.executor")


@dataclass(frozen=True)
class Authority:
    may_deny: bool
    may_modify: bool


# The phases run in this order; fire_and_forget runs after the pipeline.
PHASES: tuple[tuple[Mode, Authority], ...] = (
    (Mode.SEQUENTIAL, Authority(may_deny=True, may_modify=True)),
    (Mode.TRANSFORM, Authority(may_deny=False, may_modify=True)),
    (Mode.AUDIT, Authority(may_deny=False, may_modify=False)),
    (Mode.CONCURRENT, Authority(may_deny=True, may_modify=False)),
)
FIRE_AND_FORGET = Authority(may_deny=False, may_modify=False)


@dataclass
class LoadedPlugin:
    spec: PluginSpec
    index: int
    instance: Plugin
    handlers: dict[str, Callable[[Any, PluginContext], Any]]
    timeout: float
    grant: Grant
    disabled: bool = False
    # py-cpex plugins: a deny or modification their phase has no authority for is not
    # applied and is reported (code not_enforced), as py-cpex does not enforce it;
    # for cpex plugins it is a failure under on_error.
    reports_unenforced: bool = False
    # mode: permissive (PluginSpec.shadow): its denies are recorded, not enforced.
    shadow: bool = False
    # Its handlers run in worker processes (isolation: process): they take the
    # payload as its bytes (payloads.Encoded), not as a decoded private copy.
    takes_wire: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def active(self) -> bool:
        return not self.disabled and self.spec.mode is not Mode.DISABLED


class PipelineOutcome:
    """The engine's result of one invoke, as Python objects: the verdict, what was
    applied, and for the host the request's state for its next hook (`context`, a
    RequestState or None) and the fire-and-forget tasks (`background`). A modification
    is kept as the snapshot it was accepted as: modified_payload / modified_extensions
    decode a private copy on first use, the boundary sends the snapshot's bytes."""

    __slots__ = (
        "continue_processing",
        "violation",
        "errors",
        "metadata",
        "payload",
        "extensions",
        "states",
        "context",
        "background",
        "retry_delay_ms",
        "http_headers",
        "_decoded_payload",
        "_decoded_extensions",
    )

    def __init__(self, states: dict[str, dict[str, Any]] | None = None) -> None:
        self.continue_processing = True
        self.violation: PluginViolation | None = None
        self.errors: list[PluginError] = []
        self.metadata: dict[str, Any] = {}
        self.payload: payloads.Snapshot | None = None  # set when a modification was applied
        self.extensions: payloads.Snapshot | None = None
        self.states: dict[str, dict[str, Any]] = states if states is not None else {}
        self.context: RequestState | None = None
        self.background: BackgroundBatch | None = None
        self.retry_delay_ms = 0
        self.http_headers: dict[str, str] | None = None
        self._decoded_payload: Any = None
        self._decoded_extensions: Any = None

    @property
    def payload_modified(self) -> bool:
        return self.payload is not None

    @property
    def extensions_modified(self) -> bool:
        return self.extensions is not None

    @property
    def modified_payload(self) -> Any:
        """The modified payload (a dict, or a Message for CMF), or None."""
        if self.payload is not None and self._decoded_payload is None:
            self._decoded_payload = self.payload.fresh()
        return self._decoded_payload

    @property
    def modified_extensions(self) -> dict[str, Any] | None:
        if self.extensions is not None and self._decoded_extensions is None:
            self._decoded_extensions = self.extensions.fresh()
        return self._decoded_extensions  # type: ignore[no-any-return]

    @property
    def modified_payload_wire(self) -> bytes | None:
        """The modified payload's canonical MessagePack (what a host receives), or None."""
        return self.payload.wire if self.payload is not None else None

    @property
    def modified_extensions_wire(self) -> bytes | None:
        return self.extensions.wire if self.extensions is not None else None

    @property
    def unchanged(self) -> bool:
        """Nobody objected, changed, reported or asked anything: the result a host gets
        as the schema's unchanged-result bytes."""
        return (
            self.continue_processing
            and not self.errors
            and not self.metadata
            and self.payload is None
            and self.extensions is None
            and not self.retry_delay_ms
            and not self.http_headers
        )


class Invocation:
    """One invoke in progress. payload and extensions are the current snapshots;
    states_in is the caller's context (never changed), states the plugins' private
    copies of it for this invoke. It is the source of the plugins' contexts
    (cpexrt.plugin.bound_context): what a plugin never reads is never copied."""

    __slots__ = (
        "hook",
        "payload_type",
        "payload",
        "extensions",
        "has_extensions",
        "states_in",
        "states",
        "global_state",
        "deadline",
        "invoke_timeout",
        "invoke_timeout_source",
        "limits",
        "request",
        "observer",
    )

    def __init__(
        self,
        hook: str,
        payload_type: int,
        payload: payloads.Snapshot,
        extensions: payloads.Snapshot,
        has_extensions: bool,
        states_in: dict[str, dict[str, Any]],
        global_state: dict[str, Any],
        deadline: float,
        invoke_timeout: float,
        limits: payloads.Limits,
        request: dict[str, Any] | None = None,
        invoke_timeout_source: str = "plugin_settings.invoke_timeout",
    ) -> None:
        self.hook, self.payload_type, self.payload = hook, payload_type, payload
        self.extensions, self.has_extensions = extensions, has_extensions
        self.states_in = states_in
        self.states: dict[str, dict[str, Any]] = {}
        self.global_state = global_state
        self.deadline, self.invoke_timeout, self.limits = deadline, invoke_timeout, limits
        self.invoke_timeout_source = invoke_timeout_source  # what set the limit, for the message
        self.request = request  # the host's global context, checked; plugins get copies
        # The invoke's spans, metrics and decision record (engine/observe.py), or None.
        self.observer: observe.Observation | None = None

    def state_for(self, name: str) -> dict[str, Any]:
        """The plugin's local state for this invoke: a private copy of what the caller's
        context holds, so a failed invoke leaves that context unchanged."""
        state = self.states.get(name)
        if state is None:
            # Plugins may read their context on other threads (off-thread, concurrent):
            # setdefault is atomic, so two first reads still share one copy.
            prior = self.states_in.get(name)
            state = self.states.setdefault(name, _copy_state(prior) if prior else {})
        return state

    def carried_states(self) -> dict[str, dict[str, Any]]:
        """The states for the request's next hook: a map nobody changes once the
        invoke is over (a copy of the invoke's own, which a plugin still running on
        another thread, past its time, could add its state to)."""
        if not self.states:
            return self.states_in
        return {**self.states_in, **self.states}

    # -- the source of PluginContext's fields (read when a plugin first reads them) --

    def context_state(self, plugin: LoadedPlugin) -> dict[str, Any]:
        return self.state_for(plugin.spec.name)

    def context_request_state(self) -> dict[str, Any]:
        return self.state_for(REQUEST_STATE)

    def context_held_states(self, plugin: LoadedPlugin) -> tuple[Any, Any]:
        """The plugin's state and the request's shared state as state_for would copy
        them (None: none), for their truth only: never handed out, never changed."""
        states, states_in = self.states, self.states_in
        state = states.get(plugin.spec.name)
        if state is None:
            state = states_in.get(plugin.spec.name)
        request_state = states.get(REQUEST_STATE)
        if request_state is None:
            request_state = states_in.get(REQUEST_STATE)
        return state, request_state

    def context_view(self, plugin: LoadedPlugin) -> tuple[dict[str, Any] | None, bool, bool]:
        """context_request(), and the truth of each of context_held_states(plugin), in
        one call."""
        request, states, states_in = self.request, self.states, self.states_in
        if request is not None:
            request = _copy_plain(request)
        if not states and not states_in:
            return request, False, False  # nothing held (most calls)
        name = plugin.spec.name
        state = states.get(name)
        if state is None:
            state = states_in.get(name)
        request_state = states.get(REQUEST_STATE)
        if request_state is None:
            request_state = states_in.get(REQUEST_STATE)
        return request, bool(state), bool(request_state)

    def context_request(self) -> dict[str, Any] | None:
        request = self.request
        return _copy_plain(request) if request is not None else None

    def context_extensions(self, plugin: LoadedPlugin, snapshot: payloads.Snapshot | None) -> dict[str, Any]:
        """The plugin's capability-filtered copy of the extensions the call carried
        when it started (snapshot; None: none)."""
        if snapshot is None:
            return {}
        view = snapshot.copy()
        grant = plugin.grant
        # gating.hide's first test, inline: most views hold no slot the plugin may not read.
        return view if grant.hidden_roots.isdisjoint(view) else gating.hide(view, grant)


# Types whose values are immutable: copied, they are themselves (as deepcopy has it).
_IMMUTABLE = frozenset({str, int, float, bool, bytes, type(None)})
_MISSING = object()


def _copy_plain(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """copy.deepcopy(value), faster for plain data (a state map, the request): dicts and
    lists are rebuilt here, with deepcopy's memo, so values shared inside value stay
    shared in the copy; anything else goes through deepcopy with the same memo."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if memo is None:
        memo = {}
    else:
        done = memo.get(id(value), _MISSING)
        if done is not _MISSING:
            return done
    immutable = _IMMUTABLE
    if kind is dict:
        out: dict[Any, Any] = {}
        memo[id(value)] = out
        for key, item in value.items():
            if type(key) not in immutable:
                key = copy.deepcopy(key, memo)
            out[key] = item if type(item) in immutable else _copy_plain(item, memo)
        return out
    if kind is list:
        items: list[Any] = []
        memo[id(value)] = items
        for item in value:
            items.append(item if type(item) in immutable else _copy_plain(item, memo))
        return items
    return copy.deepcopy(value, memo)


def _copy_state(prior: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = _copy_plain(prior)
    return copied


def plan_order(plugins: list[LoadedPlugin]) -> list[LoadedPlugin]:
    """The execution order of a hook's plugins, computed once at load: by phase, then
    priority, then config order. Disabled-mode plugins are left out."""
    rank = {mode: i for i, (mode, _) in enumerate(PHASES)}
    rank[Mode.FIRE_AND_FORGET] = len(PHASES)
    runnable = [p for p in plugins if p.spec.mode in rank]
    return sorted(runnable, key=lambda p: (rank[p.spec.mode], p.spec.priority, p.index))


_AUTHORITY = dict(PHASES)


class Plan:
    """A hook's plugins for one route, compiled once (at load, or when a route is
    first resolved): the sequential, transform and audit steps in order with their
    phase's authority, the concurrent group, the fire-and-forget followers. A plugin
    that on_error: disable switched off is skipped when the plan runs."""

    __slots__ = ("hook", "plugins", "steps", "concurrent", "followers", "follower_names", "final")

    def __init__(self, hook: str, plugins: list[LoadedPlugin]) -> None:
        self.hook = hook
        self.plugins = tuple(plugins)  # in plan_order
        # (plugin, its phase's authority, its handler of the hook, whether that runs
        # inline: on the caller's thread, over a decoded copy; see _step)
        self.steps = tuple(
            (p, _AUTHORITY[p.spec.mode], p.handlers[hook], not p.takes_wire and not isinstance(p.handlers[hook], driver.Remote))
            for p in plugins
            if p.spec.mode in _AUTHORITY and p.spec.mode is not Mode.CONCURRENT
        )
        self.concurrent = tuple(p for p in plugins if p.spec.mode is Mode.CONCURRENT)
        self.followers = tuple(p for p in plugins if p.spec.mode is Mode.FIRE_AND_FORGET)
        self.follower_names = tuple(p.name for p in self.followers)
        # The step after which no plugin asks a snapshot for a copy on the invoking thread
        # (fire-and-forget followers decode their own): it may have the snapshot's value.
        self.final = self.steps[-1][0] if self.steps and not self.concurrent else None

    def __len__(self) -> int:
        return len(self.plugins)

    def __iter__(self) -> Any:
        return iter(self.plugins)

    def narrowed(self, admits: Callable[[LoadedPlugin], bool]) -> Plan:
        """The plan of the plugins admits selects, in the same order."""
        return Plan(self.hook, [p for p in self.plugins if admits(p)])


def run_pipeline(plan: Plan, inv: Invocation) -> PipelineOutcome:
    """Runs a compiled plan over the invocation."""
    out = PipelineOutcome()
    obs = inv.observer
    final = plan.final
    for plugin, authority, handler, inline in plan.steps:
        if plugin.disabled:
            continue
        if obs is None:
            _step(plugin, handler, inline, inv, authority, out, plugin is final)
        else:
            mark = obs.begin(plugin, inv, out)
            try:
                _step(plugin, handler, inline, inv, authority, out, plugin is final)
            except BaseException as exc:
                obs.end(plugin, mark, inv, out, exc)
                raise
            obs.end(plugin, mark, inv, out)
        if not out.continue_processing:
            break
    if plan.concurrent and out.continue_processing:
        concurrent = [p for p in plan.concurrent if not p.disabled]
        if concurrent:
            _run_concurrent(concurrent, inv, _AUTHORITY[Mode.CONCURRENT], out)
    followers = plan.followers
    if followers:
        names = plan.follower_names
        for p in followers:
            if p.disabled:  # on_error: disable switched one off
                followers = tuple(p for p in followers if not p.disabled)
                names = tuple(p.name for p in followers)
                break
        if followers:
            out.background = _fire_and_forget(followers, names, inv)  # before the call returns
    out.states = inv.carried_states()
    return out


def _step(
    plugin: LoadedPlugin, handler: Any, inline: bool, inv: Invocation, authority: Authority, out: PipelineOutcome, last: bool
) -> None:
    """Runs one sequential, transform or audit plugin and takes its result. handler:
    its handler of the hook; inline: it runs on this thread (driver.call's local path,
    written out here: it is every plugin run's); last: the plan's final copy of the
    payload (Snapshot.copy)."""
    payload = payloads.Encoded(inv.payload.wire, inv.payload_type) if plugin.takes_wire else inv.payload.copy(last)
    ctx = bound_context(inv, plugin, inv.global_state, inv.extensions if inv.has_extensions else None)
    deadline = _monotonic() + plugin.timeout
    if deadline > inv.deadline:
        deadline = inv.deadline
    try:
        if inline:
            try:
                try:
                    _arm(deadline)
                    value = handler(payload, ctx)
                    if type(value) is CoroutineType:  # exact type: an ABC isinstance is slow here
                        value = driver.drive(value, deadline)
                finally:
                    try:
                        _disarm()
                    except PluginDeadline:  # landed while disarming
                        driver.disarm_retrying()
            except (PluginDeadline, TimeoutError):  # as driver.call has them
                raise driver.HandlerTimeout from None
        else:
            value = driver.call(handler, (payload, ctx), deadline)
    except driver.HandlerTimeout:
        _timed_out(plugin, inv, out)
        return
    except BaseException as exc:  # noqa: BLE001 - whatever a plugin raises is its own failure
        _failed(plugin, inv, out, driver.describe(exc), driver.code_of(exc))
        return
    if value is None or (value is _SHARED_ALLOW and _SHARED_ALLOW.__dict__ == _PLAIN_ALLOW):
        return  # a plain allow: nothing to take (a shared allow some plugin wrote into is taken as it is)
    _apply(plugin, inv, authority, value, out)


_arm = driver.arm  # both set anew by driver.use_watchdog
_disarm = driver.disarm


def _args(plugin: LoadedPlugin, inv: Invocation, last: bool) -> tuple[Any, PluginContext]:
    """The handler's arguments: its own copy of the payload (last: the plan's final
    copy, Snapshot.copy), and a context that copies the extensions (capability-filtered),
    its local state, the request's shared state and the request when the plugin first
    reads them: many plugins never look."""
    return (
        payloads.Encoded(inv.payload.wire, inv.payload_type) if plugin.takes_wire else inv.payload.copy(last),
        bound_context(inv, plugin, inv.global_state, inv.extensions if inv.has_extensions else None),
    )


# The context table's entry for PluginContext.request_state (no plugin name is empty).
REQUEST_STATE = ""
_monotonic = time.monotonic


def _deadline(plugin: LoadedPlugin, inv: Invocation) -> float:
    return min(time.monotonic() + plugin.timeout, inv.deadline)


def _apply(plugin: LoadedPlugin, inv: Invocation, authority: Authority, value: Any, out: PipelineOutcome) -> None:
    """Takes a handler's return value into the outcome, within the phase's authority
    and (for extensions) the plugin's capabilities. Everything it returned is checked
    first; a refusal is the plugin's failure and none of its changes apply."""
    try:
        result = _as_result(value)
        if plugin.reports_unenforced and not (authority.may_deny and authority.may_modify):
            result = _unenforced(plugin, inv, authority, result, out)  # nothing to report where both are allowed
        if not result.continue_processing and not authority.may_deny:
            mode = plugin.spec.mode.value
            raise Refusal("deny_refused", f"denied, but a {mode} plugin may not deny; its deny was refused")
        modifies = result.modified_payload is not None or result.modified_extensions is not None
        if modifies and not authority.may_modify:
            mode = plugin.spec.mode.value
            raise Refusal(
                "modify_refused",
                f"returned a modification, but a {mode} plugin may not modify the payload or extensions; the change was refused",
            )
        metadata = payloads.plain_copy(result.metadata, "metadata", "metadata") if result.metadata else None
        headers = payloads.plain_copy(result.http_headers, "http_headers", "http_headers") if result.http_headers else None
        if not result.continue_processing:
            _deny(plugin, inv, out, result.violation, metadata)
            _asks(out, result.retry_delay_ms, headers)
            return
        new_payload = (
            payloads.accept(inv.payload_type, result.modified_payload, inv.limits)
            if result.modified_payload is not None
            else None
        )
        new_extensions = (
            _accept_extensions(plugin, inv, result.modified_extensions) if result.modified_extensions is not None else None
        )
    except payloads.Refusal as refused:
        _failed(plugin, inv, out, refused.why, refused.code, getattr(refused, "details", None))
        return
    if isinstance(new_extensions, _WriteRefused):
        _failed(plugin, inv, out, new_extensions.why, "extension_write_refused", new_extensions.details, own=True)
        return
    if metadata:
        out.metadata.update(metadata)
    _asks(out, result.retry_delay_ms, headers)
    if new_payload is not None:
        inv.payload = out.payload = new_payload
        out._decoded_payload = None
    if new_extensions is not None:
        inv.extensions = out.extensions = new_extensions
        inv.has_extensions = True
        out._decoded_extensions = None


class Refusal(payloads.Refusal):
    """A result the engine does not take; details go to the PluginError."""

    def __init__(self, code: str, why: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(code, why)
        self.details = details


def _asks(out: PipelineOutcome, retry_delay_ms: int, headers: dict[str, str] | None) -> None:
    """What plugins ask of the host: the longest retry delay, the union of headers."""
    if retry_delay_ms > out.retry_delay_ms:
        out.retry_delay_ms = retry_delay_ms
    if headers:
        out.http_headers = {**(out.http_headers or {}), **headers}


def _unenforced(
    plugin: LoadedPlugin, inv: Invocation, authority: Authority, result: PluginResult, out: PipelineOutcome
) -> PluginResult:
    """A py-cpex plugin's deny or modification its phase has no authority for: not
    applied, as py-cpex does not apply it, and reported rather than dropped."""
    mode = plugin.spec.mode.value
    denies = not result.continue_processing and not authority.may_deny
    modifies = (result.modified_payload is not None or result.modified_extensions is not None) and not authority.may_modify
    if not denies and not modifies:
        return result
    what = []
    details: dict[str, Any] = {}
    if denies:
        v = result.violation
        code = getattr(v, "code", None) or "denied"
        what.append(f"denied ({code}: {getattr(v, 'reason', '')})")
        details["violation_code"] = code
    if modifies:
        what.append("modified the payload or extensions")
    LOG.info(
        "plugin %r %s on hook %r; a %s plugin's verdict is not enforced",
        plugin.name,
        "denied" + (" and modified" if modifies else "") if denies else "modified",
        inv.hook,
        observe.mode_of(plugin),
        extra={"plugin": plugin.name, "hook": inv.hook, "code": "not_enforced", **details},
    )
    out.errors.append(
        PluginError(
            plugin_name=plugin.name,
            code="not_enforced",
            message=f"plugin {plugin.name!r} {' and '.join(what)}; a {mode} plugin's verdict is not enforced (as in py-cpex)",
            details=details or None,
        )
    )
    return dataclasses.replace(
        result,
        continue_processing=True if denies else result.continue_processing,
        violation=None if denies else result.violation,
        modified_payload=None if modifies else result.modified_payload,
        modified_extensions=None if modifies else result.modified_extensions,
    )


def _as_result(value: Any) -> PluginResult:
    if value is None:
        return _ALLOWED
    if not isinstance(value, PluginResult):
        raise Refusal(
            "invalid_result", f"returned {type(value).__name__}; expected a PluginResult (allow / deny / modify) or None"
        )
    if type(value.continue_processing) is not bool:
        raise Refusal("invalid_result", f"returned continue_processing={value.continue_processing!r}; expected True or False")
    if value.metadata is not None and not isinstance(value.metadata, dict):
        raise Refusal("invalid_result", f"returned metadata of type {type(value.metadata).__name__}; expected a map")
    if type(value.retry_delay_ms) is not int or value.retry_delay_ms < 0:
        raise Refusal(
            "invalid_result", f"returned retry_delay_ms={value.retry_delay_ms!r}; expected a whole number of milliseconds >= 0"
        )
    headers = value.http_headers
    if headers is not None and not (
        isinstance(headers, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise Refusal("invalid_result", "returned http_headers that are not a map of strings to strings")
    return value


_ALLOWED = PluginResult()
# Every field of an untouched allow(): the shared one compared with it, whole.
_PLAIN_ALLOW = dict(PluginResult().__dict__)


def _deny(plugin: LoadedPlugin, inv: Invocation, out: PipelineOutcome, given: Any, metadata: dict[str, Any] | None) -> None:
    """Stops the pipeline with the plugin's violation. A violation that cannot be
    taken is the plugin's failure; under on_error ignore / disable the deny still
    stands (with what could be kept of the violation), never an allow."""
    violation, problem = _violation(plugin, given)
    if problem is not None:
        _failed(plugin, inv, out, problem.why + "; the call is denied all the same", problem.code)
    if metadata:
        out.metadata.update(metadata)
    out.violation = violation
    out.continue_processing = False


def _violation(plugin: LoadedPlugin, given: Any) -> tuple[PluginViolation, Refusal | None]:
    fallback = PluginViolation(code="denied", reason=f"denied by plugin {plugin.name!r}", plugin_name=plugin.name)
    if given is None:
        return fallback, None
    try:
        violation = given if isinstance(given, PluginViolation) else PluginViolation.model_validate(given)
        wire = payloads.plain_copy(violation.to_wire(), "violation", "violation")
        # The engine names the plugin: set in the private copy before its check (as
        # model_copy(update=...) would set it after, counted as set), no copy of the record.
        wire["plugin_name"] = plugin.name
        checked: PluginViolation = PluginViolation.from_wire(wire, "violation")
    except payloads.Refusal as refused:
        return fallback, Refusal(refused.code, refused.why)
    except Exception as exc:  # noqa: BLE001 - a malformed violation is the plugin's failure
        return fallback, Refusal("violation_invalid", f"returned an invalid violation: {exc}")
    return checked, None


class _WriteRefused:
    """Writes to extension slots the plugin may not write (extension_write_refused):
    returned by _accept_extensions rather than raised, as a refusal of the commonest
    kind (a plugin without the capability proposing its edited view) costs less so."""

    __slots__ = ("why", "details")

    def __init__(self, refusals: list[gating.Refusal]) -> None:
        if len(refusals) == 1:  # the commonest: one slot written without its capability
            listed = refusals[0].listed
            fields = [refusals[0].field]
        else:
            fields = []
            each: list[str] = []
            for r in refusals:  # a loop: a generator and a comprehension cost a frame each
                fields.append(r.field)
                each.append(r.listed)
            listed = "; ".join(each)
        self.why = f"may not write {listed}; none of its changes were applied"
        self.details = {"fields": fields}


def _accept_extensions(plugin: LoadedPlugin, inv: Invocation, given: Any) -> payloads.Snapshot | _WriteRefused | None:
    """The call's extensions with the plugin's writes, or None when it changed
    nothing; a refused write refuses them all (_WriteRefused, naming the fields; any
    other refusal is raised)."""
    proposed = given if type(given) is dict else gating.as_wire(given)
    if not isinstance(proposed, dict):
        raise Refusal(
            "modified_extensions_invalid",
            f"returned modified extensions of type {type(proposed).__name__}; expected a map or Extensions",
        )
    # Compared with a pristine value of what the plugin was shown (it may have edited
    # its own copy in place): the snapshot's read-only one (gating.accept changes
    # neither) when no slot it may not read is present in it, else a copy with those
    # slots removed.
    if inv.has_extensions:
        current = inv.extensions.peek()
        grant = plugin.grant
        # (hides_any's first test inline: most calls carry no slot the plugin may not read)
        hides = not grant.hidden_roots.isdisjoint(current) and gating.hides_any(current, grant)
        shown = gating.hide(inv.extensions.fresh(), grant) if hides else current
    else:
        current = shown = {}
    if proposed == shown:
        # What it was shown, unchanged (one comparison in C, the one accept() makes
        # of each top-level slot; a view edited in place differs from the pristine
        # shown value): nothing to take, as accept() would find.
        return None
    merged, refusals, changed = gating.accept(current, shown, proposed, plugin.grant)
    if refusals:
        return _WriteRefused(refusals)
    if not changed:
        return None
    return payloads.accept_extensions(merged, changed, inv.limits)


def _timed_out(plugin: LoadedPlugin, inv: Invocation, out: PipelineOutcome) -> None:
    if time.monotonic() >= inv.deadline:
        LOG.warning(
            "hook %r: the invoke ran past its limit of %gs (%s) in plugin %r; the call fails",
            inv.hook,
            inv.invoke_timeout,
            inv.invoke_timeout_source,
            plugin.name,
            extra={"plugin": plugin.name, "hook": inv.hook, "code": "invoke_timeout"},
        )
        exc = PipelineTimeoutError(
            f"hook {inv.hook!r}: the invoke ran past its limit of {inv.invoke_timeout:g}s ({inv.invoke_timeout_source}) "
            f"in plugin {plugin.name!r}"
        )
        exc.plugin_code = "invoke_timeout"  # type: ignore[attr-defined]
        raise exc
    _failed(plugin, inv, out, f"timed out after {plugin.timeout:g}s", "plugin_timeout")


def _failed(
    plugin: LoadedPlugin,
    inv: Invocation,
    out: PipelineOutcome,
    why: str,
    code: str = "plugin_error",
    details: dict[str, Any] | None = None,
    own: bool = False,
) -> None:
    """on_error: fail raises (naming the plugin and the code), ignore records, disable
    records and switches the plugin off for the rest of the manager's life. own: why,
    code and details are the engine's own making (a str, a str literal, a fresh map
    keyed by str that nobody else holds), so the record takes them with no check and
    no copy (_own_error); else _plugin_error checks them."""
    name = plugin.spec.name
    message = f"plugin {name!r} {why}"
    on_error = plugin.spec.on_error
    if _reaches_a_handler(LOG, logging.WARNING):  # _log_failure's test, before its call
        _log_failure(plugin, inv.hook, code, message, on_error)
    if on_error is OnError.FAIL:
        error = PipelineTimeoutError if code == "plugin_timeout" else PipelineError
        exc = error(f"hook {inv.hook!r}: {message} (code {code})")
        exc.plugin_code = code  # type: ignore[union-attr]  # for observe: the failing plugin's code
        raise exc
    out.errors.append(_own_error(name, message, code, details) if own else _plugin_error(name, message, code, details))
    if on_error is OnError.DISABLE:
        plugin.disabled = True


def _plugin_error(name: str, message: str, code: str, details: dict[str, Any] | None) -> PluginError:
    """PluginError(plugin_name=name, message=..., code=..., details=...). The engine's
    own values (texts it made, a details map of its own) are taken as the record's
    check would take them, without the check; anything else (a code from elsewhere,
    details not keyed by strings) is checked by the constructor, which names the field."""
    if (
        type(name) is str
        and type(message) is str
        and type(code) is str
        and (details is None or (type(details) is dict and _ONLY_STR.issuperset(map(type, details))))
    ):
        error: PluginError = _new_record(PluginError)
        _set_dict(
            error,
            {
                "plugin_name": name,
                "message": message,
                "code": code,
                "details": None if details is None else details.copy(),  # as the check copies it
                "proto_error_code": None,
            },
        )
        _set_fields_set(error, {"plugin_name", "message", "code", "details"})  # the names given
        _set_extra(error, None)
        return error
    return PluginError(plugin_name=name, message=message, code=code, details=details)


def _own_error(name: str, message: str, code: str, details: dict[str, Any] | None) -> PluginError:
    """_plugin_error's record of values the engine made itself (_failed's own): the
    same record, without their check and without a copy of details (a map made for
    this error alone). A plugin's name is a str (checked at load)."""
    error: PluginError = _new_record(PluginError)
    _set_dict(
        error,
        {"plugin_name": name, "message": message, "code": code, "details": details, "proto_error_code": None},
    )
    _set_fields_set(error, {"plugin_name", "message", "code", "details"})  # the names given
    _set_extra(error, None)
    return error


# What each on_error does, in the log line of a failure.
_CONSEQUENCE = {
    OnError.FAIL: "on_error fail: the call fails",
    OnError.IGNORE: "on_error ignore: the call goes on without its changes",
    OnError.DISABLE: "on_error disable: the plugin is switched off for the manager's life",
}
# The longest plugin-provided text a log line carries.
_LOGGED_MESSAGE = 300


def _log_failure(plugin: LoadedPlugin, hook: str, code: str, message: str, on_error: OnError) -> None:
    """One WARNING per plugin failure: plugin, hook, code and on_error as fields. The
    message is the engine's (with the plugin's exception text), never payload data.
    Called only when it would reach a handler (_reaches_a_handler: a record costs more
    than the rest of a failure); the failure itself is recorded all the same, by the
    caller."""
    LOG.warning(
        "hook %r: %s (code %s); %s",
        hook,
        message[:_LOGGED_MESSAGE],
        code,
        _CONSEQUENCE[on_error],
        extra={"plugin": plugin.name, "hook": hook, "code": code, "on_error": on_error.value},
    )


def _reaches_a_handler(logger: logging.Logger, level: int) -> bool:
    """Whether a record of level on logger would reach a handler that does anything
    (as Logger.callHandlers walks; the cpexrt logger's NullHandler does nothing, and
    an embedded interpreter often has no other), or a filter or record factory that
    might."""
    if not logger.isEnabledFor(level):
        return False
    if logger.filters or logging.getLogRecordFactory() is not logging.LogRecord:
        return True
    found = False
    node: logging.Logger | None = logger
    while node is not None:
        handlers = node.handlers
        if handlers:  # most loggers on the way have none
            for handler in handlers:
                found = True
                if type(handler) is not logging.NullHandler and level >= handler.level:
                    return True
        node = node.parent if node.propagate else None
    if found:
        return False
    last = logging.lastResort
    return last is None or level >= last.level


def _run_concurrent(phase: list[LoadedPlugin], inv: Invocation, authority: Authority, out: PipelineOutcome) -> None:
    """The plugins run together: each is started inline, those that suspend finish
    together on the caller's loop. The first deny halts the rest."""
    suspended: list[driver.Suspended] = []
    obs = inv.observer
    marks: dict[str, Any] = {}

    def settle(plugin: LoadedPlugin, ok: bool, value: Any) -> bool:
        if obs is None:
            return _settle(plugin, ok, value)
        _, mark = marks.pop(plugin.name)
        mark.refresh(out, inv)
        try:
            halted = _settle(plugin, ok, value)
        except BaseException as exc:
            obs.end(plugin, mark, inv, out, exc)
            raise
        obs.end(plugin, mark, inv, out)
        return halted

    def _settle(plugin: LoadedPlugin, ok: bool, value: Any) -> bool:
        if not ok:
            if isinstance(value, driver.HandlerTimeout):
                _timed_out(plugin, inv, out)
            else:
                _failed(plugin, inv, out, driver.describe(value), driver.code_of(value))
            return False
        _apply(plugin, inv, authority, value, out)
        return not out.continue_processing

    try:
        for plugin in phase:
            deadline = _deadline(plugin, inv)
            if obs is not None:
                marks[plugin.name] = (plugin, obs.begin(plugin, inv, out))
            args = _args(plugin, inv, plugin is phase[-1])
            try:
                done, value, coro = driver.begin(plugin.handlers[inv.hook], args, deadline)
            except BaseException as exc:  # noqa: BLE001 - contained: a timeout or the plugin's failure
                settle(plugin, False, exc)
                continue
            if not done:
                suspended.append(driver.Suspended(plugin, coro, value, deadline))
            elif settle(plugin, True, value):
                break
        else:
            if suspended:
                driver.finish_all(suspended, settle)
            _halted(obs, marks)
            return
    except BaseException:
        for s in suspended:
            s.coro.close()
        raise
    for s in suspended:  # halted by a deny before they finished
        s.coro.close()
    _halted(obs, marks)


def _halted(obs: observe.Observation | None, marks: dict[str, Any]) -> None:
    """Records the concurrent plugins a deny halted before they settled."""
    if obs is not None:
        for plugin, mark in marks.values():
            obs.cancelled(plugin, mark)


def _fire_and_forget(followers: tuple[LoadedPlugin, ...], names: tuple[str, ...], inv: Invocation) -> BackgroundBatch:
    """Queues the fire-and-forget plugins (names: theirs) for the fire-and-forget thread with the
    pipeline's final payload and extensions; their failures come back through the
    handle."""
    tasks = BackgroundBatch(names, len(followers))
    hook, global_state = inv.hook, inv.global_state
    payload = inv.payload.recipe()
    extensions = inv.extensions.recipe() if inv.has_extensions else None
    put = RUNNER.put
    for plugin in followers:
        put(_Follower(plugin, hook, tasks, payload, extensions, global_state))
    return tasks


class _Follower:
    """One fire-and-forget plugin's run, called on the fire-and-forget thread: returns its
    PluginError (or None), or a coroutine finishing an async handler on the runtime loop. It gets
    its own copies of the final payload and extensions, decoded there from what
    it keeps of their snapshots (Snapshot.recipe: bytes, not decoded values). It is
    queued as it is (background.Work: it carries its batch); all it keeps is shared or
    bytes, so an invoke leaves two objects alive until its followers ran (this and the
    batch): what stays alive past an invoke is what the cyclic GC traverses."""

    __slots__ = (
        "plugin",
        "hook",
        "batch",
        "global_state",
        "payload_wire",
        "payload_decode",
        "payload_change",
        "payload_arg",
        "ext_wire",
        "ext_decode",
        "ext_change",
        "ext_arg",
    )

    def __init__(
        self,
        plugin: LoadedPlugin,
        hook: str,
        batch: BackgroundBatch,
        payload: payloads.Recipe,
        extensions: payloads.Recipe | None,
        global_state: dict[str, Any],
    ) -> None:
        self.plugin, self.hook, self.batch, self.global_state = plugin, hook, batch, global_state
        # The recipes' fields, not the tuples: a tuple holding a function is one more
        # object for the GC.
        self.payload_wire, self.payload_decode, self.payload_change, self.payload_arg = payload
        if extensions is None:
            self.ext_wire = None
        else:
            self.ext_wire, self.ext_decode, self.ext_change, self.ext_arg = extensions

    def __call__(self) -> Any:
        plugin = self.plugin
        try:
            ctx = detached_context(self.global_state, self._extensions if self.ext_wire is not None else None)
            payload = payloads.remake(self.payload_wire, self.payload_decode, self.payload_change, self.payload_arg)
            done, value = start_inline(plugin.handlers[self.hook], (payload, ctx), plugin.timeout)
        except BaseException as exc:  # noqa: BLE001 - contained
            return self.settle(exc)
        if done:
            return None if value is None else self.settle(value)
        return self.rest(value)

    def _extensions(self) -> dict[str, Any]:
        """The plugin's capability-filtered copy of the extensions (PluginContext's
        loader: called when the plugin first reads them)."""
        value = payloads.remake(self.ext_wire, self.ext_decode, self.ext_change, self.ext_arg)  # type: ignore[arg-type]
        return gating.hide(value, self.plugin.grant)

    async def rest(self, awaitable: Any) -> PluginError | None:
        try:
            return self.settle(await awaitable)
        except asyncio.CancelledError as exc:  # the handler's own: the runner does not cancel
            return self.settle(driver.PluginRaised(exc))
        except Exception as exc:  # noqa: BLE001 - contained (BaseExceptions come wrapped)
            return self.settle(exc)

    def settle(self, value: Any) -> PluginError | None:
        plugin = self.plugin
        if isinstance(value, BaseException):
            if isinstance(value, (asyncio.TimeoutError, driver.HandlerTimeout)):
                return self.failed(f"timed out after {plugin.timeout:g}s", "plugin_timeout")
            return self.failed(driver.describe(value), driver.code_of(value))
        try:
            result = _as_result(value)
        except payloads.Refusal as refused:
            return self.failed(refused.why, refused.code)
        if not result.continue_processing:
            return self.failed("denied, but a fire_and_forget plugin may not deny; its deny was refused", "deny_refused")
        if result.modified_payload is not None or result.modified_extensions is not None:
            return self.failed(
                "returned a modification, but a fire_and_forget plugin may not modify; the change was refused", "modify_refused"
            )
        return None

    def failed(self, message: str, code: str) -> PluginError:
        plugin = self.plugin
        on_error = plugin.spec.on_error
        LOG.warning(
            "hook %r: fire-and-forget plugin %r %s (code %s); reported through the background handle%s",
            self.hook,
            plugin.name,
            message[:_LOGGED_MESSAGE],
            code,
            "; on_error disable: the plugin is switched off for the manager's life" if on_error is OnError.DISABLE else "",
            extra={"plugin": plugin.name, "hook": self.hook, "code": code, "on_error": on_error.value},
        )
        if on_error is OnError.DISABLE:
            plugin.disabled = True
        return PluginError(plugin_name=plugin.name, message=f"plugin {plugin.name!r} {message}", code=code)
