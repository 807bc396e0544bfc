"""PluginManager over libcpex.so: the same calls a Go host makes, in Python style."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast, overload

from cpexrt._generated import calls
from cpexrt._generated.errors import PAYLOAD_CMF_MESSAGE, PAYLOAD_GENERIC, UNCHANGED_RESULTS
from cpexrt._generated.records import (
    CallOptions,
    DecisionRecord,
    Extensions,
    MessagePayload,
    PipelineResult,
    PluginError,
    PluginStats,
    PluginViolation,
)
from cpexrt.errors import InvalidHandleError, InvalidInputError
from cpexrt.host.library import Library, load_library
from cpexrt.wire import WireRecord, clone, pack, unpack


class _Handle:
    """Owns one library handle; close() releases it once, later uses fail cleanly.

    The handle sits in a one-element list: list.pop() is atomic under the GIL, so of
    two threads taking it (an invoke, a close) exactly one gets it, with no lock to
    make per handle and take on every invoke."""

    __slots__ = ("_library", "_cell", "__weakref__")
    _kind = "handle"
    # The generated call that frees the handle (calls.free_context, calls.free_background).
    _free: Callable[[Library, Any], None]

    def __init__(self, library: Library, ptr: Any) -> None:
        self._library = library
        self._cell = [ptr]

    def _take(self) -> Any:
        """The handle, now held by the caller alone; None when closed, consumed or held."""
        try:
            return self._cell.pop()
        except IndexError:
            return None

    def _put_back(self, ptr: Any) -> None:
        """Returns a handle taken for a call that failed (the library kept it valid)."""
        self._cell.append(ptr)

    def _live(self) -> Any:
        try:
            return self._cell[0]
        except IndexError:
            raise InvalidHandleError(f"{self._kind}: already closed or consumed") from None

    @property
    def closed(self) -> bool:
        return not self._cell

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Releases the handle; a no-op when closed, consumed, or its manager shut down."""
        cell = self._cell
        if not cell:
            return
        try:
            ptr = cell.pop()
        except IndexError:
            return  # taken by another thread meanwhile
        try:
            self._free(self._library, ptr)
        except InvalidHandleError:
            pass  # already released by the manager's shutdown: close() only promises "gone"

    def __del__(self) -> None:
        # A dropped handle is released; never raise from a finaliser.
        try:
            cell = self._cell
            if cell:
                self._free(self._library, cell.pop())
        except Exception:  # noqa: BLE001
            pass


class ContextTable(_Handle):
    """The context of a request, to pass to its next invoke. A successful invoke
    consumes it; one that raises leaves it usable (and unchanged), e.g. for a retry.
    Only one invoke at a time may hold it.

    A context manager: leaving the `with` block closes the table. When an invoke in the
    block consumed it, or it was closed already, or its manager shut down, leaving is a
    no-op; when the last invoke raised, the table (still valid) is freed then. close()
    releases the table; a no-op when closed, consumed, or its manager shut down."""

    __slots__ = ()
    _kind = "context"
    _free = staticmethod(calls.free_context)


class BackgroundTasks(_Handle):
    """The fire-and-forget tasks of an invoke.

    A context manager: leaving the `with` block releases the handle (as close(): the
    tasks go on; call wait() inside the block for their errors). Leaving after a close,
    or after the manager shut down, is a no-op. close() releases the handle (the tasks
    go on); a no-op when closed or its manager shut down."""

    __slots__ = ()
    _kind = "background"
    _free = staticmethod(calls.free_background)

    async def wait_async(self) -> list[PluginError]:
        """wait() for asyncio code, in a worker thread."""
        return await asyncio.to_thread(self.wait)

    def wait(self) -> list[PluginError]:
        """Blocks until the tasks finished; the errors of those that failed."""
        records = unpack(calls.wait_background(self._library, self._live()), "background errors")
        return [PluginError.model_validate(r) for r in records]


P = TypeVar("P")
W = TypeVar("W", bound=WireRecord)


class InvokeResult(Generic[P]):
    """The outcome of an invoke: the PipelineResult record plus the decoded
    modification, the context table for the request's next hook and the
    fire-and-forget tasks (close the ones you do not use, or let them be finalised).

    The library sends its payload type's unchanged result (UNCHANGED_RESULTS, from the
    schema) for every result nobody objected to or changed; such a result is made into
    a PipelineResult only when `result` is read (denied and the other properties know
    its values): result None and unchanged_type set. Any other result is decoded and
    validated by the invoke, which raises when it is not a valid PipelineResult."""

    __slots__ = ("_result", "_unchanged_type", "context", "background", "payload_class")

    def __init__(
        self,
        result: PipelineResult | None,
        context: ContextTable | None,
        background: BackgroundTasks | None,
        payload_class: type[Any] = dict,
        unchanged_type: int | None = None,
    ) -> None:
        if result is None and unchanged_type is None:
            raise TypeError("InvokeResult: a result, or the payload type of an unchanged one")
        self._result = result
        self._unchanged_type = unchanged_type
        self.context = context
        self.background = background
        self.payload_class = payload_class

    def __repr__(self) -> str:
        return (
            f"InvokeResult(result={self.result!r}, context={self.context!r}, background={self.background!r}, "
            f"payload_class={self.payload_class!r})"
        )

    @property
    def result(self) -> PipelineResult:
        result = self._result
        if result is None:
            # A clone (wire.clone: a copy the caller owns) of the payload type's
            # unchanged result, validated once from its four values.
            result = self._result = _unchanged_result(cast(int, self._unchanged_type))
        return result

    @property
    def denied(self) -> bool:
        result = self._result
        return False if result is None else not result.continue_processing

    @property
    def payload_modified(self) -> bool:
        """True exactly when a plugin's modified payload was applied."""
        result = self._result
        return False if result is None else bool(result.payload_modified)

    @property
    def extensions_modified(self) -> bool:
        """True exactly when a plugin's modified extensions were applied."""
        result = self._result
        return False if result is None else bool(result.extensions_modified)

    @property
    def violation(self) -> PluginViolation | None:
        result = self._result
        return None if result is None else result.violation

    @property
    def errors(self) -> list[PluginError]:
        return self.result.errors or []

    @property
    def metadata(self) -> dict[str, Any]:
        return self.result.metadata or {}

    @property
    def modified_payload(self) -> P | None:
        """The modified payload decoded into the payload's class (a dict for plain
        payloads, e.g. MessagePayload for CMF), or None when no plugin changed it."""
        result = self._result
        raw = None if result is None else result.modified_payload
        if raw is None:
            return None
        value = unpack(raw, "modified payload")
        if issubclass(self.payload_class, WireRecord):
            return cast(P, self.payload_class.from_wire(value, "modified payload"))
        return cast(P, value)

    @property
    def modified_extensions(self) -> Extensions | None:
        result = self._result
        raw = None if result is None else result.modified_extensions
        if raw is None:
            return None
        extensions: Extensions = Extensions.from_wire(unpack(raw, "modified extensions"), "modified extensions")
        return extensions


_UNCHANGED: dict[int, PipelineResult] = {}


def _unchanged_result(payload_type: int) -> PipelineResult:
    """A copy the caller owns of the payload type's unchanged result."""
    template = _UNCHANGED.get(payload_type)
    if template is None:
        template = _UNCHANGED[payload_type] = PipelineResult(
            continue_processing=True, payload_modified=False, extensions_modified=False, payload_type=payload_type
        )
    unchanged: PipelineResult = clone(template)
    return unchanged


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what}: not valid UTF-8 (position {exc.start}: {text[exc.start : exc.start + 1]!r})") from None


def _call_options(timeout: float) -> bytes:
    """The CallOptions map of a call with a time limit of timeout seconds."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise InvalidInputError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    return pack(CallOptions(timeout_ms=max(1, math.ceil(timeout * 1000))).to_wire(), "options")


LOG = logging.getLogger("cpexrt.host")


def _release_manager(library: Library, handle: Any, sinks: list[Any]) -> None:
    calls.shutdown(library, handle)
    sinks.clear()  # the library calls the decision sink no more


def _decision_callback(library: Library, sink: Callable[[DecisionRecord], None]) -> Any:
    """The C record callback handing sink each DecisionRecord (on the library's
    cpex-decisions thread). What sink raises is logged (cpexrt.host) and dropped."""

    def deliver(_user_data: Any, record: Any, length: int) -> None:
        try:
            sink(DecisionRecord.from_wire(unpack(library.ffi.buffer(record, length)[:], "decision record"), "decision record"))
        except Exception:
            LOG.warning("the decision sink raised; the record was dropped", exc_info=True)

    return library.ffi.callback(calls.RECORD_FN, deliver)


class PluginManager:
    """A manager inside libcpex.so. Use as a context manager, or call shutdown()."""

    def __init__(self, yaml: str | None = None, *, library: Library | None = None) -> None:
        self._library = library or load_library()
        if yaml is None:
            handle = calls.manager_new(self._library)
        else:
            handle = calls.manager_new_from_yaml(self._library, _utf8(yaml, "yaml"))
        self._handle: Any = handle
        # The cffi callback of the decision sink, kept alive until the library calls
        # it no more (set_decision_sink, shutdown).
        self._sinks: list[Any] = []
        # A manager dropped without shutdown() is shut down by the finaliser; finalize
        # runs at most once, so it cannot race an explicit shutdown().
        self._finalizer = weakref.finalize(self, _release_manager, self._library, self._handle, self._sinks)

    def __enter__(self) -> PluginManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _live(self, op: str) -> Any:
        """The manager's handle, for the call op."""
        handle = self._handle
        if handle is None:
            raise InvalidHandleError(f"{op}: the manager was shut down")
        return handle

    def register_factory(self, kind: str, target: str | type) -> None:
        """Registers a plugin kind for configs loaded afterwards. target is the import
        path 'package.module:ClassName' of a cpexrt.Plugin subclass, or the class."""
        if isinstance(target, type):
            target = f"{target.__module__}:{target.__qualname__}"
        raw_kind, raw_target = _utf8(kind, "kind"), _utf8(target, "target")
        calls.register_factory(self._library, self._live("register_factory"), raw_kind, raw_target)

    def load_config(self, yaml: str) -> None:
        """Loads (replaces) the config, before initialize()."""
        raw = _utf8(yaml, "yaml")
        calls.load_config(self._library, self._live("load_config"), raw)

    def load_config_file(self, path: str | os.PathLike[str]) -> None:
        """Loads the YAML config file at path (read by the library); relative
        plugin_dirs in it are taken from the file's folder."""
        raw = _utf8(os.fspath(path), "path")
        calls.load_config_file(self._library, self._live("load_config_file"), raw)

    def initialize(self) -> None:
        calls.initialize(self._library, self._live("initialize"))

    def reload_config(self, yaml: str) -> None:
        """Swaps the plugins of the running (initialized) manager for those of a new
        config, atomically: the new plugins are built and initialized first; calls
        that began before the swap finish on the old plugins, calls that begin after
        run on the new ones; the old plugins are shut down once their calls and
        fire-and-forget tasks finished, and then this returns. A bad config
        (ParseError, ConfigError) or a failing initialize (PipelineError, the new
        plugins already initialized shut down again) raises and changes nothing: the
        old plugins keep serving. A ContextTable from before the reload carries each
        plugin's state to the plugin of the same name, kind and config; an invoke with
        one holding state of a plugin whose kind or config changed raises
        InvalidInputError (the table stays usable). Since ABI 1.2."""
        raw = _utf8(yaml, "yaml")
        calls.reload_config(self._library, self._live("reload_config"), raw)

    def reload_config_file(self, path: str | os.PathLike[str]) -> None:
        """reload_config with the YAML config file at path (read by the library);
        relative plugin_dirs in it are taken from the file's folder. A file that
        cannot be read raises InvalidInputError, and the old plugins keep serving."""
        raw = _utf8(os.fspath(path), "path")
        calls.reload_config_file(self._library, self._live("reload_config_file"), raw)

    def shutdown(self) -> None:
        """Shuts down; later calls fail with InvalidHandleError. A second call is a no-op."""
        self._handle = None
        if self._finalizer.alive:
            self._finalizer()

    def set_decision_sink(self, sink: Callable[[DecisionRecord], None] | None) -> None:
        """Turns the manager's decision records on: sink receives a DecisionRecord per
        invoke that runs plugins, on the library's cpex-decisions thread, in order;
        None turns them off. When this returns, the sink it replaced has received every
        record made before and receives no more; shutdown() delivers what is queued
        first."""
        handle = self._live("set_decision_sink")
        ffi = self._library.ffi
        if sink is None:
            calls.set_decision_sink(self._library, handle, ffi.NULL, ffi.NULL)
            self._sinks.clear()
            return
        callback = _decision_callback(self._library, sink)
        calls.set_decision_sink(self._library, handle, callback, ffi.NULL)
        self._sinks[:] = [callback]

    def has_hooks_for(self, hook: str) -> bool:
        raw = _utf8(hook, "hook")
        return calls.has_hooks_for(self._library, self._live("has_hooks_for"), raw)

    def plugin_count(self) -> int:
        return calls.plugin_count(self._library, self._live("plugin_count"))

    def plugin_names(self) -> list[str]:
        names: list[str] = unpack(calls.plugin_names(self._library, self._live("plugin_names")), "plugin names")
        return names

    def plugin_stats(self) -> list[PluginStats]:
        """Where each plugin runs and, for isolated plugins, their workers' counters
        and circuit (Since ABI 1.2)."""
        entries = unpack(calls.plugin_stats(self._library, self._live("plugin_stats")), "plugin stats")
        return [PluginStats.from_wire(e, "plugin stats") for e in entries]

    def is_initialized(self) -> bool:
        return calls.is_initialized(self._library, self._live("is_initialized"))

    def engine_workers(self) -> int:
        """How many worker processes run this manager's engine
        (plugin_settings.engine_workers), 0 when it runs in this process. Its invokes
        then run in parallel from many threads (the GIL is released meanwhile)."""
        return calls.engine_workers(self._library, self._live("engine_workers"))

    @overload
    def invoke(
        self,
        hook: str,
        payload: W,
        *,
        payload_type: int | None = None,
        extensions: Extensions | dict[str, Any] | None = None,
        context: ContextTable | None = None,
        request: WireRecord | dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> InvokeResult[W]: ...

    @overload
    def invoke(
        self,
        hook: str,
        payload: dict[str, Any],
        *,
        payload_type: int | None = None,
        extensions: Extensions | dict[str, Any] | None = None,
        context: ContextTable | None = None,
        request: WireRecord | dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> InvokeResult[dict[str, Any]]: ...

    def invoke(
        self,
        hook: str,
        payload: Any,
        *,
        payload_type: int | None = None,
        extensions: Extensions | dict[str, Any] | None = None,
        context: ContextTable | None = None,
        request: WireRecord | dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> InvokeResult[Any]:
        """Runs the hook's plugins. payload is a dict, or a wire record (MessagePayload
        for CMF hooks; payload_type then defaults to CMF); the result's
        modified_payload comes back in the payload's own class. A context passed in is
        consumed when the call succeeds; when it raises, the context stays usable.
        request is the request's global context (a GlobalContext record or its map:
        request_id, user, tenant_id, server_id, content_type, metadata), which plugins
        read (py-cpex plugins as their global_context). timeout is the call's own time
        limit in seconds (rounded up to whole milliseconds): past it the library stops
        the running plugin and the call raises PipelineTimeoutError (also a
        TimeoutError), whatever the plugins' on_error; plugin_settings.invoke_timeout
        still applies when it is shorter."""
        # The hot path: plain dicts and no options are tested first, and every step is
        # inline (no helper frames) unless something needs its message.
        library = self._library
        kind = type(payload)
        if payload_type is None:
            payload_type = PAYLOAD_GENERIC if kind is dict or not isinstance(payload, MessagePayload) else PAYLOAD_CMF_MESSAGE
        try:
            raw_hook = hook.encode()
        except UnicodeEncodeError:
            raw_hook = _utf8(hook, "hook")  # raises, naming the character
        body = pack(payload if kind is dict or not isinstance(payload, WireRecord) else payload.to_wire(), "payload")
        if extensions is None:
            ext = b""
        else:
            wire_ext = extensions if type(extensions) is dict or not isinstance(extensions, WireRecord) else extensions.to_wire()
            ext = pack(wire_ext, "extensions")
        req = None
        if request is not None:
            req = pack(request.to_wire() if isinstance(request, WireRecord) else request, "request")
        options = _call_options(timeout) if timeout is not None else None
        null = library.ffi.NULL
        c_ctx = null
        if context is not None:
            c_ctx = context._take()
            if c_ctx is None:
                raise InvalidHandleError(
                    "context: this context table was already consumed, closed, or is in use by another invoke"
                )
        try:
            manager = self._handle
            if manager is None:
                raise InvalidHandleError("invoke: the manager was shut down")
            if options is not None:
                raw, out_ctx, out_bg = calls.invoke_with(
                    library, manager, raw_hook, payload_type, body, ext, req or b"", options, c_ctx
                )
            elif req is None:
                scratch = getattr(library._local, "scratch", None) or library.scratch()  # inline: one frame fewer
                raw, out_ctx, out_bg = calls.invoke(library, scratch, manager, raw_hook, payload_type, body, ext, c_ctx)
            else:
                raw, out_ctx, out_bg = calls.invoke_request(
                    library, library.scratch(), manager, raw_hook, payload_type, body, ext, req, c_ctx
                )
        except BaseException:
            if context is not None:
                context._put_back(c_ctx)  # the library left it valid
            raise
        # The handles first: a result that fails to decode leaves them to the finaliser.
        out_context = ContextTable(library, out_ctx) if out_ctx != null else None
        out_background = BackgroundTasks(library, out_bg) if out_bg != null else None
        # The payload type's unchanged result is made into a record only when read
        # (InvokeResult.result); any other result is decoded and validated now.
        if raw == UNCHANGED_RESULTS.get(payload_type):
            return InvokeResult(None, out_context, out_background, kind, payload_type)
        return InvokeResult(PipelineResult.from_wire(unpack(raw, "pipeline result")), out_context, out_background, kind)

    @overload
    async def ainvoke(
        self,
        hook: str,
        payload: W,
        *,
        payload_type: int | None = None,
        extensions: Extensions | dict[str, Any] | None = None,
        context: ContextTable | None = None,
        request: WireRecord | dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the library's own deadline, which stops the plugins; asyncio.timeout would only stop waiting
    ) -> InvokeResult[W]: ...

    @overload
    async def ainvoke(
        self,
        hook: str,
        payload: dict[str, Any],
        *,
        payload_type: int | None = None,
        extensions: Extensions | dict[str, Any] | None = None,
        context: ContextTable | None = None,
        request: WireRecord | dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the library's own deadline, which stops the plugins; asyncio.timeout would only stop waiting
    ) -> InvokeResult[dict[str, Any]]: ...

    async def ainvoke(
        self,
        hook: str,
        payload: Any,
        *,
        payload_type: int | None = None,
        extensions: Extensions | dict[str, Any] | None = None,
        context: ContextTable | None = None,
        request: WireRecord | dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the library's own deadline, which stops the plugins; asyncio.timeout would only stop waiting
    ) -> InvokeResult[Any]:
        """invoke() for asyncio code: runs in a worker thread (the library releases the
        GIL while plugins run), so the event loop keeps serving other tasks."""
        return await asyncio.to_thread(
            self.invoke,
            hook,
            payload,
            payload_type=payload_type,
            extensions=extensions,
            context=context,
            request=request,
            timeout=timeout,
        )
