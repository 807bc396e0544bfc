"""A read-only view of a CMF message for policy code: iterate tool calls, text,
resources and media without copying anything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cpexrt._generated.records import (
    AudioSource,
    ContentPart,
    DocumentSource,
    ImageSource,
    Message,
    PromptRequest,
    PromptResult,
    Resource,
    ResourceReference,
    ToolCall,
    ToolResult,
    VideoSource,
)

Media = ImageSource | VideoSource | AudioSource | DocumentSource
# Where each known variant keeps its value (ContentPart.VARIANTS).
_FIELD: dict[str, str] = {tag: field for tag, (field, _) in ContentPart.VARIANTS.items()}


class MessageView:
    """Answers policy questions about a Message. It yields the message's own objects
    (no copies), offers no way to change them, and skips parts of content types it
    does not know."""

    __slots__ = ("_message",)

    def __init__(self, message: Message) -> None:
        self._message = message

    @property
    def role(self) -> str:
        return self._message.role

    @property
    def channel(self) -> str | None:
        return self._message.channel

    def parts(self, *content_types: str) -> Iterator[ContentPart]:
        for part in self._message.content:
            if not content_types or part.content_type in content_types:
                yield part

    def _values(self, *content_types: str) -> Iterator[Any]:
        # content_types are known variants: each part of one carries its value in _FIELD[tag].
        for part in self._message.content:
            tag = part.content_type
            if tag in content_types:
                yield getattr(part, _FIELD[tag])

    def tool_calls(self) -> Iterator[ToolCall]:
        # The question policy code asks most: one generator, no tuple of types.
        return (part.content for part in self._message.content if part.content_type == "tool_call")

    def tool_results(self) -> Iterator[ToolResult]:
        yield from self._values("tool_result")

    def texts(self) -> Iterator[str]:
        """The text parts (not thinking)."""
        yield from self._values("text")

    def text(self, separator: str = "\n") -> str:
        return separator.join(self.texts())

    def thinking(self) -> Iterator[str]:
        yield from self._values("thinking")

    def resources(self) -> Iterator[Resource | ResourceReference]:
        yield from self._values("resource", "resource_ref")

    def prompts(self) -> Iterator[PromptRequest | PromptResult]:
        yield from self._values("prompt_request", "prompt_result")

    def media(self) -> Iterator[Media]:
        yield from self._values("image", "video", "audio", "document")

    def has_tool_call(self, name: str) -> bool:
        return any(call.name == name for call in self.tool_calls())

    def unknown_parts(self) -> Iterator[ContentPart]:
        return (p for p in self._message.content if not p.known)
