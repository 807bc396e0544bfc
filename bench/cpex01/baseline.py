"""Runs inside its own virtual environment with cpex 0.1.x from PyPI (bench/run.py makes
it): the demo pipeline through the framework's in-process invoke_hook. Prints JSON."""

import asyncio
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cpex.framework import GlobalContext, PluginManager  # noqa: E402
from cpex.framework.hooks.tools import ToolPreInvokePayload  # noqa: E402

CONFIG = f"""
plugin_dirs: [{HERE!r}]
plugins:
  - name: identity-checker
    kind: cpex01_plugins.IdentityChecker
    hooks: [tool_pre_invoke]
    mode: sequential
    priority: 10
  - name: pii-guard
    kind: cpex01_plugins.PIIGuard
    hooks: [tool_pre_invoke]
    mode: sequential
    priority: 20
  - name: audit-logger
    kind: cpex01_plugins.AuditLogger
    hooks: [tool_pre_invoke]
    mode: fire_and_forget
    priority: 100
    on_error: ignore
"""


async def main(n: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(CONFIG)
    manager = PluginManager(f.name)
    await manager.initialize()
    payload = ToolPreInvokePayload(name="get_compensation", args={"employee_id": "E-1001", "pii_clearance": True})

    async def once() -> None:
        context = GlobalContext(request_id="bench", user="alice")
        result, _ = await manager.invoke_hook("tool_pre_invoke", payload, context)
        if not result.continue_processing:
            raise SystemExit(f"baseline pipeline denied: {result.violation}")

    for _ in range(n // 10 + 1):
        await once()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await once()
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    await manager.shutdown()
    return {"cpex01_pipeline_p50": samples[n // 2] / 1000, "cpex01_pipeline_p99": samples[n * 99 // 100] / 1000}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))))
