"""The Python implementation of every exported C function.

Each function here backs one `cpexpy_<name>` of ffi/generated/embedding_api.h, gets the
same arguments (handles as uintptr_t tokens) and returns 1 on success or a negative
status after writing a message to *err_msg. Outputs are written only on success.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]  # untyped: the package passes mypy wherever it is installed

from cpexrt import payloads
from cpexrt import wire as wire_module
from cpexrt._boundary.handles import HANDLES, Kind
from cpexrt._boundary.signals import refuse_signal_handlers
from cpexrt._boundary.sinks import LOG_FORWARDER, CallbackSink
from cpexrt._generated import records
from cpexrt._generated.abi_cdef import PYTHON_FUNCTIONS
from cpexrt._generated.errors import UNCHANGED_RESULTS, Status
from cpexrt._generated.records import CallOptions, PipelineResult, PluginError
from cpexrt.engine import Engine, driver
from cpexrt.engine.executor import PipelineOutcome
from cpexrt.engine.watchdog import WATCHDOG
from cpexrt.errors import CpexError, InvalidInputError
from cpexrt.wire import WireRecord, pack, pack_plans, pack_wire, parse_specs, unpack

OK = 1
_MAX_MESSAGE = 64 * 1024
_MAX_DEPTH = 64  # CPEX__MAX_DEPTH of ffi/fastpath.c
_MAX_HOOK_NAMES = 256
_DRAIN = 256  # CPEX__FREED_MAX of ffi/handles.c
# MessagePack's own decoder with its defaults (str keys and values as str, bin as
# bytes), for the maps the C checker took (invoke_decoded, exact verdicts).
_unpackb = msgpack.unpackb


def _no_map(data: bytes) -> None:
    return None


# The C decode of a map the C checker took (ffi/natives.c decode_map), installed as the
# boundary loads (Exports); until then none (msgpack decodes).
_decode_map: Callable[[bytes], Any] = _no_map


class Exports:
    def __init__(self, ffi: Any, lib: Any) -> None:
        self.ffi = ffi
        self.lib = lib
        self._hook_names: dict[bytes, str] = {}
        # The invoke's C helpers as builtins that keep the GIL (ffi/natives.c): a cffi
        # call would release it, letting the runtime loop's thread in mid-invoke.
        if lib.cpexrt_install_natives() != 0:
            raise RuntimeError("the boundary's C builtins (_cpex_natives, ffi/natives.c) could not be installed")
        natives = sys.modules["_cpex_natives"]
        self._plain_maps: Callable[[bytes, bytes | None, int], int] = natives.plain_maps
        self._copy_out_address: Callable[[bytes], int] = natives.copy_out
        self._drain: Callable[[], tuple[int, ...]] = natives.drain
        # A CMF message's private copies made in C (natives.clone: wire.clone's copy).
        slot = WireRecord.__dict__
        natives.clone_setup(WireRecord, object.__new__, slot["_fields_set"], slot["_extra"])
        payloads.install_clone(natives.clone)
        # A host's CMF message parsed in C when every value is of its exact type
        # (natives.parse: the record the generated _parse makes; _parse for the rest).
        natives.parse_setup(parse_specs(vars(records)))
        payloads.install_parse(natives.parse)
        # A map the C checker took decoded in C too (natives.decode_map: the map
        # unpackb gives; None for msgpack to decode what it does not take).
        global _decode_map
        _decode_map = natives.decode_map
        # A generic payload's private copies made in C too (natives.copy_plain: what a
        # decode of the snapshot's bytes gives; a decode for anything else).
        payloads.install_plain_copy(natives.copy_plain)
        # A plugin's modified extensions: its map's C copy once the C checker passed
        # the map's bytes (payloads._private_value), rather than a decode of them.
        payloads.install_plain_check(natives.plain_maps)
        # Every pack (the result map, a plugin's modified extensions) made in C when its
        # value is of exact types all the way down (natives.pack: msgpack's bytes, byte
        # for byte; None for msgpack to pack the rest or say why it cannot).
        wire_module.install_pack(natives.pack)
        # The result map's records (its errors, a violation) packed in C as their wire
        # maps, from plans made once (natives.pack_wire; wire.pack_wire for the rest).
        natives.pack_setup(pack_plans(vars(records)))
        wire_module.install_pack_wire(natives.pack_wire)
        # The watchdog's arm and disarm (every plugin run's) as builtins too.
        WATCHDOG.use_native(natives)
        driver.use_watchdog()

    # -- pointers in ------------------------------------------------------------------

    def _bytes(self, ptr: Any, n: int) -> bytes:
        return self.ffi.buffer(ptr, n)[:] if n else b""

    def _text(self, ptr: Any, n: int, what: str) -> str:
        raw = self._bytes(ptr, n)
        return utf8(raw, what)

    def _manager(self, token: int, what: str) -> Engine:
        manager: Engine = HANDLES.get(Kind.MANAGER, token, what)
        return manager

    # -- pointers out -----------------------------------------------------------------

    def _copy_out(self, data: bytes) -> Any:
        # A void *, which cffi stores into any uint8_t ** output as it is (no cast).
        ptr = self.lib.cpexrt_copy_out(data, len(data))
        if not ptr:
            raise MemoryError(f"allocating {len(data)} bytes for a result")
        return ptr

    def put_error(self, err_msg: Any, message: str) -> None:
        if err_msg == self.ffi.NULL:
            return
        raw = message.encode("utf-8", "replace")[:_MAX_MESSAGE]
        err_msg[0] = self.lib.cpexrt_message(raw, len(raw))

    # -- the functions ----------------------------------------------------------------

    def _publish(self, token: int, manager: Any, settled: bool, create: bool = False) -> None:
        """Tells the C fast path which hooks have plugins (see ffi/fastpath.c). The
        engine calls it (Engine.observe) under the lock that orders its changes:
        settled False right before a reload swaps the plugins, when every call must
        reach Python until the new set is published; create only for a new manager."""
        limits = manager.limits
        if settled:
            hooks = "\0".join(manager.hooks_with_plugins()).encode("utf-8")
            initialized = int(manager.is_initialized())
        else:
            hooks, initialized = b"", 0
        self.lib.cpexrt_publish_hooks(
            token,
            initialized,
            int(create),
            hooks,
            len(hooks),
            limits.max_payload_bytes,
            limits.max_extensions_bytes,
            limits.max_collection_entries,
        )

    def _issue_manager(self, manager: Engine) -> int:
        token: int = HANDLES.issue(Kind.MANAGER, manager, owner=manager)
        self._publish(token, manager, True, create=True)
        manager.observe(functools.partial(self._publish, token))
        return token

    def manager_new(self, out_manager: Any) -> None:
        out_manager[0] = self._issue_manager(Engine())

    def manager_new_from_yaml(self, yaml: Any, yaml_len: int, out_manager: Any) -> None:
        text = self._text(yaml, yaml_len, "yaml")
        engine = Engine()
        token = self._issue_manager(engine)
        try:
            self._load(token, engine, text, None)
        except BaseException:
            HANDLES.take(Kind.MANAGER, token, "manager")
            self.lib.cpexrt_publish_hooks(token, -1, 0, b"", 0, 0, 0, 0)
            raise
        out_manager[0] = token

    def _load(self, token: int, manager: Any, text: str, base_dir: str | None) -> None:
        """load_config, or the start of the manager's engine workers when the config
        asks for them (plugin_settings.engine_workers; cpexrt._boundary.remote)."""
        if type(manager) is Engine and "engine_workers" not in text:
            manager.load_config(text, base_dir)  # the common case: nothing more to parse
            return
        from cpexrt._boundary import remote

        if isinstance(manager, remote.RemoteEngine) or not remote.wanted(text):
            manager.load_config(text, base_dir)
            return
        manager._check_alive("load_config")
        if manager.is_initialized():
            manager.load_config(text, base_dir)  # refused, with the engine's words
        workers = remote.RemoteEngine.start(self, token, manager, text, base_dir, remote.wanted(text))
        HANDLES.replace(Kind.MANAGER, token, workers)
        workers.observe(functools.partial(self._publish, token))
        self._publish(token, workers, True)

    def register_factory(self, manager: int, kind: Any, kind_len: int, target: Any, target_len: int) -> None:
        self._manager(manager, "manager").register_factory(
            self._text(kind, kind_len, "kind"), self._text(target, target_len, "target")
        )

    # The engine republishes the fast path's view itself (the observer attached in
    # _issue_manager) when load_config, initialize or a reload change it.

    def load_config(self, manager: int, yaml: Any, yaml_len: int) -> None:
        self._load(manager, self._manager(manager, "manager"), self._text(yaml, yaml_len, "yaml"), None)

    def load_config_file(self, manager: int, path: Any, path_len: int) -> None:
        from cpexrt.engine.manager import _read_config_file

        path_text = self._text(path, path_len, "path")
        mgr = self._manager(manager, "manager")
        text = _read_config_file(path_text)
        self._load(manager, mgr, text, os.path.dirname(os.path.abspath(path_text)))

    def reload_config(self, manager: int, yaml: Any, yaml_len: int) -> None:
        self._manager(manager, "manager").reload_config(self._text(yaml, yaml_len, "yaml"))

    def reload_config_file(self, manager: int, path: Any, path_len: int) -> None:
        self._manager(manager, "manager").reload_config_file(self._text(path, path_len, "path"))

    def initialize(self, manager: int) -> None:
        self._manager(manager, "manager").initialize()

    def shutdown(self, manager: int) -> None:
        mgr = self._manager(manager, "manager")
        # Handles die first (and the C fast path forgets the manager), so calls racing
        # this one fail cleanly instead of using plugins that are shutting down.
        self.lib.cpexrt_publish_hooks(manager, -1, 0, b"", 0, 0, 0, 0)
        released = HANDLES.release_owned_by(mgr)
        if released:
            # The shims' set of live handles (ffi/handles.c) forgets them too.
            self.lib.cpexrt_handles_forget(self.ffi.new("uintptr_t[]", released), len(released))
        mgr.shutdown()

    def has_hooks_for(self, manager: int, hook: Any, hook_len: int, out_has: Any) -> None:
        mgr = self._manager(manager, "manager")
        out_has[0] = int(mgr.has_hooks_for(self._text(hook, hook_len, "hook")))

    def plugin_count(self, manager: int, out_count: Any) -> None:
        out_count[0] = self._manager(manager, "manager").plugin_count()

    def plugin_names(self, manager: int, out_names: Any, out_names_len: Any) -> None:
        data = pack(self._manager(manager, "manager").plugin_names(), "plugin names")
        out_names[0] = self._copy_out(data)
        out_names_len[0] = len(data)

    def plugin_stats(self, manager: int, out_stats: Any, out_stats_len: Any) -> None:
        data = pack(self._manager(manager, "manager").plugin_stats(), "plugin stats")
        out_stats[0] = self._copy_out(data)
        out_stats_len[0] = len(data)

    def engine_workers(self, manager: int, out_count: Any) -> None:
        mgr = self._manager(manager, "manager")
        remote = sys.modules.get("cpexrt._boundary.remote")  # imported when a manager first started workers
        out_count[0] = mgr.count if remote is not None and isinstance(mgr, remote.RemoteEngine) else 0

    def is_initialized(self, manager: int, out_initialized: Any) -> None:
        out_initialized[0] = int(self._manager(manager, "manager").is_initialized())

    # The invokes enter Python through the native entry (ffi/natives.c calls
    # invoke_native with the inputs as bytes, install() sets it): cpex_invoke and
    # cpex_invoke_request are invoke_with with fewer inputs. invoke_with is the cffi
    # path (cpexpy_invoke*, attached by install() with an entry each: _invoke_entries),
    # which the native entry leaves the calls over a limit (refused here before their
    # bytes are copied) and those of a manager its table does not know.

    def invoke_native(
        self,
        manager: int,
        raw_hook: bytes,
        payload_type: int,
        body_wire: bytes,
        ext_wire: bytes | None,
        request_wire: bytes | None,
        options_wire: bytes | None,
        context: int,
        plain: int,
        checked_entries: int,
    ) -> tuple[int, int, int, int]:
        """An invoke over the caller's bytes (ffi/natives.c copied them, within the
        limits it knows, and ran the C checker on the copies with checked_entries as
        the entry limit: plain, bits as in _run): (result address, result length,
        context token, background token)."""
        # The context is consumed only when the call succeeds, as documented in cpex.h.
        ctx = HANDLES.get(Kind.CONTEXT, context, "context") if context else None
        mgr = HANDLES.get(Kind.MANAGER, manager, "manager")
        # The call is served by one plugin set (a reload may swap it meanwhile), from
        # the size checks against its limits to its result.
        serving = mgr.serving()
        try:
            hook_name = self._hook_names.get(raw_hook) or hook_name_of(self._hook_names, raw_hook)
            # Checked again: the limits may have changed since ffi/natives.c read them.
            limits = serving.limits
            # check_sizes, entered only when it has something to refuse (ffi/natives.c
            # sends a non-empty payload within the limits it knows; the serving ones
            # may differ).
            if (
                not body_wire
                or len(body_wire) > limits.max_payload_bytes
                or (ext_wire is not None and len(ext_wire) > limits.max_extensions_bytes)
            ):
                check_sizes(limits, len(body_wire), len(ext_wire) if ext_wire is not None else 0)
            if checked_entries != limits.max_collection_entries:
                plain = -1  # checked against other limits: checked again
            return self._run(
                ctx, context, mgr, serving, hook_name, payload_type, body_wire, ext_wire, request_wire, options_wire, plain
            )
        finally:
            serving.leave()

    def invoke_with(
        self,
        manager: int,
        hook: Any,
        hook_len: int,
        payload_type: int,
        payload: Any,
        payload_len: int,
        extensions: Any,
        extensions_len: int,
        request: Any,
        request_len: int,
        options: Any,
        options_len: int,
        context: int,
        out_result: Any,
        out_result_len: Any,
        out_context: Any,
        out_background: Any,
    ) -> None:
        ctx = HANDLES.get(Kind.CONTEXT, context, "context") if context else None
        mgr = HANDLES.get(Kind.MANAGER, manager, "manager")
        serving = mgr.serving()
        try:
            buffer = self.ffi.buffer
            raw_hook = buffer(hook, hook_len)[:] if hook_len else b""
            hook_name = self._hook_names.get(raw_hook) or hook_name_of(self._hook_names, raw_hook)
            limits = serving.limits
            # Every size checked before anything is copied out of the caller's memory.
            check_sizes(limits, payload_len, extensions_len)
            if request_len:
                _check_size("request", request_len, limits.max_extensions_bytes, "max_extensions_bytes")
            if options_len:
                _check_size("options", options_len, limits.max_extensions_bytes, "max_extensions_bytes")
            address, length, new_ctx, new_bg = self._run(
                ctx,
                context,
                mgr,
                serving,
                hook_name,
                payload_type,
                buffer(payload, payload_len)[:],
                buffer(extensions, extensions_len)[:] if extensions_len else None,
                buffer(request, request_len)[:] if request_len else None,
                buffer(options, options_len)[:] if options_len else None,
                -1,
            )
            out_result[0] = self.ffi.cast("uint8_t *", address)
            out_result_len[0] = length
            out_context[0] = new_ctx
            out_background[0] = new_bg
        finally:
            serving.leave()

    def _run(
        self,
        ctx: Any,
        context: int,
        mgr: Any,
        serving: Any,
        hook_name: str,
        payload_type: int,
        body_wire: bytes,
        ext_wire: bytes | None,
        request_wire: bytes | None,
        options_wire: bytes | None,
        plain: int,
    ) -> tuple[int, int, int, int]:
        """The invoke over the copied, size-checked bytes, its result copied out:
        (result address, result length, context token, background token). plain: the
        C checker's verdicts on these copies with the serving limits (bit 1 the
        payload, 2 the extensions, 4 the request, 8 the options; the native entry
        runs it before Python is entered), or -1 to run it here."""
        # The engine keeps the copies as the payload's canonical form. They are checked
        # (ffi/fastpath.c; here the payload and the extensions in one call of a builtin
        # that keeps the GIL, ffi/natives.c): a map the checker takes is decoded at once;
        # anything else gets decode_checked's checks and message.
        if plain < 0:
            entries = serving.limits.max_collection_entries
            plain = self._plain_maps(body_wire, ext_wire, entries)
            if request_wire is not None and self.lib.cpexrt_plain_map(request_wire, len(request_wire), entries):
                plain |= 4
            if options_wire is not None and self.lib.cpexrt_plain_map(options_wire, len(options_wire), entries):
                plain |= 8
        outcome = invoke_decoded(
            mgr, hook_name, payload_type, body_wire, ext_wire, request_wire, options_wire, plain, ctx, serving, True
        )
        try:
            data = UNCHANGED_RESULTS[payload_type] if outcome.unchanged else _result_bytes(outcome, payload_type)
            address = self._copy_out_address(data)
        except BaseException:
            # The result cannot be delivered: the call failed after all, and the
            # caller keeps its context table (the engine never changed it).
            if ctx is not None:
                ctx.revive()
            raise
        if ctx is not None:
            HANDLES.discard(Kind.CONTEXT, context)
        # The handles the host freed since (in C, ffi/handles.c) leave the table
        # here, so that their objects do not outlive them by long.
        freed = self._drain()
        if freed:
            HANDLES.drop_all(freed)
        new_ctx, new_bg = HANDLES.issue_outputs(outcome.context, outcome.background, mgr)
        return address, len(data), new_ctx, new_bg

    def wait_background(self, background: int, out_errors: Any, out_errors_len: Any) -> None:
        tasks = HANDLES.get(Kind.BACKGROUND, background, "background")
        errors: list[PluginError] = tasks.wait()
        data = pack_wire(errors, "background errors")
        out_errors[0] = self._copy_out(data)
        out_errors_len[0] = len(data)

    def set_log_sink(self, callback: Any, user_data: Any, min_level: int) -> None:
        if callback == self.ffi.NULL:
            LOG_FORWARDER.set_sink(None, 0)
            self._log_level_changed()
            return
        if not 0 < min_level <= 50:
            raise InvalidInputError(
                f"min_level: {min_level} is no logging level; expected 10 (debug), 20 (info), 30 (warning), 40 (error) "
                "or 50 (critical)"
            )
        LOG_FORWARDER.set_sink(CallbackSink(self.ffi, callback, user_data), min_level)
        self._log_level_changed()

    @staticmethod
    def _log_level_changed() -> None:
        remote = sys.modules.get("cpexrt._boundary.remote")
        if remote is not None:
            remote.log_level_changed()  # engine workers log at the host's level

    def set_decision_sink(self, manager: int, callback: Any, user_data: Any) -> None:
        mgr = self._manager(manager, "manager")
        mgr.set_decision_sink(None if callback == self.ffi.NULL else CallbackSink(self.ffi, callback, user_data))

    def drain_freed(self) -> None:
        """Drops from the table the context and background handles the C shims freed
        (ffi/handles.c: they were dead from the free on; only their objects are
        released here)."""
        while True:
            freed = self._drain()
            HANDLES.drop_all(freed)
            if len(freed) < _DRAIN:
                return

    def live_handles(self, out_managers: Any, out_contexts: Any, out_backgrounds: Any) -> None:
        self.drain_freed()
        counts = HANDLES.counts()
        # and those issued by ffi/remote.c for managers running engine workers
        remote_contexts, remote_backgrounds = self.ffi.new("size_t *"), self.ffi.new("size_t *")
        self.lib.cpexrt_remote_counts(remote_contexts, remote_backgrounds)
        out_managers[0] = counts.get(Kind.MANAGER, 0)
        out_contexts[0] = counts.get(Kind.CONTEXT, 0) + remote_contexts[0]
        out_backgrounds[0] = counts.get(Kind.BACKGROUND, 0) + remote_backgrounds[0]


# -- an invoke's steps, shared by Exports.invoke_with and the engine workers
# (cpexrt._boundary.engine_worker), which run it over a frame's bytes: the same checks,
# messages and result bytes in both.


def utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{what}: not valid UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})") from None


def hook_name_of(names: dict[bytes, str], raw: bytes) -> str:
    """An invoke's hook name, decoded once and then found in names by its bytes (a host
    calls a handful of hooks). Only valid names are kept, at most _MAX_HOOK_NAMES."""
    name = names.get(raw)
    if name is None:
        name = utf8(raw, "hook")
        if len(names) >= _MAX_HOOK_NAMES:
            names.clear()
        names[raw] = name
    return name


def check_sizes(limits: Any, payload_len: int, extensions_len: int) -> None:
    """The payload's and extensions' size checks, before anything is copied or decoded."""
    if payload_len == 0:
        raise InvalidInputError("payload: empty; expected a MessagePack map")
    if payload_len > limits.max_payload_bytes:
        _check_size("payload", payload_len, limits.max_payload_bytes, "max_payload_bytes")
    if extensions_len > limits.max_extensions_bytes:
        _check_size("extensions", extensions_len, limits.max_extensions_bytes, "max_extensions_bytes")


def invoke_decoded(
    engine: Any,
    hook: str,
    payload_type: int,
    body_wire: bytes,
    ext_wire: bytes | None,
    request_wire: bytes | None,
    options_wire: bytes | None,
    plain: int,
    ctx: Any,
    serving: Any,
    exact: bool = False,
) -> PipelineOutcome:
    """One invoke over its inputs' bytes, as the boundary (Exports._run) and an engine
    worker both run it. plain holds the C checker's verdicts (ffi/fastpath.c; bit 1
    the payload, 2 the extensions, 4 the request, 8 the options): a map it took is
    decoded as is, the rest gets decode_checked's checks and message. exact: the
    verdicts were reached on these very bytes with the serving limits. The payload's
    and the extensions' sizes were checked before they were copied; the request's and
    the options' are checked here."""
    limits = serving.limits
    entries = limits.max_collection_entries
    # A map the checker took is decoded as is. With exact verdicts (reached on these
    # bytes with entries as the limit) it is one map with string keys, no extension
    # type and no map or array over the limit, so MessagePack's defaults decode it as
    # the limits would; an engine worker's verdicts come from the host, with its view
    # of the limits, so it is decoded with the limits again. A map the checker
    # refused gets decode_checked's checks and message.
    # Exact verdicts come from the boundary, which decodes such a map in C first
    # (natives.decode_map: what unpackb gives, or None for msgpack to decode).
    if plain & 1:
        if exact:
            body = _decode_map(body_wire)
            if body is None:
                body = _unpackb(body_wire)
        else:
            body = unpack(body_wire, "payload", entries)
    else:
        body = _not_plain(body_wire, "payload", entries)
    ext = None
    if ext_wire is not None:
        if plain & 2:
            if exact:
                ext = _decode_map(ext_wire)
                if ext is None:
                    ext = _unpackb(ext_wire)
            else:
                ext = unpack(ext_wire, "extensions", entries)
        else:
            ext = _not_plain(ext_wire, "extensions", entries)
    request = None
    if request_wire is not None:
        _check_size("request", len(request_wire), limits.max_extensions_bytes, "max_extensions_bytes")
        request = decode_checked(request_wire, "request", entries, bool(plain & 4))
    timeout = None
    if options_wire is not None:
        _check_size("options", len(options_wire), limits.max_extensions_bytes, "max_extensions_bytes")
        timeout = _call_timeout(decode_checked(options_wire, "options", entries, bool(plain & 8)))
    outcome: PipelineOutcome = engine.invoke(
        hook,
        payload_type,
        body,
        ext,
        ctx,
        payload_wire=body_wire,
        extensions_wire=ext_wire,
        owned=True,
        request=request,
        timeout=timeout,
        serving=serving,
    )
    return outcome


def _not_plain(data: bytes, what: str, entries: int) -> Any:
    """A map the C checker refused: refused here too, naming the problem."""
    return decode_checked(data, what, entries, False)


def outcome_bytes(outcome: PipelineOutcome, payload_type: int) -> bytes:
    """The result's bytes: the payload type's unchanged result when nothing changed
    (the engine checked the payload type)."""
    return UNCHANGED_RESULTS[payload_type] if outcome.unchanged else _result_bytes(outcome, payload_type)


def failure(exc: BaseException) -> tuple[int, str]:
    """The status and message of a call that raised exc (the caller adds the function's
    name)."""
    if isinstance(exc, CpexError):
        return int(exc.status), str(exc)
    return int(Status.INTERNAL), f"internal error: {type(exc).__name__}: {exc}"


def decode_checked(data: bytes, what: str, entries: int, plain: bool) -> Any:
    """A host's MessagePack map: plain when the C checker (ffi/fastpath.c) took the
    bytes; else what it refuses is refused here too, naming the problem."""
    if plain:
        return unpack(data, what, entries)
    value = unpack(data, what, entries)  # raises, naming what is wrong, in most cases
    if not isinstance(value, dict):
        return value  # the engine names the wrong shape
    raise InvalidInputError(
        f"{what}: nested more than {_MAX_DEPTH} levels deep, holds a MessagePack extension type (a timestamp, "
        "say) or a map key that is not a string; none of these can reach every host"
    )


def _check_size(what: str, size: int, limit: int, setting: str) -> None:
    if size > limit:
        raise InvalidInputError(
            f"{what}: {size} bytes, over the limit of {limit} (plugin_settings.{setting}); refused before decoding"
        )


def _call_timeout(options: Any) -> float | None:
    """The call's time limit in seconds from its CallOptions map, or None. An option
    this library does not know is refused, not ignored: the caller counts on it."""
    if not isinstance(options, dict):
        raise InvalidInputError(f"options: expected a CallOptions map, got {type(options).__name__}")
    known = {f.name for f in CallOptions.WIRE}
    unknown = sorted(str(k) for k in options if k not in known)
    if unknown:
        raise InvalidInputError(f"options.{unknown[0]}: not an option of this library (known: {', '.join(sorted(known))})")
    timeout_ms = options.get("timeout_ms")
    if timeout_ms is None or timeout_ms == 0:
        return None
    if type(timeout_ms) is not int or timeout_ms < 0:
        raise InvalidInputError(f"options.timeout_ms: expected a non-negative integer of milliseconds, got {timeout_ms!r}")
    return timeout_ms / 1000


def _modified_heads() -> dict[int, bytes]:
    """Per payload type, the bytes _result_bytes gives for a call that only had its
    payload modified, up to the modified payload's MessagePack bin header: the same
    encoder's output for a one-byte payload, less that bin (c4 01 c0)."""
    heads = {}
    for payload_type in UNCHANGED_RESULTS:
        wire = pack(
            PipelineResult.wire_from(
                continue_processing=True,
                payload_modified=True,
                extensions_modified=False,
                payload_type=payload_type,
                modified_payload=b"\xc0",
            ),
            "pipeline result",
        )
        if not wire.endswith(b"\xb0modified_payload\xc4\x01\xc0"):
            raise AssertionError(f"the pipeline result's layout changed: {wire!r}")
        heads[payload_type] = wire[:-3]
    return heads


_MODIFIED_HEADS = _modified_heads()


def _bin_header(n: int) -> bytes:
    """MessagePack's bin header of n bytes (bin 8 / 16 / 32)."""
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _result_bytes(result: PipelineOutcome, payload_type: int) -> bytes:
    # Every part was checked (and the modifications encoded) by the engine when the
    # plugin returned it: nothing here can fail on a plugin's account.
    if (
        result.payload is not None
        and result.extensions is None
        and result.continue_processing
        and not result.errors
        and not result.metadata
        and not result.retry_delay_ms
        and not result.http_headers
        and result.violation is None
    ):
        # Only the payload changed (a redaction, say): the result's fixed head, then
        # the payload's canonical bytes as they are, with no map to build and pack.
        payload = result.payload.wire
        return b"".join((_MODIFIED_HEADS[payload_type], _bin_header(len(payload)), payload))
    return _packed_result(result, payload_type)


def _packed_result(result: PipelineOutcome, payload_type: int) -> bytes:
    """The pipeline result's MessagePack, built as a map and packed (any outcome): the
    map PipelineResult.wire_from makes of the outcome (its fields in WIRE order, the
    optional ones omitted when empty), spelled out for the outcome's known types (the
    test holds the two equal). Its records (the violation, the errors) go in as they
    are: pack_wire packs them as their wire maps."""
    payload, extensions, violation, errors = result.payload, result.extensions, result.violation, result.errors
    wire: dict[str, Any] = {
        "continue_processing": result.continue_processing,
        "payload_modified": payload is not None,
        "extensions_modified": extensions is not None,
    }
    if violation is not None:
        wire["violation"] = violation
    if errors:
        wire["errors"] = errors
    if result.metadata:
        wire["metadata"] = result.metadata
    wire["payload_type"] = payload_type
    if payload is not None:
        wire["modified_payload"] = payload.wire
    if extensions is not None:
        wire["modified_extensions"] = extensions.wire
    if result.retry_delay_ms:
        wire["retry_delay_ms"] = result.retry_delay_ms
    if result.http_headers:
        wire["http_headers"] = result.http_headers
    return pack_wire(wire, "pipeline result")


def _failed(exports: Exports, name: str, err_msg: Any, exc: BaseException) -> int:
    """The status of a call that raised exc, its message written to *err_msg."""
    status, message = failure(exc)
    exports.put_error(err_msg, f"cpex_{name}: {message}")
    return status


def _entry(exports: Exports, name: str, fn: Callable[..., None]) -> Callable[..., int]:
    @functools.wraps(fn)
    def entry(*args: Any) -> int:
        try:
            fn(*args[:-1])
            return OK
        except BaseException as exc:  # noqa: BLE001 - nothing may escape into C
            return _failed(exports, name, args[-1], exc)

    return entry


def _invoke_entries(exports: Exports) -> dict[str, Callable[..., int]]:
    """The entries of the calls on every request's path, with their parameters spelled
    out (no argument tuple to slice and spread): the invokes and the two frees."""
    invoke_with = exports.invoke_with
    null = exports.ffi.NULL
    handles = HANDLES
    context_kind, background_kind = Kind.CONTEXT, Kind.BACKGROUND

    def invoke(
        manager: int,
        hook: Any,
        hook_len: int,
        payload_type: int,
        payload: Any,
        payload_len: int,
        extensions: Any,
        extensions_len: int,
        context: int,
        out_result: Any,
        out_result_len: Any,
        out_context: Any,
        out_background: Any,
        err_msg: Any,
    ) -> int:
        try:
            invoke_with(
                manager,
                hook,
                hook_len,
                payload_type,
                payload,
                payload_len,
                extensions,
                extensions_len,
                null,
                0,
                null,
                0,
                context,
                out_result,
                out_result_len,
                out_context,
                out_background,
            )
            return OK
        except BaseException as exc:  # noqa: BLE001 - nothing may escape into C
            return _failed(exports, "invoke", err_msg, exc)

    def invoke_request(
        manager: int,
        hook: Any,
        hook_len: int,
        payload_type: int,
        payload: Any,
        payload_len: int,
        extensions: Any,
        extensions_len: int,
        request: Any,
        request_len: int,
        context: int,
        out_result: Any,
        out_result_len: Any,
        out_context: Any,
        out_background: Any,
        err_msg: Any,
    ) -> int:
        try:
            invoke_with(
                manager,
                hook,
                hook_len,
                payload_type,
                payload,
                payload_len,
                extensions,
                extensions_len,
                request,
                request_len,
                null,
                0,
                context,
                out_result,
                out_result_len,
                out_context,
                out_background,
            )
            return OK
        except BaseException as exc:  # noqa: BLE001 - nothing may escape into C
            return _failed(exports, "invoke_request", err_msg, exc)

    def invoke_with_entry(
        manager: int,
        hook: Any,
        hook_len: int,
        payload_type: int,
        payload: Any,
        payload_len: int,
        extensions: Any,
        extensions_len: int,
        request: Any,
        request_len: int,
        options: Any,
        options_len: int,
        context: int,
        out_result: Any,
        out_result_len: Any,
        out_context: Any,
        out_background: Any,
        err_msg: Any,
    ) -> int:
        try:
            invoke_with(
                manager,
                hook,
                hook_len,
                payload_type,
                payload,
                payload_len,
                extensions,
                extensions_len,
                request,
                request_len,
                options,
                options_len,
                context,
                out_result,
                out_result_len,
                out_context,
                out_background,
            )
            return OK
        except BaseException as exc:  # noqa: BLE001 - nothing may escape into C
            return _failed(exports, "invoke_with", err_msg, exc)

    # The frees enter Python only when the C shim's queue of freed handles is full
    # (ffi/handles.c): the handle is dead already; its object leaves the table here,
    # with the queued ones.
    drain_freed = exports.drain_freed

    def free_context(context: int, err_msg: Any) -> int:
        try:
            drain_freed()
            handles.take(context_kind, context, "context")
            return OK
        except BaseException as exc:  # noqa: BLE001 - nothing may escape into C
            return _failed(exports, "free_context", err_msg, exc)

    def free_background(background: int, err_msg: Any) -> int:
        try:
            drain_freed()
            handles.take(background_kind, background, "background")
            return OK
        except BaseException as exc:  # noqa: BLE001 - nothing may escape into C
            return _failed(exports, "free_background", err_msg, exc)

    return {
        "invoke": invoke,
        "invoke_request": invoke_request,
        "invoke_with": invoke_with_entry,
        "free_context": free_context,
        "free_background": free_background,
    }


def _native_entry(exports: Exports) -> Callable[..., tuple[int, int, int, int] | tuple[int, bytes]]:
    """The invokes' entry from C (ffi/natives.c, cpex__native_call): the outputs, or
    the failed call's (status, message); it never raises."""
    invoke_native = exports.invoke_native
    names = ("cpex_invoke", "cpex_invoke_request", "cpex_invoke_with")  # by the C side's `which`

    def entry(
        which: int,
        manager: int,
        hook: bytes,
        payload_type: int,
        payload: bytes,
        extensions: bytes | None,
        request: bytes | None,
        options: bytes | None,
        context: int,
        plain: int,
        checked_entries: int,
    ) -> tuple[int, int, int, int] | tuple[int, bytes]:
        try:
            return invoke_native(
                manager, hook, payload_type, payload, extensions, request, options, context, plain, checked_entries
            )
        except BaseException as exc:  # noqa: BLE001 - nothing may escape into C
            status, message = failure(exc)
            return status, f"{names[which]}: {message}".encode("utf-8", "replace")[:_MAX_MESSAGE]

    return entry


def _onerror(exc_type: Any, exc_value: Any, tb: Any) -> int:
    # Only reached if writing the error itself failed; the status still gets through.
    return int(Status.INTERNAL)


def install(ffi: Any, lib: Any) -> None:
    """Attaches every implementation to its cffi extern "Python" declaration."""
    if lib.cpexrt_embedded():
        refuse_signal_handlers()
    exports = Exports(ffi, lib)
    fast = _invoke_entries(exports)
    for name in PYTHON_FUNCTIONS:
        entry = fast.get(name) or _entry(exports, name, getattr(exports, name))
        ffi.def_extern(name=f"cpexpy_{name}", onerror=_onerror)(entry)
    sys.modules["_cpex_natives"].set_invoke(_native_entry(exports))
