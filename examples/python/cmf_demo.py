"""The CMF demo from a Python host: the same plugins and messages as the Go demo
(examples/cmf), through the same libcpex.so. Run it from examples/."""

from __future__ import annotations

import sys

from cpexrt._generated.records import ContentPart, Extensions, HttpExtension, Message, MessagePayload, ToolCall
from cpexrt.host import PluginManager


def message(tool: str) -> MessagePayload:
    return MessagePayload(
        message=Message(
            schema_version="1.0",
            role="assistant",
            content=[
                ContentPart.new_text(f"Calling {tool}."),
                ContentPart.new_tool_call(ToolCall(tool_call_id="call-1", name=tool, arguments={"query": "quarterly report"})),
            ],
        )
    )


def main(config_path: str = "configs/cmf.yaml") -> None:
    with PluginManager() as m:
        m.load_config_file(config_path)
        m.initialize()
        print(f"cpex demo: CMF messages (plugins: {', '.join(m.plugin_names())})")
        for i, tool in enumerate(["search_docs", "delete_database"], start=1):
            ext = Extensions(http=HttpExtension(request_headers={"host": "gateway.local"}))
            res = m.invoke("cmf.tool_pre_invoke", message(tool), extensions=ext)
            if res.denied:
                v = res.violation
                assert v is not None
                print(f"[{i}] assistant calls {tool} -> DENIED by {v.plugin_name}: {v.reason} (code {v.code})")
                continue
            print(f"[{i}] assistant calls {tool} -> ALLOWED")
            modified = res.modified_extensions
            if modified is not None and modified.http is not None:
                headers = modified.http.response_headers or {}
                print(f"    response headers: {', '.join(f'{k}={headers[k]}' for k in sorted(headers))}")
            for e in res.errors:
                print(f"    refused: {e.message}")


if __name__ == "__main__":
    main(*sys.argv[1:])
