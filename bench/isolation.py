"""Isolated plugins (isolation: process / thread), each figure beside its in-process
baseline measured in the same run:

- the added latency of an isolated no-op plugin (target: <= 25 us median), through
  the engine and through the Python host over libcpex.so;
- deadline -> caller return: how long after a plugin's timeout a caller blocked on a
  plugin stuck in C (time.sleep) gets its timeout error (target: p99 <= 50 ms), for
  isolation: process and isolation: thread;
- worker restart time (from the kill of a stuck worker to a ready replacement).

    python bench/isolation.py [-n N] [--deadlines N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = str(ROOT / "tests" / "plugins")
PAYLOAD = {"tool_name": "get_compensation", "user": "alice", "arguments": {"employee_id": "E-1001"}}


def config(isolation: str | None, cls: str = "NoOp", timeout: float = 30.0, workers: int = 1) -> str:
    extra = f", isolation: {isolation}, workers: {workers}" if isolation else ""
    return (
        f"plugin_settings: {{plugin_dirs: [{PLUGINS!r}], plugin_timeout: {timeout}}}\n"
        f"plugins:\n  - {{name: p, kind: 'cpex_isolation_plugins:{cls}', hooks: [tool_pre_invoke], on_error: ignore{extra}}}\n"
    )


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return samples[len(samples) // 2], samples[min(len(samples) * 99 // 100, len(samples) - 1)]


def timed(n: int, f: Callable[[], Any]) -> list[float]:
    for _ in range(n // 10 + 1):
        f()
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        f()
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


def round_trip_floor(n: int) -> tuple[float, float]:
    """A 40-byte message to another Python process over a socket pair and back, with
    nothing else: what any process isolation pays on this machine, in the same run."""
    import socket

    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        while True:
            data = theirs.recv(65536)
            if not data:
                os._exit(0)
            theirs.send(data)
    theirs.close()
    message = b"x" * 40

    def ping() -> None:
        ours.send(message)
        ours.recv(65536)

    samples = timed(n, ping)
    ours.close()
    os.waitpid(pid, 0)
    return percentiles(samples)


def latency(n: int) -> dict[str, float]:
    from cpexrt.engine.manager import Engine
    from cpexrt.host.manager import PluginManager

    figures: dict[str, float] = {}
    for where in ("engine", "python_sdk"):
        for isolation in (None, "process"):
            label = f"{where}_{isolation or 'in_process'}"
            if where == "engine":
                engine = Engine.from_yaml(config(isolation))
                engine.initialize()
                samples = timed(n, lambda e=engine: e.invoke("tool_pre_invoke", 0, PAYLOAD))
                engine.shutdown()
            else:
                with PluginManager(config(isolation)) as host:
                    host.initialize()
                    samples = timed(n, lambda h=host: h.invoke("tool_pre_invoke", PAYLOAD))
            figures[f"{label}_p50"], figures[f"{label}_p99"] = percentiles(samples)
    return figures


def go_latency(n: int) -> dict[str, float]:
    """The same no-op plugin from a Go host (bench/go -isolation)."""
    import json
    import subprocess

    binary = ROOT / "build" / "bench-go"
    subprocess.run(["go", "build", "-o", str(binary), "./go"], cwd=ROOT / "bench", check=True)
    proc = subprocess.run([str(binary), "-n", str(n), "-isolation", PLUGINS], capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(proc.stdout)
    return figures


def deadlines(n: int) -> dict[str, float]:
    from cpexrt.engine.manager import Engine

    timeout = 0.1
    figures: dict[str, float] = {}
    for isolation in ("process", "thread"):
        engine = Engine.from_yaml(config(isolation, "Sleeper", timeout, workers=4 if isolation == "thread" else 1))
        engine.initialize()
        late, restarts = [], []
        for _ in range(n):
            if isolation == "process":
                while True:  # the replacement of the last stuck worker is ready
                    s = engine.plugin_stats()[0]
                    if s["alive"] == s["workers"] and not s["busy"]:
                        break
                    time.sleep(0.005)
                if s["restarts"]:
                    restarts.append(s["last_restart_ms"])
            start = time.perf_counter()
            out = engine.invoke("tool_pre_invoke", 0, {"sleep": 0.6})
            late.append((time.perf_counter() - start - timeout) * 1000)
            assert out.errors and out.errors[0].code == "plugin_timeout", out.errors
        if isolation == "thread":
            time.sleep(0.7)  # the abandoned sleeps end
        engine.shutdown()
        figures[f"deadline_{isolation}_p50_ms"], figures[f"deadline_{isolation}_p99_ms"] = percentiles(late)
        if restarts:
            figures["restart_p50_ms"], figures["restart_p99_ms"] = percentiles(restarts)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20000, help="invokes per latency figure")
    parser.add_argument("--deadlines", type=int, default=100, help="stuck calls per deadline figure")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}; the machine is shared: figures are noisy")
    floor = round_trip_floor(args.n)
    lat = latency(args.n)
    go = go_latency(args.n)
    lat["go_in_process_p50"], lat["go_in_process_p99"] = go["go_noop_none_p50"], go["go_noop_none_p99"]
    lat["go_process_p50"], lat["go_process_p99"] = go["go_noop_process_p50"], go["go_noop_process_p99"]
    dl = deadlines(args.deadlines)
    rows = [("floor: socket-pair round trip to another process, p50 / p99", f"{floor[0]:.1f} / {floor[1]:.1f} us", "")]
    for where in ("engine", "python_sdk", "go"):
        base, iso = lat[f"{where}_in_process_p50"], lat[f"{where}_process_p50"]
        added = iso - base
        rows.append((f"{where}: no-op plugin in-process p50 / p99", f"{base:.1f} / {lat[f'{where}_in_process_p99']:.1f} us", ""))
        rows.append((f"{where}: no-op plugin isolated p50 / p99", f"{iso:.1f} / {lat[f'{where}_process_p99']:.1f} us", ""))
        rows.append((f"{where}: added by isolation, p50", f"{added:.1f} us", "<= 25 us " + ("ok" if added <= 25 else "MISSED")))
    for isolation in ("process", "thread"):
        p50, p99 = dl[f"deadline_{isolation}_p50_ms"], dl[f"deadline_{isolation}_p99_ms"]
        rows.append(
            (
                f"deadline -> caller return, isolation {isolation}, p50 / p99",
                f"{p50:.1f} / {p99:.1f} ms",
                "p99 <= 50 ms " + ("ok" if p99 <= 50 else "MISSED"),
            )
        )
    if "restart_p50_ms" in dl:
        rows.append(
            ("worker restart (kill -> ready) p50 / p99", f"{dl['restart_p50_ms']:.0f} / {dl['restart_p99_ms']:.0f} ms", "")
        )
    width = max(len(r[0]) for r in rows)
    for figure, value, target in rows:
        print(f"{figure:<{width}}  {value:>20}  {target}")


if __name__ == "__main__":
    main()
