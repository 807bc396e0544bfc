"""Python SDK invoke latency over libcpex.so, against the engine called directly in the
same process (the baseline: the ratio is the cost of the ABI). Figures, not asserts."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "sdk-python"), str(ROOT / "tests" / "plugins")]

from cpex.engine import PluginManager as EngineManager  # noqa: E402
from cpex.host import PluginManager as HostManager  # noqa: E402

CONFIG = f"""
plugin_settings: {{plugin_dirs: [{str(ROOT / 'tests' / 'plugins')!r}]}}
plugins:
  - {{name: allow, kind: "cpex_test_plugins:Allow", hooks: [tool_pre_invoke]}}
"""
PAYLOAD = {"tool_name": "list_departments", "user": "alice", "arguments": {"limit": 10}}


def measure(n: int, f: Callable[[], Any]) -> tuple[float, float]:
    for _ in range(n // 10 + 1):
        f()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        f()
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return statistics.median(samples) / 1000, samples[n * 99 // 100] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20000)
    n = parser.parse_args().n
    engine = EngineManager.from_yaml(CONFIG)
    engine.initialize()
    print(f"{'python figure':<44} {'median µs':>10} {'p99 µs':>10} {'÷engine':>8}")
    with HostManager(CONFIG) as host:
        host.initialize()
        for hook, label in (("tool_post_invoke", "no plugins"), ("tool_pre_invoke", "one plugin")):
            base = measure(n, lambda: engine.invoke(hook, 0, PAYLOAD))
            sdk = measure(n, lambda: host.invoke(hook, PAYLOAD))
            print(f"{'engine direct (baseline), ' + label:<44} {base[0]:>10.1f} {base[1]:>10.1f} {1.0:>8.1f}")
            print(f"{'Python SDK over libcpex.so, ' + label:<44} {sdk[0]:>10.1f} {sdk[1]:>10.1f} {sdk[0] / base[0]:>8.1f}")
    engine.shutdown()


if __name__ == "__main__":
    main()
