"""Isolated plugins: `isolation: process` runs a plugin in a small pool of worker
processes (cpexrt.engine.worker), py-cpex's `kind: isolated_venv` stanzas too.

To the executor an isolated plugin is an ordinary LoadedPlugin whose handlers are
driver.Remote objects: the driver hands them the call's deadline instead of running
them under the watchdog. Each call takes an idle worker, sends it the payload's
snapshot bytes, the extensions its capabilities allow (least privilege: nothing
else of the call), the plugin's per-request state and the request, and waits for the
reply until the deadline. What comes back becomes a PluginResult that the executor
checks exactly as an in-process plugin's (_apply).

- Hard deadlines: at the deadline (plus REPLY_GRACE, for the worker's own timeout
  reply) the caller gets its timeout; the worker is killed (SIGKILL) and replaced in
  the background.
- Crashes (an exit, a signal, the memory limit) are the plugin's failure under its
  on_error; the worker is replaced after a backoff that doubles with each crash in a
  row, and CIRCUIT_AFTER crashes in a row open the plugin's circuit: its calls fail
  at once until CIRCUIT_RESET seconds passed, then one call probes, and its success
  closes the circuit.
- Lifecycle: initialize starts the pool (creating the plugin's virtualenv first when
  it has `requirements:`); shutdown waits for calls in flight, asks each worker to
  run the plugin's shutdown and exit, then SIGTERM, then SIGKILL after a grace.
  Every worker is started from one long-lived thread (cpex-workers), so the
  parent-death signal each worker arms fires only when the host process dies.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import fcntl
import hashlib
import heapq
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import yaml  # type: ignore[import-untyped, unused-ignore]  # typed only with types-PyYAML installed

from cpexrt import payloads
from cpexrt._generated.errors import PAYLOAD_CMF_MESSAGE, PAYLOAD_GENERIC
from cpexrt._generated.records import Message
from cpexrt.engine import driver, frames
from cpexrt.engine.config import Config, Isolation, PluginSpec
from cpexrt.errors import ConfigError, PipelineError
from cpexrt.plugin import Plugin, PluginContext
from cpexrt.results import PluginResult

if TYPE_CHECKING:
    from cpexrt.engine.executor import LoadedPlugin

# After the deadline, how long a worker has to send its own timeout reply (its
# watchdog stops a handler spinning in Python) before it is killed.
REPLY_GRACE = 0.01
# How long a caller polls for its reply before it sleeps until the reply comes
# (frames.Channel.recv: bounded, and off while it finds nothing, as on a loaded
# machine): a quick plugin on another core answers within it, and the caller is
# not put to sleep and woken.
REPLY_SPIN_NS = 30_000
# Crashes in a row that open a plugin's circuit, and how long it stays open.
CIRCUIT_AFTER = 5
CIRCUIT_RESET = 5.0
# Restart backoff after a crash: BACKOFF_FIRST, doubled per crash in a row, at most BACKOFF_MAX.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 5.0
# At shutdown: how long a worker has to run the plugin's shutdown and exit, then
# how long after SIGTERM before SIGKILL.
STOP_GRACE = 2.0
TERM_GRACE = 1.0
# How long a virtualenv may take to create (pip install included).
VENV_TIMEOUT = 600.0
# What a worker's environment always holds besides the allowlist.
_BOOT = (
    "import os,sys;"
    "sys.path.extend(p for p in os.environ.pop('CPEX_WORKER_PATH','').split(os.pathsep) if p and p not in sys.path);"
    "from cpexrt.engine.worker import main;main()"
)


class WorkerCrashed(driver.RemoteFailure):
    """A worker died during a call, or failed to start (code worker_crashed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "worker_crashed")


class CircuitOpen(driver.RemoteFailure):
    """The plugin's circuit is open: its calls fail at once (code circuit_open)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "circuit_open")


class WorkerUnavailable(driver.RemoteFailure):
    """No worker can take the call: the plugin is shutting down (code worker_unavailable)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "worker_unavailable")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _how_it_ended(returncode: int | None) -> str:
    if returncode is None:
        return "closed its pipe"
    if returncode < 0:
        return f"was killed by {_signal_name(-returncode)}"
    from cpexrt.engine.worker import EXIT_MEMORY

    if returncode == EXIT_MEMORY:
        return "passed its memory limit and exited"
    return f"exited with status {returncode}"


# -- the spawner thread ------------------------------------------------------------


class _Spawner:
    """One daemon thread that starts every worker (so PR_SET_PDEATHSIG, which is tied
    to the thread that forked the worker, fires only when the host dies) and runs the
    delayed restarts."""

    def __init__(self) -> None:
        self._jobs: list[tuple[float, int, Callable[[], Any], concurrent.futures.Future[Any]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, fn: Callable[[], Any], delay: float = 0.0) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._cond:
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._jobs = []
                self._thread = threading.Thread(target=self._run, name="cpex-workers", daemon=True)
                self._thread.start()
            heapq.heappush(self._jobs, (time.monotonic() + delay, next(self._seq), fn, future))
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._jobs and self._jobs[0][0] <= now:
                        _, _, fn, future = heapq.heappop(self._jobs)
                        break
                    self._cond.wait(self._jobs[0][0] - now if self._jobs else None)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(exc)


SPAWNER = _Spawner()
_POOLS: set[_Pool] = set()
_POOLS_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """At interpreter exit: no worker outlives its host."""
    with _POOLS_LOCK:
        pools = list(_POOLS)
    for pool in pools:
        pool.kill_all()


# -- environments ------------------------------------------------------------------


def host_python() -> str:
    """The interpreter of the running runtime (sys.executable is the host's binary
    when Go or C embeds Python)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for prefix in (sys.prefix, sys.exec_prefix, sys.base_prefix):
        for name in (version, "python3", "python"):
            candidate = os.path.join(prefix, "bin", name)
            if os.access(candidate, os.X_OK):
                return candidate
    if sys.executable and os.path.basename(sys.executable).startswith("python"):
        return sys.executable
    raise ConfigError("isolation: cannot find the Python interpreter of the runtime; set the plugin's `python:`")


def venv_cache_dir(config: Config) -> str:
    configured = config.plugin_settings.venv_cache_dir or os.environ.get("CPEX_VENV_CACHE")
    if configured:
        return os.path.abspath(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cpex", "venvs")


def ensure_venv(name: str, python: str, requirements: list[str], cache: str) -> str:
    """The python of a virtualenv holding requirements, created on first use under
    cache, in a directory named by the hash of (interpreter, requirements); later
    starts (and other plugins with the same requirements) reuse it."""
    material = [os.path.realpath(python)]
    previous = ""
    for item in requirements:
        if previous == "-r":  # a requirements file: its content counts, not where it is
            with open(item, "rb") as f:
                item = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        material.append(item)
        previous = item
    key = hashlib.sha256("\n".join(material).encode()).hexdigest()[:24]
    target = os.path.join(cache, key)
    venv_python = os.path.join(target, "bin", "python")
    if os.path.exists(os.path.join(target, ".cpex-complete")):
        return venv_python
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, key + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another plugin or process may be creating it
        if os.path.exists(os.path.join(target, ".cpex-complete")):
            return venv_python
        building = f"{target}.building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        deadline = time.monotonic() + VENV_TIMEOUT
        try:
            _run([python, "-m", "venv", building], name, "create its virtualenv", deadline)
            if requirements:
                pip = [os.path.join(building, "bin", "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
                _run([*pip, *requirements], name, f"install its requirements {requirements}", deadline)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(building, target)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        with open(os.path.join(target, ".cpex-complete"), "w") as done:
            done.write("\n".join(requirements) + "\n")
    return venv_python


def _run(argv: list[str], name: str, what: str, deadline: float) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=max(deadline - time.monotonic(), 1.0), check=False)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"plugin {name!r}: could not {what} within {VENV_TIMEOUT:g}s") from None
    except OSError as exc:
        raise PipelineError(f"plugin {name!r}: could not {what}: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise PipelineError(f"plugin {name!r}: could not {what} (exit {proc.returncode}): {' / '.join(tail)}")


# -- one worker --------------------------------------------------------------------


class _Worker:
    """One worker process and the host's end of its socket pair. A socket, not pipes,
    so that writing to a worker that died is an error (MSG_NOSIGNAL) rather than a
    SIGPIPE, which would kill a Go or C host (they do not ignore it as Python does)."""

    __slots__ = ("proc", "sock", "channel", "fd_in", "fd_out", "pid", "started", "info")

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock
        self.pid = proc.pid
        sock.setblocking(False)
        self.channel = frames.Channel(sock)
        self.fd_in = self.fd_out = sock.fileno()
        self.started = time.monotonic()
        self.info: dict[str, Any] = {}

    def send(self, data: bytes, deadline: float | None) -> None:
        frames.write_all(self.fd_in, data, deadline, self.sock)

    def kill(self) -> int | None:
        """SIGKILL, close the socket, reap; the exit status."""
        try:
            self.proc.kill()
        except OSError:
            pass
        return self.reap(5.0)

    def reap(self, timeout: float) -> int | None:
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def status(self, wait: float) -> int | None:
        """The exit status once the process ended (waiting up to wait), else None."""
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return None


class Launch:
    """How to start the workers of one plugin."""

    def __init__(self, spec: PluginSpec, index: int, config: Config, kind: str, plugin_config: dict[str, Any]) -> None:
        self.name = spec.name
        self.spec = spec
        self.size = spec.workers
        self.python = spec.python
        self.requirements = list(spec.requirements)
        self.max_memory_mb = spec.max_memory_mb
        self.env_allow = list(spec.env)
        self.max_frame = frames.MAX_FRAME if spec.max_content_size is None else spec.max_content_size + 4096
        settings = config.plugin_settings
        self.cache = venv_cache_dir(config)
        self.limits = [settings.max_payload_bytes, settings.max_extensions_bytes, settings.max_collection_entries]
        # The one-plugin config the worker loads: the stanza without its isolation.
        stanza = spec.as_data(defaults=False)
        for key in ("isolation", "workers", "python", "requirements", "max_memory_mb", "env"):
            stanza.pop(key, None)
        stanza["name"], stanza["kind"], stanza["config"] = spec.name, kind, plugin_config
        stanza["hooks"] = list(spec.hooks)
        self.config_text = yaml.safe_dump(
            {
                "plugin_settings": {
                    "plugin_timeout": spec.timeout or settings.plugin_timeout,
                    "plugin_dirs": [os.path.abspath(d) for d in settings.plugin_dirs],
                    "max_payload_bytes": settings.max_payload_bytes,
                    "max_extensions_bytes": settings.max_extensions_bytes,
                    "max_collection_entries": settings.max_collection_entries,
                },
                "plugins": [stanza],
            }
        )
        self.argv: list[str] = []

    def prepare(self) -> None:
        """Finds the interpreter, creating the virtualenv of `requirements:` if needed."""
        python = self.python or host_python()
        if not os.access(python, os.X_OK):
            raise PipelineError(f"plugin {self.name!r}: python {python!r} is not an executable file")
        if self.requirements:
            python = ensure_venv(self.name, python, self.requirements, self.cache)
        self.argv = [python, "-c", _BOOT]

    def environment(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in self.env_allow if k in os.environ}
        env["CPEX_WORKER_PATH"] = os.pathsep.join(p for p in sys.path if p)
        env["CPEX_WORKER_PARENT"] = str(os.getpid())
        if self.max_memory_mb:
            env["CPEX_WORKER_MAX_MEMORY_MB"] = str(self.max_memory_mb)
        return env

    def setup(self) -> list[Any]:
        return [frames.OP_INIT, {"config": self.config_text, "limits": self.limits}]


# -- the pool ----------------------------------------------------------------------


class _Pool:
    """The workers of one plugin, their circuit and their counters."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        self.name = launch.name
        self._lock = threading.Lock()  # the fast paths take it alone (no Condition methods)
        self._cond = threading.Condition(self._lock)
        self._waiting = 0  # callers waiting in acquire for an idle worker
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting = 0
        self._closing = False
        self._wanted = 0
        # circuit
        self._crashes_in_row = 0
        self._opened_at: float | None = None
        self._probing = False
        # counters
        self.calls = 0
        self.failures = 0
        self.crashes = 0
        self.timeouts = 0
        self.restarts = 0
        self.last_crash = ""
        self.last_restart_ms = 0.0
        self.pycpex = False

    # -- starting ---------------------------------------------------------------

    def start(self, deadline: float) -> None:
        """Starts every worker and waits for them to be ready (initialize)."""
        with _POOLS_LOCK:
            _POOLS.add(self)
        self._wanted = self.launch.size
        futures = [SPAWNER.submit(self._spawn) for _ in range(self.launch.size)]
        workers: list[_Worker] = []
        error: BaseException | None = None
        for future in futures:
            try:
                workers.append(future.result())
            except BaseException as exc:  # noqa: BLE001 - reported below
                error = error or exc
        if error is None:
            for worker in workers:
                try:
                    self._handshake(worker, deadline)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    error = error or exc
                    break
        if error is not None:
            for worker in workers:
                SPAWNER.submit(worker.kill)
            with _POOLS_LOCK:
                _POOLS.discard(self)
            if isinstance(error, driver.RemoteFailure):
                raise PipelineError(f"plugin {self.name!r}: {error}") from None
            raise error
        with self._cond:
            self._idle.extend(workers)
            self._cond.notify_all()

    def _spawn(self) -> _Worker:
        """On the spawner thread: the worker process, not yet set up. Its stdin and
        stdout are its end of a socket pair (it moves them off fds 0 and 1 itself)."""
        launch = self.launch
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = subprocess.Popen(
                launch.argv, stdin=theirs.fileno(), stdout=theirs.fileno(), env=launch.environment(), close_fds=True
            )
        except OSError as exc:
            ours.close()
            raise WorkerCrashed(f"could not start a worker ({launch.argv[0]}): {exc}") from None
        finally:
            theirs.close()
        return _Worker(proc, ours)

    def _handshake(self, worker: _Worker, deadline: float) -> None:
        try:
            worker.send(frames.pack(self.launch.setup()), deadline)
            reply = frames.read_frame(worker.fd_out, deadline)
        except frames.FrameTimeout:
            worker.kill()
            raise WorkerCrashed(f"its worker (pid {worker.pid}) did not start within the plugin's timeout") from None
        except frames.FrameError:
            status = worker.kill()
            raise WorkerCrashed(f"its worker (pid {worker.pid}) {_how_it_ended(status)} while starting") from None
        if reply[0] == frames.REPLY_FATAL:
            worker.kill()
            raise PipelineError(f"plugin {self.name!r}: its worker could not load it: {reply[1]}")
        if reply[0] != frames.REPLY_READY:
            worker.kill()
            raise WorkerCrashed(f"its worker (pid {worker.pid}) answered the setup with {reply[0]!r}")
        worker.info = reply[1]
        self.pycpex = bool(reply[1].get("pycpex"))

    def _replace(self, delay: float) -> None:
        """Starts a replacement worker after delay, in the background."""
        with self._cond:
            if self._closing:
                return
            self._starting += 1
        began = time.monotonic() + delay

        def spawn() -> None:
            try:
                worker = self._spawn()
            except BaseException as exc:  # noqa: BLE001 - counted as a crash, retried
                self._start_failed(str(exc))
                return
            threading.Thread(target=self._finish_start, args=(worker, began), daemon=True).start()

        SPAWNER.submit(spawn, delay)

    def _finish_start(self, worker: _Worker, began: float) -> None:
        deadline = time.monotonic() + max(self.launch.spec.timeout or 30.0, 30.0)
        try:
            self._handshake(worker, deadline)
        except BaseException as exc:  # noqa: BLE001 - counted as a crash, retried
            self._start_failed(str(exc))
            return
        with self._cond:
            self._starting -= 1
            self.restarts += 1
            self.last_restart_ms = (time.monotonic() - began) * 1000
            if self._closing:
                SPAWNER.submit(worker.kill)
                return
            self._idle.append(worker)
            self._cond.notify_all()

    def _start_failed(self, why: str) -> None:
        with self._cond:
            self._starting -= 1
            delay = self._crashed(f"a replacement worker failed to start: {why}")
        self._replace(delay)

    # -- the circuit ----------------------------------------------------------------

    def _crashed(self, why: str) -> float:
        """Under the lock: counts a crash; the restart backoff."""
        self.crashes += 1
        self.last_crash = why
        self._crashes_in_row += 1
        if self._crashes_in_row >= CIRCUIT_AFTER:
            self._opened_at = time.monotonic()
        self._probing = False
        return float(min(BACKOFF_FIRST * 2 ** (self._crashes_in_row - 1), BACKOFF_MAX))

    def circuit(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._probing else "open"

    # -- calls ----------------------------------------------------------------------

    def _admit(self) -> bool:
        """Under the lock: whether the call may go on (False: wait), raising when it
        fails at once. Returns whether this call is the circuit's probe."""
        if self._closing:
            raise WorkerUnavailable(f"has no worker: plugin {self.name!r} is shutting down")
        if self._opened_at is None:
            return False
        left = self._opened_at + CIRCUIT_RESET - time.monotonic()
        if left > 0 or self._probing:
            raise CircuitOpen(
                f"is failing fast: its workers crashed {self._crashes_in_row} times in a row (circuit open"
                + (f", next probe in {left:.1f}s" if left > 0 else ", a probe is running")
                + f"; last: {self.last_crash})"
            )
        self._probing = True
        return True

    def acquire(self, deadline: float) -> tuple[_Worker, bool]:
        with self._lock:
            if self._idle and not self._closing and self._opened_at is None:  # the common case
                worker = self._idle.pop()
                self._busy.add(worker)
                self.calls += 1
                return worker, False
            probe = self._admit()
            try:
                while not self._idle:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.timeouts += 1
                        raise driver.HandlerTimeout
                    self._waiting += 1
                    try:
                        self._cond.wait(left)
                    finally:
                        self._waiting -= 1
                    if self._closing:
                        raise WorkerUnavailable(f"has no worker: plugin {self.name!r} is shutting down")
            except BaseException:
                if probe:
                    self._probing = False
                raise
            worker = self._idle.pop()
            self._busy.add(worker)
            self.calls += 1
            return worker, probe

    def try_acquire(self) -> tuple[_Worker, bool] | None:
        with self._cond:
            if not self._idle:
                if self._closing:
                    raise WorkerUnavailable(f"has no worker: plugin {self.name!r} is shutting down")
                return None
            probe = self._admit()
            worker = self._idle.pop()
            self._busy.add(worker)
            self.calls += 1
            return worker, probe

    def release(self, worker: _Worker, probe: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            self._crashes_in_row = 0
            if probe or self._opened_at is not None:
                self._opened_at = None
                self._probing = False
            self._idle.append(worker)
            if self._closing:
                self._cond.notify_all()  # stop() is waiting for the calls in flight
            elif self._waiting:
                self._cond.notify()

    def lose(self, worker: _Worker, why: str | None) -> None:
        """The worker is gone or must go: killed and reaped in the background, and
        replaced (after a backoff when it crashed; why None: killed at a deadline)."""
        with self._cond:
            self._busy.discard(worker)
            if why is None:
                self.timeouts += 1
                delay = 0.0
                self._probing = False
            else:
                delay = self._crashed(why)
            self._cond.notify_all()
        SPAWNER.submit(worker.kill)
        self._replace(delay)

    def crash_reason(self, worker: _Worker, error: frames.FrameError) -> str:
        """How the worker failed the call: how it ended, or what it sent."""
        status = worker.status(0.2)
        if status is None and "closed" not in str(error):
            return f"its worker (pid {worker.pid}) broke the protocol: {error}"
        return f"its worker (pid {worker.pid}) {_how_it_ended(status)}"

    # -- stopping -------------------------------------------------------------------

    def stop(self, timeout: float) -> list[str]:
        """Drains the calls in flight (up to timeout), then stops every worker: the
        plugin's shutdown, SIGTERM, SIGKILL. Returns the shutdown errors."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            while self._busy and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            idle, self._idle = self._idle, []
            stuck, self._busy = list(self._busy), set()
            self._cond.notify_all()
        for worker in stuck:  # still in a call after the drain: its caller gets a crash
            worker.kill()
        errors = [e for e in (self._stop(w) for w in idle) if e]
        with _POOLS_LOCK:
            _POOLS.discard(self)
        return errors

    def _stop(self, worker: _Worker) -> str | None:
        error = None
        try:
            worker.send(frames.pack([frames.OP_SHUTDOWN]), time.monotonic() + STOP_GRACE)
            reply = frames.read_frame(worker.fd_out, time.monotonic() + STOP_GRACE)
            if reply[0] == frames.REPLY_DONE and reply[1]:
                error = str(reply[1])
        except (frames.FrameError, frames.FrameTimeout):
            pass
        if worker.status(STOP_GRACE) is None:
            try:
                worker.proc.terminate()
            except OSError:
                pass
            if worker.status(TERM_GRACE) is None:
                worker.kill()
        worker.reap(1.0)
        return error

    def kill_all(self) -> None:
        with self._cond:
            self._closing = True
            workers = [*self._idle, *self._busy]
            self._idle, self._busy = [], set()
        for worker in workers:
            worker.kill()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "workers": self.launch.size,
                "alive": len(self._idle) + len(self._busy),
                "busy": len(self._busy),
                "calls": self.calls,
                "crashes": self.crashes,
                "timeouts": self.timeouts,
                "restarts": self.restarts,
                "circuit": self.circuit(),
                "last_crash": self.last_crash,
                "last_restart_ms": round(self.last_restart_ms, 3),
                "pids": sorted(w.pid for w in [*self._idle, *self._busy]),
            }


# -- the plugin as the executor sees it --------------------------------------------


class _Hook(driver.Remote):
    __slots__ = ("plugin", "hook")

    def __init__(self, plugin: IsolatedPlugin, hook: str) -> None:
        self.plugin, self.hook = plugin, hook

    def call(self, args: tuple[Any, ...], deadline: float) -> Any:
        return self.plugin.call(self.hook, args, deadline)

    def start(self, args: tuple[Any, ...], deadline: float) -> Coroutine[Any, Any, Any]:
        return self.plugin.call_async(self.hook, args, deadline)


class _Lifecycle(driver.Remote):
    __slots__ = ("run",)

    def __init__(self, run: Callable[[float], None]) -> None:
        self.run = run

    def call(self, args: tuple[Any, ...], deadline: float) -> Any:
        return self.run(deadline)

    def start(self, args: tuple[Any, ...], deadline: float) -> Coroutine[Any, Any, Any]:
        async def run() -> None:
            self.run(deadline)

        return run()


class IsolatedPlugin(Plugin):
    """A plugin whose handlers run in worker processes."""

    def __init__(self, launch: Launch, loaded: Any = None) -> None:
        super().__init__(dict(launch.spec.config))
        self.launch = launch
        self.pool = _Pool(launch)
        self.loaded = loaded  # the LoadedPlugin, told at start whether it is a py-cpex plugin
        self.initialize = _Lifecycle(self._start)  # type: ignore[method-assign]
        self.shutdown = _Lifecycle(self._stop)  # type: ignore[method-assign]

    def handler(self, hook: str) -> driver.Remote:
        return _Hook(self, hook)

    def _start(self, deadline: float) -> None:
        self.launch.prepare()  # a virtualenv is created outside the plugin's timeout
        timeout = self.launch.spec.timeout
        self.pool.start(max(deadline, time.monotonic() + (timeout or 30.0)))
        if self.loaded is not None:
            self.loaded.reports_unenforced = self.pool.pycpex

    def _stop(self, deadline: float) -> None:
        errors = self.pool.stop(max(deadline - time.monotonic(), 0.0))
        if errors:
            raise PipelineError("; ".join(errors))

    def stats(self) -> dict[str, Any]:
        return self.pool.stats()

    # -- one call ---------------------------------------------------------------

    def _request(self, hook: str, args: tuple[Any, ...], deadline: float, held: tuple[Any, Any]) -> bytes:
        """The call's frame. held: the plugin's state and the request's shared state
        as the context holds them (only packed here, never changed): reading ctx.state
        would make the copies a plugin writes into, for nothing when they are empty,
        as they mostly are."""
        payload, ctx = args
        wire, payload_type = _payload_wire(payload, ctx)
        extensions = ctx.extensions or None  # already capability-filtered (gating.hide)
        request = ctx.request
        return frames.pack(
            [frames.OP_CALL, hook, payload_type, wire, extensions, held[0] or None, held[1] or None, request, deadline]
        )

    def call(self, hook: str, args: tuple[Any, ...], deadline: float) -> Any:
        # _request inlined, and _settle's plain allow: the path of most calls.
        payload, ctx = args
        held = ctx.held_state_values()
        if type(payload) is _Encoded:
            wire, payload_type = payload.wire, payload.payload_type
        else:
            wire, payload_type = _payload_wire(payload, ctx)
        extensions = ctx.extensions or None  # already capability-filtered (gating.hide)
        message = frames.pack(
            [frames.OP_CALL, hook, payload_type, wire, extensions, held[0] or None, held[1] or None, ctx.request, deadline]
        )
        pool = self.pool
        worker, probe = pool.acquire(deadline)
        try:
            channel = worker.channel
            channel.send(message, deadline + REPLY_GRACE)
            reply = channel.recv(deadline + REPLY_GRACE, self.launch.max_frame, REPLY_SPIN_NS)
        except frames.FrameTimeout:
            pool.lose(worker, None)
            raise driver.HandlerTimeout from None
        except frames.FrameError as exc:
            why = pool.crash_reason(worker, exc)
            pool.lose(worker, why)
            raise WorkerCrashed(f"crashed: {why}") from None
        except BaseException:
            pool.lose(worker, None)
            raise
        if reply[0] == frames.REPLY_ALLOW:
            pool.release(worker, probe)
            if held[0]:
                ctx.state.clear()
            if held[1]:
                ctx.request_state.clear()
            return None
        return self._settle(worker, probe, reply, ctx, held)

    async def call_async(self, hook: str, args: tuple[Any, ...], deadline: float) -> Any:
        pool = self.pool
        held = args[1].held_state_values()
        message = self._request(hook, args, deadline, held)
        while True:
            got = pool.try_acquire()
            if got is not None:
                break
            if time.monotonic() >= deadline:
                raise driver.HandlerTimeout
            await asyncio.sleep(0.001)
        worker, probe = got
        loop = asyncio.get_running_loop()
        try:
            worker.channel.send(message, deadline + REPLY_GRACE)
            ready = loop.create_future()
            loop.add_reader(worker.fd_out, driver.wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(worker.fd_out)
            reply = worker.channel.recv(deadline + REPLY_GRACE, self.launch.max_frame)
        except frames.FrameTimeout:
            pool.lose(worker, None)
            raise driver.HandlerTimeout from None
        except frames.FrameError as exc:
            why = pool.crash_reason(worker, exc)
            pool.lose(worker, why)
            raise WorkerCrashed(f"crashed: {why}") from None
        except BaseException:  # cancelled (a deadline, a deny of another plugin): abandoned
            pool.lose(worker, None)
            raise
        return self._settle(worker, probe, reply, args[1], held)

    def _settle(self, worker: _Worker, probe: bool, reply: list[Any], ctx: PluginContext, held: tuple[Any, Any]) -> Any:
        """The reply as the handler's result; held: the states sent (_request), which
        the worker's own replace: what a plain allow (REPLY_ALLOW) says is that they
        ended empty."""
        pool = self.pool
        kind = reply[0]
        if kind == frames.REPLY_RAISED and reply[2]:  # out of memory: the worker exits
            limit = f" (max_memory_mb {self.launch.max_memory_mb})" if self.launch.max_memory_mb else ""
            why = f"its worker (pid {worker.pid}) passed its memory limit{limit}"
            pool.lose(worker, why)
            raise WorkerCrashed(f"crashed: {why}: {reply[1]}; the worker exited")
        pool.release(worker, probe)
        held_state, held_shared = held
        if kind == frames.REPLY_ALLOW:
            if held_state:
                ctx.state.clear()
            if held_shared:
                ctx.request_state.clear()
            return None
        if kind == frames.REPLY_OK:
            _, go_on, violation, modified, extensions, metadata, retry, headers, state, shared = reply
            if state is not None or held_state:
                ctx.state.clear()
                ctx.state.update(state or {})
            if shared is not None or held_shared:
                ctx.request_state.clear()
                ctx.request_state.update(shared or {})
            return PluginResult(
                continue_processing=go_on,
                violation=violation,
                modified_payload=None if modified is None else payloads._unpack(modified),
                modified_extensions=extensions,
                metadata=metadata or {},
                retry_delay_ms=retry,
                http_headers=headers,
            )
        if kind == frames.REPLY_TIMEOUT:
            raise driver.HandlerTimeout
        if kind == frames.REPLY_RAISED:
            raise driver.RemoteFailure(reply[1])
        if kind == frames.REPLY_REFUSED:
            raise driver.RemoteFailure(reply[2], reply[1])
        raise WorkerCrashed(f"its worker (pid {worker.pid}) answered a call with {kind!r}")


_Encoded = payloads.Encoded


def _payload_wire(payload: Any, ctx: PluginContext) -> tuple[bytes, int]:
    """The payload's bytes for the worker: the snapshot's own (payloads.Encoded, what
    the executor hands a plugin that takes_wire), else a decoded copy re-encoded (a
    fire-and-forget follower's)."""
    if type(payload) is payloads.Encoded:
        return payload.wire, payload.payload_type
    if isinstance(payload, Message):
        return payloads._pack(payloads.encode(PAYLOAD_CMF_MESSAGE, payload)), PAYLOAD_CMF_MESSAGE
    return payloads._pack(payload), PAYLOAD_GENERIC


# -- loading -----------------------------------------------------------------------


def is_isolated(spec: PluginSpec) -> bool:
    """Whether the plugin runs in worker processes."""
    return spec.isolation is Isolation.PROCESS or spec.kind == "isolated_venv"


def wanted(spec: PluginSpec) -> bool:
    """Whether the plugin runs anywhere but inline on the caller's thread."""
    return is_isolated(spec) or spec.isolation is Isolation.THREAD


def load(index: int, config: Config, factories: Any, here: Callable[[int, Config], LoadedPlugin]) -> LoadedPlugin:
    """plugins[index] as a LoadedPlugin that runs in workers (isolation: process,
    kind: isolated_venv) or on helper threads (isolation: thread; here loads it in
    the host as usual)."""
    from cpexrt.engine.executor import LoadedPlugin
    from cpexrt.engine.gating import Grant
    from cpexrt.engine.offthread import ThreadedPlugin

    spec = config.plugins[index]
    if not is_isolated(spec):
        loaded = here(index, config)
        loaded.handlers, _ = ThreadedPlugin.wrap(loaded.handlers, spec.name, spec.workers)
        return loaded
    launch = launch_for(spec, index, config, factories.registered(spec.kind))
    instance = IsolatedPlugin(launch)
    loaded = LoadedPlugin(
        spec=spec,
        index=index,
        instance=instance,
        handlers={h: instance.handler(h) for h in spec.hooks},
        timeout=spec.timeout or config.plugin_settings.plugin_timeout,
        grant=Grant.of(spec.capabilities),
        reports_unenforced=spec.kind == "isolated_venv",
        takes_wire=True,
    )
    instance.loaded = loaded
    return loaded


def kind_path(kind: str, registered: Any, where: str) -> str:
    """The import path a worker loads the plugin from: the registered target's, or
    the kind itself."""
    if registered is None:
        return kind
    if isinstance(registered, str):
        return registered
    module, qualname = getattr(registered, "__module__", ""), getattr(registered, "__qualname__", "")
    if not module or "<" in qualname or module == "__main__":
        raise ConfigError(
            f"{where}: kind {kind!r} is registered as a class defined in {module or 'no module'}, which a worker process "
            "cannot import; register it by import path ('package.module:ClassName') to isolate it"
        )
    return f"{module}:{qualname}"


def launch_for(spec: PluginSpec, index: int, config: Config, registered: Any) -> Launch:
    """How to run plugins[index] in workers; ConfigError for a stanza that cannot be."""
    where = f"plugins[{index}]"
    if not spec.hooks:
        raise ConfigError(
            f"{where}.hooks: isolated plugin {spec.name!r} lists no hooks; an isolated plugin must list them "
            "(the host does not import its class)"
        )
    plugin_config = dict(spec.config)
    if spec.kind == "isolated_venv":
        class_name = plugin_config.get("class_name")
        if not isinstance(class_name, str) or "." not in class_name:
            raise ConfigError(
                f"{where}.config.class_name: a py-cpex isolated_venv plugin names its class here "
                f"('package.module.ClassName'), got {class_name!r}"
            )
        kind = class_name
        launch = Launch(spec, index, config, kind, plugin_config)
        dirs = config.plugin_settings.plugin_dirs
        requirements_file = plugin_config.get("requirements_file")
        if requirements_file:
            if not dirs:
                raise ConfigError(
                    f"{where}.config.requirements_file: py-cpex finds it under plugin_dirs[0]/<package>, "
                    "but the config lists no plugin_dirs"
                )
            root = os.path.join(os.path.abspath(dirs[0]), class_name.split(".")[0])
            path = os.path.join(root, str(requirements_file))
            if not os.path.isfile(path):
                raise ConfigError(f"{where}.config.requirements_file: {requirements_file!r} not found (looked for {path})")
            launch.requirements = [*launch.requirements, "-r", path]
        return launch
    return Launch(spec, index, config, kind_path(spec.kind, registered, f"{where}.kind"), plugin_config)


def stats_of(plugin: Any) -> dict[str, Any]:
    """One plugin's entry of Engine.plugin_stats()."""
    spec = plugin.spec
    isolation = "process" if is_isolated(spec) else (spec.isolation.value if spec.isolation else "none")
    entry: dict[str, Any] = {"name": plugin.name, "isolation": isolation, "disabled": plugin.disabled}
    from cpexrt.engine.offthread import ThreadedHandler

    if isinstance(plugin.instance, IsolatedPlugin):
        entry.update(plugin.instance.stats())
    else:
        for handler in plugin.handlers.values():
            if isinstance(handler, ThreadedHandler):
                entry.update(handler.pool.stats())
                break
    return entry
