"""Unit tests of the example plugin: once directly, once through a config."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cpexrt import PluginContext
from cpexrt.engine import Engine
from tool_allowlist import ToolAllowlist


def test_the_handler_alone() -> None:
    plugin = ToolAllowlist({"allowed": ["search"]})
    ctx = PluginContext(extensions={})
    assert plugin.tool_pre_invoke({"tool_name": "search"}, ctx).continue_processing
    assert ctx.state == {"tool": "search"}
    denied = plugin.tool_pre_invoke({"tool_name": "rm"}, PluginContext(extensions={}))
    assert denied.violation is not None and denied.violation.code == "tool_not_allowed"
    redacted = asyncio.run(plugin.tool_post_invoke({"result": {"secret": "s3cr3t"}}, ctx))
    assert redacted.modified_payload == {"result": {"secret": "***"}}


CONFIG = f"""
plugin_settings:
  plugin_dirs: [{str(Path(__file__).parent)!r}]
plugins:
  - name: allowlist
    kind: tool_allowlist:ToolAllowlist
    hooks: [tool_pre_invoke, tool_post_invoke, gateway.health]
    mode: sequential
    priority: 10
    on_error: fail
    config:
      allowed: [search, calendar]
"""


def test_through_the_engine() -> None:
    manager = Engine.from_yaml(CONFIG)
    manager.initialize()
    pre = manager.invoke("tool_pre_invoke", 0, {"tool_name": "search"})
    assert pre.continue_processing and pre.context is not None
    post = manager.invoke("tool_post_invoke", 0, {"result": {"secret": "x"}}, context=pre.context)
    assert post.modified_payload == {"result": {"secret": "***"}}
    denied = manager.invoke("tool_pre_invoke", 0, {"tool_name": "rm"})
    assert denied.violation is not None and denied.violation.plugin_name == "allowlist"
    assert manager.invoke("gateway.health", 0, {}).metadata == {"allowlist_size": 2}
    manager.shutdown()


def test_the_readme_shows_this_plugin_verbatim() -> None:
    root = Path(__file__).resolve().parents[2]
    source = (Path(__file__).parent / "tool_allowlist.py").read_text()
    assert f"```python\n{source}```" in (root / "README.md").read_text()
