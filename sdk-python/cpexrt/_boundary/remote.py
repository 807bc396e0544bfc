"""The host side of engine workers (plugin_settings.engine_workers: N).

A manager whose config asks for engine workers runs its engine in N processes
(cpexrt._boundary.engine_worker), so that calls from many host threads run in
parallel instead of queueing on the host's one interpreter. Its invokes, background
waits and handle frees are answered in C (ffi/remote.c): they never take the host's
GIL. This module is the rest: it starts the workers (on the spawner thread of
cpexrt.engine.isolation, so that their death signal is tied to a thread that lives as
long as the host), sets each one up before C hands it any call (the factories, the
config, initialize), forwards the manager's lifecycle (initialize, reload, shutdown)
and queries to them, and restarts a worker that died, with a backoff.

Exports.load_config puts a RemoteEngine in the manager's handle in place of its
in-process Engine; the other Exports functions call it as they would the Engine.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from cpexrt import payloads
from cpexrt._boundary.engine_worker import EVENT_DECISIONS, EVENT_HEAD, EVENT_LOG, OK, OP_CONTROL, REPLY, REQUEST
from cpexrt._generated.errors import ERROR_CLASSES
from cpexrt.engine.config import parse_config
from cpexrt.engine.decisions import DecisionLog
from cpexrt.engine.isolation import SPAWNER, _how_it_ended, host_python
from cpexrt.engine.registry import FactoryRegistry
from cpexrt.errors import ConfigError, CpexError, InternalError, InvalidHandleError, PipelineError, PipelineTimeoutError
from cpexrt.wire import pack, unpack

LOG = logging.getLogger("cpex")

_BOOT = (
    "import os,sys;"
    "sys.path.extend(p for p in os.environ.pop('CPEX_WORKER_PATH','').split(os.pathsep) if p and p not in sys.path);"
    "from cpexrt._boundary.engine_worker import main;main()"
)
# How long a worker may take to start and load its config; a query's answer.
SETUP_TIMEOUT = 120.0
QUERY_TIMEOUT = 30.0
# At shutdown: how long a worker has to shut its plugins down and exit, then how long
# after SIGTERM before SIGKILL.
STOP_GRACE = 10.0
TERM_GRACE = 1.0
# Restart backoff after a worker died: doubled per death in a row, at most BACKOFF_MAX.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 5.0


_LIVE: weakref.WeakSet[RemoteEngine] = weakref.WeakSet()


def log_level_changed() -> None:
    """The host's cpexrt log level changed (cpex_set_log_sink): the workers log at it."""
    level = logging.getLogger("cpexrt").getEffectiveLevel()
    for engine in list(_LIVE):
        engine.tell(["log_level", level])


def wanted(text: str) -> int:
    """How many engine workers the config asks for (0: none). Raises what loading it
    would (ParseError, ConfigError)."""
    return parse_config(text).plugin_settings.engine_workers


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the engine worker closed its socket")
        data += chunk
    return bytes(data)


def _answer(status: int, data: bytes) -> Any:
    """A control call's reply: its MessagePack value, or its error raised."""
    if status != OK:
        raise ERROR_CLASSES.get(status, InternalError)(data.decode("utf-8", "replace"))
    return unpack(data, "control reply", 1 << 20)


class RemoteEngine:
    """What Exports calls on a manager, for a manager whose engine runs in workers."""

    def __init__(self, exports: Any, token: int, factories: list[tuple[str, str]], count: int) -> None:
        self._ffi, self._lib = exports.ffi, exports.lib
        self._exports = exports
        self._token = token
        self.count = count
        self._factories = FactoryRegistry()
        self._registered: list[tuple[str, str]] = []
        for kind, target in factories:
            self.register_factory(kind, target)
        self._text = ""
        self._base_dir: str | None = None
        self._info: dict[str, Any] = {}
        self._initialized = False
        self._shut_down = False
        self._lock = threading.RLock()  # orders lifecycle changes, as Engine._change_lock
        self._observer: Callable[[Any, bool], None] | None = None
        self._procs: list[Any] = [None] * count
        self._deaths = [0] * count
        # The records of the workers' engines are made there and handed over here
        # (engine_worker.ForwardedDecisions): this log writes the file and calls the sink.
        self.decisions = DecisionLog()
        self._death_r, self._death_w = os.pipe()
        self._remote = self._lib.cpexrt_remote_new(token, count, self._death_w, 1, 1, 1, 1.0)
        if self._remote == self._ffi.NULL:
            raise MemoryError("engine workers: out of memory")
        self._watcher = threading.Thread(target=self._watch, name="cpex-engine-workers", daemon=True)

    # -- start -------------------------------------------------------------------------

    @classmethod
    def start(cls, exports: Any, token: int, engine: Any, text: str, base_dir: str | None, count: int) -> RemoteEngine:
        """Starts count workers loaded with the config (and the kinds registered on the
        manager's in-process engine so far), then publishes them to ffi/remote.c."""
        factories = [(kind, str(engine._factories.registered(kind))) for kind in engine._factories.kinds]
        remote = cls(exports, token, factories, count)
        remote._text, remote._base_dir = text, base_dir
        records = parse_config(text).decision_records
        remote.decisions.use(remote.decisions.open_file(records.file, base_dir), records.include_values)
        futures = [SPAWNER.submit(remote._spawn) for _ in range(count)]
        started: list[tuple[Any, socket.socket, socket.socket]] = []
        error: BaseException | None = None
        for future in futures:
            try:
                started.append(future.result())
            except BaseException as exc:  # noqa: BLE001 - reported below
                error = error or exc
        if error is None:
            for index, (proc, sock, events) in enumerate(started):
                try:
                    info = remote._setup(proc, sock, initialize=False)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    error = exc
                    break
                remote._attach(index, proc, sock, events)
                remote._info = info
        if error is not None:
            for index, (proc, sock, events) in enumerate(started):
                if remote._procs[index] is None:
                    sock.close()
                    events.close()
                else:
                    remote._lib.cpexrt_remote_detach(remote._remote, index)
                _kill(proc)
            remote._close_pipe()
            remote.decisions.close()
            raise error
        remote._limits_to_c()
        if not remote._lib.cpexrt_remote_publish(remote._remote, 1):
            remote.shutdown()
            raise MemoryError("engine workers: out of memory")
        remote._watcher.start()
        _LIVE.add(remote)
        LOG.info("engine workers started: %d", count, extra={"engine_workers": count})
        return remote

    def _spawn(self) -> tuple[Any, socket.socket, socket.socket]:
        """On the spawner thread: a worker process, not set up yet; its call socket
        and its events socket (records for the host)."""
        import subprocess

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        events, their_events = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["CPEX_WORKER_PATH"] = os.pathsep.join(p for p in sys.path if p)
        env["CPEX_WORKER_PARENT"] = str(os.getpid())
        env["CPEX_EVENTS_FD"] = str(their_events.fileno())
        try:
            proc = subprocess.Popen(
                [host_python(), "-c", _BOOT],
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                env=env,
                close_fds=True,
                pass_fds=(their_events.fileno(),),
            )
        except OSError as exc:
            ours.close()
            events.close()
            raise InternalError(f"engine workers: could not start one: {exc}") from None
        finally:
            theirs.close()
            their_events.close()
        return proc, ours, events

    def _setup(self, proc: Any, sock: socket.socket, initialize: bool) -> dict[str, Any]:
        """Sets a new worker up over its socket, before C hands it any call."""
        try:
            sock.settimeout(SETUP_TIMEOUT)
            level = logging.getLogger("cpexrt").getEffectiveLevel()
            setup = ["setup", self._registered, self._text, self._base_dir, self.decisions.active, level]
            info: dict[str, Any] = self._direct(sock, setup)
            if initialize:
                info = self._direct(sock, ["initialize"])
        except (OSError, ConnectionError) as exc:
            status = _exit_status(proc)
            raise InternalError(f"engine worker (pid {proc.pid}) failed while starting ({status}): {exc}") from None
        sock.settimeout(None)
        return info

    @staticmethod
    def _direct(sock: socket.socket, message: list[Any]) -> Any:
        body = pack(message, "control call")
        sock.sendall(REQUEST.pack(REQUEST.size - 4 + len(body), OP_CONTROL, 0, 0, 0, 0, 0, len(body), 0, 0, 0, 0) + body)
        _, status, _, _, size = REPLY.unpack(_recv_exactly(sock, REPLY.size))
        return _answer(status, _recv_exactly(sock, size))

    def _attach(self, index: int, proc: Any, sock: socket.socket, events: socket.socket) -> None:
        self._procs[index] = proc
        threading.Thread(target=self._relay, args=(events,), name="cpex-engine-worker-records", daemon=True).start()
        self._lib.cpexrt_remote_attach(self._remote, index, sock.detach(), proc.pid)

    def _relay(self, events: socket.socket) -> None:
        """One worker's records: decisions to this manager's log (file, sink), log
        records to the host's logging. Ends when the worker does."""
        try:
            while True:
                (size,) = EVENT_HEAD.unpack(_recv_exactly(events, EVENT_HEAD.size))
                kind, value = unpack(_recv_exactly(events, size), "worker record", 1 << 20)
                if kind == EVENT_DECISIONS:
                    for record in value:
                        self.decisions.emit(record)
                elif kind == EVENT_LOG:
                    record = logging.makeLogRecord(value)
                    logging.getLogger(record.name).handle(record)
        except (OSError, ConnectionError, ValueError, CpexError):
            pass
        finally:
            events.close()

    def _limits_to_c(self) -> None:
        limits = self.limits
        self._lib.cpexrt_remote_limits(
            self._remote,
            limits.max_payload_bytes,
            limits.max_extensions_bytes,
            limits.max_collection_entries,
            float(self._info.get("invoke_timeout", 60.0)),
        )

    # -- control calls through ffi/remote.c ---------------------------------------------

    def _control(self, index: int, message: list[Any], timeout: float = 0.0) -> Any:
        ffi = self._ffi
        body = pack(message, "control call")
        status, out, out_len = ffi.new("int *"), ffi.new("uint8_t **"), ffi.new("size_t *")
        rc = self._lib.cpexrt_remote_control(self._remote, index, body, len(body), timeout, status, out, out_len)
        if rc == -2:
            raise PipelineTimeoutError(f"engine worker {index}: no answer within {timeout:g} s; it was killed")
        if rc != 0:
            raise InternalError(f"engine worker {index} is not running (it stopped, or is being restarted)")
        data = ffi.buffer(out[0], out_len[0])[:]
        self._lib.cpexrt_remote_free(out[0])
        return _answer(status[0], data)

    def _each(self, message: list[Any], timeout: float = 0.0) -> list[Any]:
        return [self._control(i, message, timeout) for i in range(self.count)]

    def tell(self, message: list[Any]) -> None:
        """A setting every running worker takes (a worker being restarted gets it with
        its setup)."""
        with self._lock:
            if self._shut_down:
                return
            for index in range(self.count):
                try:
                    self._control(index, message, QUERY_TIMEOUT)
                except CpexError as exc:
                    LOG.warning("engine worker %d did not take %s: %s", index, message[0], exc)

    # -- restarts ----------------------------------------------------------------------

    def _watch(self) -> None:
        """The cpex-engine-workers thread: a worker that died (ffi/remote.c writes its
        index) is reaped and replaced after a backoff."""
        try:
            while True:
                raw = os.read(self._death_r, 4)
                if len(raw) < 4:
                    return
                (index,) = struct.unpack("=i", raw)
                if index < 0:
                    return
                self._died(index)
        finally:
            os.close(self._death_r)

    def _died(self, index: int) -> None:
        proc = self._procs[index]
        status = _kill(proc) if proc is not None else None
        delay = self._backoff(index)
        LOG.error(
            "engine worker %d (pid %s) %s; replacing it in %.2f s",
            index,
            proc.pid if proc is not None else "?",
            _how_it_ended(status),
            delay,
            extra={"engine_worker": index},
        )
        self._replace(index, delay)

    def _backoff(self, index: int) -> float:
        """One more failure of worker index in a row: how long until the next try."""
        self._deaths[index] += 1
        return float(min(BACKOFF_FIRST * 2 ** (self._deaths[index] - 1), BACKOFF_MAX))

    def _replace(self, index: int, delay: float) -> None:
        def spawn() -> None:
            if self._shut_down:
                return
            try:
                proc, sock, events = self._spawn()
            except BaseException as exc:  # noqa: BLE001 - logged, tried again
                LOG.error("engine worker %d: %s", index, exc)
                self._replace(index, self._backoff(index))
                return
            threading.Thread(
                target=self._bring_up, args=(index, proc, sock, events), name="cpex-engine-worker-setup", daemon=True
            ).start()

        SPAWNER.submit(spawn, delay)

    def _bring_up(self, index: int, proc: Any, sock: socket.socket, events: socket.socket) -> None:
        with self._lock:
            if self._shut_down:
                sock.close()
                events.close()
                _kill(proc)
                return
            try:
                self._setup(proc, sock, initialize=self._initialized)
            except BaseException as exc:  # noqa: BLE001 - logged, tried again
                sock.close()
                events.close()
                _kill(proc)
                LOG.error("engine worker %d could not be set up: %s", index, exc)
                self._replace(index, self._backoff(index))
                return
            self._attach(index, proc, sock, events)
            self._deaths[index] = 0
        LOG.info("engine worker %d restarted (pid %d)", index, proc.pid, extra={"engine_worker": index})

    # -- what Exports calls ---------------------------------------------------------------

    def observe(self, observer: Callable[[Any, bool], None]) -> None:
        with self._lock:
            self._observer = observer

    def _changed(self) -> None:
        if self._observer is not None:
            self._observer(self, True)

    def _check_alive(self, what: str) -> None:
        if self._shut_down:
            raise InvalidHandleError(f"{what}: the manager was shut down")

    def register_factory(self, kind: str, target: Any) -> None:
        self._factories.register(kind, target)  # refuses a kind registered twice
        self._registered.append((kind, str(target)))

    def load_config(self, text: str, base_dir: str | None = None) -> None:
        with self._lock:
            self._check_alive("load_config")
            if self._initialized:
                raise PipelineError(
                    "load_config: the manager is already initialized; reload_config swaps the plugins of a running manager"
                )
            self._same_count(text, "load_config")
            records = parse_config(text).decision_records
            opened = self.decisions.open_file(records.file, base_dir)
            try:
                for info in self._each(["load", self._registered, text, base_dir]):
                    self._info = info
            except BaseException:
                if opened is not None:
                    opened[0].close()
                raise
            self._text, self._base_dir = text, base_dir
            self._use_records(opened, records.include_values)
            self._limits_to_c()
            self._changed()

    def _use_records(self, opened: Any, include_values: bool) -> None:
        was = self.decisions.active
        self.decisions.use(opened, include_values)
        if self.decisions.active != was:
            self.tell(["decisions", self.decisions.active])

    def load_config_file(self, path: str) -> None:
        from cpexrt.engine.manager import _read_config_file

        self.load_config(_read_config_file(path), os.path.dirname(os.path.abspath(path)))

    def reload_config(self, text: str, base_dir: str | None = None) -> None:
        with self._lock:
            self._check_alive("reload_config")
            self._same_count(text, "reload_config")
            records = parse_config(text).decision_records
            opened = self.decisions.open_file(records.file, base_dir)
            # Worker 0 first: a config refused there is refused before any worker changed.
            for index in range(self.count):
                try:
                    self._info = self._control(index, ["reload", self._registered, text, base_dir])
                except CpexError:
                    if index == 0:
                        if opened is not None:
                            opened[0].close()
                        raise
                    # The others took it: this one is replaced by a worker that loads it.
                    self._text, self._base_dir = text, base_dir
                    self._kill_worker(index)
                    continue
            self._text, self._base_dir = text, base_dir
            self._use_records(opened, records.include_values)
            self._limits_to_c()
            self._changed()

    def reload_config_file(self, path: str) -> None:
        from cpexrt.engine.manager import _read_config_file

        self.reload_config(_read_config_file(path), os.path.dirname(os.path.abspath(path)))

    def _same_count(self, text: str, what: str) -> None:
        count = wanted(text)
        if count != self.count:
            raise ConfigError(
                f"plugin_settings.engine_workers: {what} cannot change the number of engine workers of a manager "
                f"({self.count} → {count}); create a new manager for that"
            )

    def _kill_worker(self, index: int) -> None:
        proc = self._procs[index]
        if proc is not None:
            try:
                proc.kill()
            except OSError:
                pass

    def initialize(self) -> None:
        with self._lock:
            self._check_alive("initialize")
            if self._initialized:
                return
            for index in range(self.count):
                try:
                    self._info = self._control(index, ["initialize"])
                except BaseException:
                    for done in reversed(range(index)):
                        try:
                            self._control(done, ["undo_initialize"])
                        except CpexError as exc:
                            LOG.error("engine worker %d: undoing initialize failed: %s", done, exc)
                    raise
            self._initialized = True
            self._changed()

    def shutdown(self) -> None:
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        # No new call is taken; the calls in flight finish; the handles die.
        self._lib.cpexrt_remote_publish(self._remote, 0)
        failures: list[str] = []
        for index in range(self.count):
            try:
                self._control(index, ["shutdown"], STOP_GRACE)
            except CpexError as exc:
                if self._procs[index] is not None:
                    failures.append(f"engine worker {index}: {exc}")
            self._lib.cpexrt_remote_detach(self._remote, index)
        for proc in self._procs:
            if proc is not None:
                _stop(proc)
        self._close_pipe()
        self.decisions.close()  # after the workers' last records arrived
        _LIVE.discard(self)
        if failures:
            raise PipelineError("shutdown: " + "; ".join(failures))

    def _close_pipe(self) -> None:
        """Stops the watcher (it closes the read end); C writes no more deaths once
        every worker is detached or was never attached."""
        if self._watcher.is_alive():
            try:
                os.write(self._death_w, struct.pack("=i", -1))
            except OSError:
                pass
        else:
            os.close(self._death_r)
        os.close(self._death_w)

    def has_hooks_for(self, hook: str) -> bool:
        self._check_alive("has_hooks_for")
        return bool(self._control(0, ["has_hooks", hook], QUERY_TIMEOUT))

    def hooks_with_plugins(self) -> list[str]:
        self._check_alive("hooks_with_plugins")
        return list(self._info.get("hooks", []))

    def plugin_count(self) -> int:
        self._check_alive("plugin_count")
        return len(self._info.get("names", []))

    def plugin_names(self) -> list[str]:
        self._check_alive("plugin_names")
        return list(self._info.get("names", []))

    def plugin_stats(self) -> list[dict[str, Any]]:
        """Each plugin's entry summed over the workers (counters added, disabled if it
        is disabled in any worker)."""
        self._check_alive("plugin_stats")
        merged: list[dict[str, Any]] = []
        for stats in self._each(["stats"], QUERY_TIMEOUT):
            if not merged:
                merged = [dict(entry) for entry in stats]
                continue
            for into, entry in zip(merged, stats, strict=True):
                for key, value in entry.items():
                    if key == "disabled":
                        into[key] = bool(into.get(key)) or bool(value)
                    elif isinstance(value, int) and not isinstance(value, bool) and isinstance(into.get(key), int):
                        into[key] += value
        return merged

    def is_initialized(self) -> bool:
        self._check_alive("is_initialized")
        return self._initialized

    @property
    def limits(self) -> payloads.Limits:
        values = self._info.get("limits") or [1, 1, 1]
        return payloads.Limits(*values)

    def set_decision_sink(self, sink: Any) -> None:
        self._check_alive("set_decision_sink")
        with self._lock:
            was = self.decisions.active
            self.decisions.set_sink(sink)
            if self.decisions.active != was:
                self.tell(["decisions", self.decisions.active])

    def serving(self) -> Any:
        raise InternalError("the manager's engine runs in engine workers: its calls are answered by ffi/remote.c")


def _kill(proc: Any) -> int | None:
    try:
        proc.kill()
    except OSError:
        pass
    try:
        status: int | None = proc.wait(5.0)
        return status
    except Exception:  # noqa: BLE001 - a process that will not go away is left to the OS
        return None


def _stop(proc: Any) -> None:
    try:
        proc.wait(STOP_GRACE)
        return
    except Exception:  # noqa: BLE001 - still running: terminated below
        pass
    try:
        proc.terminate()
        proc.wait(TERM_GRACE)
        return
    except Exception:  # noqa: BLE001 - then killed
        pass
    _kill(proc)


def _exit_status(proc: Any) -> str:
    try:
        return _how_it_ended(proc.wait(1.0))
    except Exception:  # noqa: BLE001
        return "still running"
