"""The plugin-authoring API: subclass Plugin, write one handler per hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_HOOK_ATTR = "__cpex_hooks__"

LEGACY_HOOKS = (
    "tool_pre_invoke",
    "tool_post_invoke",
    "prompt_pre_fetch",
    "prompt_post_fetch",
    "resource_pre_fetch",
    "resource_post_fetch",
    "identity_resolve",
    "token_delegate",
)
CMF_HOOKS = (
    "cmf.tool_pre_invoke",
    "cmf.tool_post_invoke",
    "cmf.llm_input",
    "cmf.llm_output",
    "cmf.prompt_pre_fetch",
    "cmf.prompt_post_fetch",
    "cmf.resource_pre_fetch",
    "cmf.resource_post_fetch",
)
# The other hooks py-cpex 0.1.4 registers (agents, HTTP, and evaluate, whose payload is
# a CMF MessagePayload).
PYCPEX_HOOKS = (
    "agent_pre_invoke",
    "agent_post_invoke",
    "http_pre_request",
    "http_post_request",
    "http_auth_resolve_user",
    "http_auth_check_permission",
    "evaluate",
)
BUILTIN_HOOKS = LEGACY_HOOKS + CMF_HOOKS + PYCPEX_HOOKS

# Hook name -> the name of its payload record in cpexrt._generated.records (py-cpex's
# payload class, field for field). evaluate and the cmf.* hooks carry a MessagePayload.
HOOK_PAYLOADS: dict[str, str] = {
    "tool_pre_invoke": "ToolPreInvokePayload",
    "tool_post_invoke": "ToolPostInvokePayload",
    "prompt_pre_fetch": "PromptPrehookPayload",
    "prompt_post_fetch": "PromptPosthookPayload",
    "resource_pre_fetch": "ResourcePreFetchPayload",
    "resource_post_fetch": "ResourcePostFetchPayload",
    "agent_pre_invoke": "AgentPreInvokePayload",
    "agent_post_invoke": "AgentPostInvokePayload",
    "http_pre_request": "HttpPreRequestPayload",
    "http_post_request": "HttpPostRequestPayload",
    "http_auth_resolve_user": "HttpAuthResolveUserPayload",
    "http_auth_check_permission": "HttpAuthCheckPermissionPayload",
    "identity_resolve": "IdentityPayload",
    "token_delegate": "DelegationPayload",
    "evaluate": "MessagePayload",
    **{name: "MessagePayload" for name in CMF_HOOKS},
}

__all__ = [
    "BUILTIN_HOOKS",
    "CMF_HOOKS",
    "HOOK_PAYLOADS",
    "LEGACY_HOOKS",
    "PYCPEX_HOOKS",
    "Plugin",
    "PluginContext",
    "hook",
]


def hook(*names: str) -> Callable[[F], F]:
    """Binds a handler to hook names that are not valid method names (e.g. "cmf.llm_input"
    or any custom hook). Without it, a method handles the hook of its own name, with
    "." written as "_"."""
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError("@hook() needs at least one non-empty hook name")

    def mark(fn: F) -> F:
        setattr(fn, _HOOK_ATTR, tuple(getattr(fn, _HOOK_ATTR, ())) + names)
        return fn

    return mark


# A bound context's request before the plugin first reads it.
_UNREAD: Any = object()


class PluginContext:
    """What a handler sees besides the payload: the extensions of the call (its own
    copy, made on first access), its own per-request state (kept between hooks of one
    request when the host threads the context table), the manager-wide state shared
    by all plugins, the request's global context as the host passed it (`request`:
    request_id, user, tenant_id, server_id, content_type, metadata; a copy, or None)
    and `request_state`, per-request state shared by the plugins of the request (what
    py-cpex calls global_context.state)."""

    __slots__ = (
        "_extensions",
        "_load",
        "_state",
        "global_state",
        "_request",
        "_load_request",
        "_request_state",
        "_source",
        "_key",
    )

    def __init__(
        self,
        extensions: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
        global_state: dict[str, Any] | None = None,
        *,
        load_extensions: Callable[[], dict[str, Any]] | None = None,
        load_request: Callable[[], dict[str, Any] | None] | None = None,
        request_state: dict[str, Any] | None = None,
    ) -> None:
        self._extensions = extensions
        self._load = load_extensions
        self._state: dict[str, Any] | None = {} if state is None else state
        self.global_state: dict[str, Any] = {} if global_state is None else global_state
        self._request: dict[str, Any] | None = None
        self._load_request = load_request
        self._request_state: dict[str, Any] | None = {} if request_state is None else request_state
        self._source: Any = None
        self._key: Any = None

    @property
    def state(self) -> dict[str, Any]:
        state = self._state
        if state is None:
            state = self._state = self._source.context_state(self._key)
        return state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self._state = value

    @property
    def request_state(self) -> dict[str, Any]:
        state = self._request_state
        if state is None:
            state = self._request_state = self._source.context_request_state()
        return state

    @request_state.setter
    def request_state(self, value: dict[str, Any]) -> None:
        self._request_state = value

    def held_states(self) -> tuple[bool, bool]:
        """Whether the plugin's state and the request's shared state hold anything,
        found without making the copies that reading `state` and `request_state` make
        (for the engine's adapters, which copy them into a framework's own context)."""
        state, request_state = self.held_state_values()
        return bool(state), bool(request_state)

    def held_state_values(self) -> tuple[Any, Any]:
        """The plugin's state and the request's shared state as they are held now,
        without the copies `state` and `request_state` make (None: none yet); for
        reading only (the engine sends them to an isolated plugin's worker)."""
        state, request_state = self._state, self._request_state
        if state is None or request_state is None:
            held_state, held_request_state = self._source.context_held_states(self._key)
            if state is None:
                state = held_state
            if request_state is None:
                request_state = held_request_state
        return state, request_state

    def adapter_view(self) -> tuple[dict[str, Any] | None, bool, bool]:
        """`request` and held_states() in one call (for the engine's adapters): the
        request (a copy, or None), whether the plugin's state holds anything, whether
        the request's shared state does."""
        source = self._source
        if (
            source is not None
            and self._request is _UNREAD
            and self._load_request is None
            and self._state is None
            and self._request_state is None
        ):
            view: tuple[dict[str, Any] | None, bool, bool] = source.context_view(self._key)
            return view
        return (self.request, *self.held_states())

    @property
    def request(self) -> dict[str, Any] | None:
        load = self._load_request
        if load is not None:
            self._request, self._load_request = load(), None
        elif self._request is _UNREAD:
            self._request = self._source.context_request()
        return self._request

    @property
    def extensions(self) -> dict[str, Any]:
        extensions = self._extensions
        if extensions is None:
            load = self._load
            if self._source is not None:
                extensions = self._extensions = self._source.context_extensions(self._key, load)
            else:
                extensions = self._extensions = load() if load is not None else {}
        return extensions

    @extensions.setter
    def extensions(self, value: dict[str, Any]) -> None:
        self._extensions = value

    def __repr__(self) -> str:
        return f"PluginContext(extensions={self.extensions!r}, state={self.state!r}, global_state={self.global_state!r})"


_new_context = object.__new__


def bound_context(source: Any, key: Any, global_state: dict[str, Any], extensions: Any) -> PluginContext:
    """The engine's context for one plugin run (cpexrt.engine.executor): nothing is
    computed until the plugin reads it. source answers context_state(key),
    context_request_state(), context_held_states(key), context_view(key), context_request()
    and context_extensions(key,
    extensions): the plugin's state, the request's shared state, a copy of the
    request, and its view of extensions (what the call carried when the plugin
    started)."""
    ctx: PluginContext = _new_context(PluginContext)
    ctx._extensions = None
    ctx._load = extensions
    ctx._state = None
    ctx.global_state = global_state
    ctx._request = _UNREAD
    ctx._load_request = None
    ctx._request_state = None
    ctx._source = source
    ctx._key = key
    return ctx


def detached_context(global_state: dict[str, Any], load_extensions: Callable[[], dict[str, Any]] | None) -> PluginContext:
    """PluginContext(None if load_extensions else {}, {}, global_state,
    load_extensions=load_extensions), made as bound_context makes its contexts: for a
    run with no request state to read (a fire-and-forget follower's, on the runtime
    loop)."""
    ctx: PluginContext = _new_context(PluginContext)
    ctx._extensions = None if load_extensions is not None else {}
    ctx._load = load_extensions
    ctx._state = {}
    ctx.global_state = global_state
    ctx._request = None
    ctx._load_request = None
    ctx._request_state = {}
    ctx._source = None
    ctx._key = None
    return ctx


class Plugin:
    """Base class of plugins. The constructor receives the plugin's `config` mapping
    from the YAML; `initialize` and `shutdown` may be sync or async."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def initialize(self) -> Any:
        return None

    def shutdown(self) -> Any:
        return None

    @classmethod
    def declared_hooks(cls) -> list[str]:
        """The hooks the class handles by itself: @hook names and methods named after
        a built-in hook. Used when the config lists no hooks for the plugin."""
        found: list[str] = []
        for attr in dir(cls):
            fn = getattr(cls, attr, None)
            found += getattr(fn, _HOOK_ATTR, ())
        for name in BUILTIN_HOOKS:
            if name not in found and cls.handler_for(name) is not None:
                found.append(name)
        return found

    @classmethod
    def handler_for(cls, hook_name: str) -> str | None:
        """The name of the method that handles hook_name, or None."""
        for attr in dir(cls):
            fn = getattr(cls, attr, None)
            if hook_name in getattr(fn, _HOOK_ATTR, ()):
                return attr
        method = hook_name.replace(".", "_")
        if method.isidentifier() and callable(getattr(cls, method, None)) and not hasattr(Plugin, method):
            return method
        return None
