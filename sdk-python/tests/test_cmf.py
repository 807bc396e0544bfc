"""CMF payloads: typed messages for plugins, the read-only view, unknown parts kept."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from conftest import config, plugin
from cpexrt._generated.records import ContentPart, ImageSource, Message, ToolCall
from cpexrt.cmf import MessageView
from cpexrt.engine import Engine
from cpexrt.errors import InvalidInputError
from cpexrt.host import PluginManager as HostManager

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors"
UNKNOWN_PART = msgpack.unpackb((VECTORS / "ContentPart.unknown_variant.msgpack").read_bytes())
HOOK = "cmf.tool_pre_invoke"


def message(*tools: str) -> dict[str, object]:
    parts: list[dict[str, object]] = [{"content_type": "text", "text": "please"}]
    parts += [{"content_type": "tool_call", "content": {"tool_call_id": f"c{i}", "name": t}} for i, t in enumerate(tools)]
    return {"message": {"schema_version": "1.0", "role": "assistant", "content": [*parts, UNKNOWN_PART]}}


def test_the_view_iterates_without_copying() -> None:
    msg = Message.from_wire(message("search", "delete")["message"])
    view = MessageView(msg)
    calls = list(view.tool_calls())
    assert [c.name for c in calls] == ["search", "delete"]
    assert calls[0] is msg.content[1].value
    assert view.text() == "please" and view.has_tool_call("delete") and not view.has_tool_call("x")
    assert [p.content_type for p in view.unknown_parts()] == ["hologram"]
    media = Message(schema_version="1", role="user", content=[ContentPart.new_image(ImageSource(type="url", data="u"))])
    assert [m.data for m in MessageView(media).media()] == ["u"]


def test_a_cmf_plugin_gets_a_typed_message_and_can_deny() -> None:
    m = Engine.from_yaml(config(plugin("policy", "CmfToolPolicy", hooks=f"[{HOOK}]", config="{forbidden: [delete]}")))
    m.initialize()
    ok = m.invoke(HOOK, 1, message("search"))
    assert ok.continue_processing and ok.metadata == {"tool_calls": ["search"], "text": "please"}
    denied = m.invoke(HOOK, 1, message("search", "delete"))
    assert denied.violation is not None and denied.violation.plugin_name == "policy"
    assert denied.violation.details == {"tool_call_id": "c1"}


def test_a_malformed_cmf_payload_names_the_field() -> None:
    m = Engine.from_yaml(config(plugin("policy", "CmfToolPolicy", hooks=f"[{HOOK}]")))
    m.initialize()
    with pytest.raises(InvalidInputError, match=r"payload\.message\.role"):
        m.invoke(HOOK, 1, {"message": {"schema_version": "1", "content": []}})


def test_unknown_parts_survive_a_modification_through_the_library() -> None:
    with HostManager(config(plugin("append", "CmfAppendText", hooks=f"[{HOOK}]", config="{text: done}"))) as m:
        m.initialize()
        out = m.invoke(HOOK, message("search"), payload_type=1)
    raw = msgpack.unpackb(out.result.modified_payload or b"")
    content = raw["message"]["content"]
    assert content[-2] == UNKNOWN_PART  # kept as received, in place
    assert content[-1] == {"content_type": "text", "text": "done"}
    assert isinstance(Message.from_wire(raw["message"]).content[1].value, ToolCall)


def test_the_view_covers_every_kind_of_part() -> None:
    from cpexrt._generated.records import PromptRequest, Resource, ResourceReference, ToolResult

    parts = [
        ContentPart.new_thinking("hmm"),
        ContentPart.new_tool_result(ToolResult(tool_call_id="c1", tool_name="search", content={"hits": 3})),
        ContentPart.new_resource(Resource(resource_request_id="r1", uri="file:///a", resource_type="file")),
        ContentPart.new_resource_ref(ResourceReference(resource_request_id="r2", uri="file:///b", resource_type="file")),
        ContentPart.new_prompt_request(PromptRequest(prompt_request_id="p1", name="summarise")),
    ]
    view = MessageView(Message(schema_version="1", role="tool", content=parts, channel="c"))
    assert (view.role, view.channel) == ("tool", "c")
    assert list(view.thinking()) == ["hmm"] and view.text() == ""
    assert [r.tool_name for r in view.tool_results()] == ["search"]
    assert [r.uri for r in view.resources()] == ["file:///a", "file:///b"]
    assert [p.name for p in view.prompts() if isinstance(p, PromptRequest)] == ["summarise"]
    assert [p.content_type for p in view.parts("thinking", "resource")] == ["thinking", "resource"]
