"""The generic demo from a Python host: the same plugins and scenarios as the Go demo
(examples/generic), through the same libcpex.so. Run it from examples/."""

from __future__ import annotations

import sys
from typing import Any

from cpexrt.host import BackgroundTasks, InvokeResult, PluginManager


def describe(res: InvokeResult[Any]) -> str:
    if not res.denied:
        return "ALLOWED"
    v = res.violation
    assert v is not None
    return f"DENIED by {v.plugin_name}: {v.reason} (code {v.code})"


def main(config_path: str = "configs/generic.yaml") -> None:
    with PluginManager() as m:
        m.load_config_file(config_path)
        m.initialize()
        print(f"cpex demo: generic payloads (plugins: {', '.join(m.plugin_names())})")
        background: list[BackgroundTasks] = []

        def invoke(hook: str, call: dict[str, Any], context: Any = None) -> InvokeResult[dict[str, Any]]:
            ext = {"meta": {"entity_type": "tool", "entity_name": call["tool_name"]}}
            res = m.invoke(hook, call, extensions=ext, context=context)
            if res.background is not None:
                background.append(res.background)
            return res

        args = {"employee_id": "E-1001"}
        res = invoke("tool_pre_invoke", {"tool_name": "get_compensation", "user": "alice", "arguments": args})
        print(f"[1] get_compensation as alice, no clearance -> {describe(res)}")

        call = {"tool_name": "get_compensation", "user": "alice", "pii_clearance": True, "arguments": args}
        res = invoke("tool_pre_invoke", call)
        print(f"[2] get_compensation as alice, with clearance -> {describe(res)}")
        res = invoke("tool_post_invoke", call, res.context)
        print(f"    tool_post_invoke with the threaded context table -> {describe(res)}")

        res = invoke("tool_pre_invoke", {"tool_name": "list_departments", "user": "bob"})
        print(f"[3] list_departments as bob -> {describe(res)}")

        res = invoke("tool_pre_invoke", {"tool_name": "list_departments"})
        print(f"[4] list_departments with no user -> {describe(res)}")

        failures = sorted(f"{e.plugin_name}: {e.message}" for bg in background for e in bg.wait())
        print(f"audit: {len(background)} background tasks finished, {len(failures)} errors{'; '.join(failures)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
