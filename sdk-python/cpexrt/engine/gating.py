"""Capability gating of extensions: what each plugin sees, and which of its writes the
engine accepts.

A plugin gets its own copy of the slots its capabilities let it read, so an edit made
in place never reaches another plugin. What it proposes back (modify(extensions=...))
is compared with what it was shown slot by slot, at the granularity of the tier
table: a change to an immutable slot, a shrinking monotonic slot, or a guarded slot
written without its capability is refused, naming the field, and a refused write
fails the plugin (none of its changes apply); otherwise the changes are merged into
the call's extensions. Slots the plugin could not see are never touched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cpexrt._generated.slots import SLOTS, Slot
from cpexrt.wire import WireRecord

Path = tuple[str, ...]
_MISSING: Any = object()
_BY_PATH: dict[Path, Slot] = {s.path: s for s in SLOTS}
# Every path with listed slots under it (security, security.subject), and the keys of
# those slots: such a container is compared without them, and they on their own.
_CHILDREN: dict[Path, frozenset[str]] = {
    prefix: frozenset(p[len(prefix)] for p in _BY_PATH if len(p) > len(prefix) and p[: len(prefix)] == prefix)
    for prefix in {s.path[:i] for s in SLOTS for i in range(1, len(s.path))}
}


@dataclass(frozen=True)
class Grant:
    """What one plugin's capabilities allow, computed once at load."""

    capabilities: frozenset[str]
    hidden: tuple[Path, ...]
    # The top-level slots with something hidden: a view needs work only for these.
    hidden_roots: frozenset[str]
    # The verdict on a change of each top-level key that is a whole slot of its own
    # (no listed slot below it, not monotonic): None, taken as it is; else its refusal,
    # made once (read, never changed). A key not listed (a container of slots, a
    # monotonic slot) takes accept()'s walk; an unknown key is refused (_UNKNOWN_KEY) as
    # the walk refuses it.
    roots: dict[str, Refusal | None] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, capabilities: list[str] | frozenset[str]) -> Grant:
        caps = frozenset(capabilities)
        hidden = tuple(s.path for s in SLOTS if not _readable(s, caps))
        grant = cls(caps, hidden, frozenset(p[0] for p in hidden))
        for slot in SLOTS:
            if len(slot.path) == 1 and slot.path not in _CHILDREN and slot.tier != "monotonic":
                key = slot.path[0]
                grant.roots[key] = None if grant.may_write(slot) else Refusal("extensions." + key, _refused_why(slot))
        return grant

    def may_write(self, slot: Slot) -> bool:
        return slot.tier == "mutable" or (slot.write is not None and slot.write in self.capabilities)


def _refused_why(slot: Slot) -> str:
    return "immutable" if slot.tier == "immutable" else f"needs the capability {slot.write}"


def _readable(slot: Slot, caps: frozenset[str]) -> bool:
    if slot.read is not None and slot.read not in caps:
        return False
    return not slot.read_any or any(c in caps for c in slot.read_any)


def hide(view: dict[str, Any], grant: Grant) -> dict[str, Any]:
    """Removes from view (a private copy of the extensions) the slots the plugin may
    not read."""
    if view and not grant.hidden_roots.isdisjoint(view):
        for path in grant.hidden:
            if path[0] in view:
                _delete(view, path)
    return view


def hides_any(tree: dict[str, Any], grant: Grant) -> bool:
    """Whether hide() would remove anything from a copy of tree (read, not changed):
    a hidden slot present in it. When not, tree is what the plugin was shown."""
    if grant.hidden_roots.isdisjoint(tree):
        return False
    for path in grant.hidden:
        node: Any = tree
        for key in path[:-1]:  # as _delete walks
            node = node.get(key)
            if not isinstance(node, dict):
                break
        else:
            if path[-1] in node:
                return True
    return False


def as_wire(extensions: Any) -> Any:
    return extensions.to_wire() if isinstance(extensions, WireRecord) else extensions


@dataclass(frozen=True)
class Refusal:
    """A refused write: the field and why (a grant's, made once, is shared by every
    call that refuses that write; nobody changes one)."""

    field: str
    why: str
    # How a refused write's error lists it, "<field> (<why>)": made with the refusal.
    listed: str = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "listed", f"{self.field} ({self.why})")


_UNKNOWN_KEY = "not a writable extension slot (write free-form data under extensions.custom)"
# The top-level keys under which the tier table lists slots: a change under any other
# key (no slot of that name) is refused whole.
_SLOT_ROOTS = frozenset(p[0] for p in _BY_PATH)


def accept(
    current: dict[str, Any], view: dict[str, Any], proposed: dict[str, Any], grant: Grant
) -> tuple[dict[str, Any], list[Refusal], set[str]]:
    """Merges the allowed changes of proposed (against view, what the plugin was
    shown) over current, the call's extensions, and returns the merged map with the
    refusals and the top-level slots that changed. Neither current nor view is
    changed: the maps on a changed path are copied, the rest is shared with current
    (so both may be the engine's own read-only values).

    The top-level keys are compared first, each change judged by the grant's table of
    whole top-level slots (Grant.roots); only a change under a container of slots
    (security) or a monotonic slot takes the walk over the tier table's paths, which
    then judges the whole proposal (the same verdicts, in the same order)."""
    roots = grant.roots
    result: dict[str, Any] | None = None
    refusals: list[Refusal] = []
    changed: set[str] = set()
    missing = _MISSING
    # view's keys when proposed has none of its own (a set comparison of the key views, in C).
    keys: Any = view if dict.keys(proposed) <= dict.keys(view) else [*view, *(k for k in proposed if k not in view)]
    for key in keys:
        new = proposed.get(key, missing)
        if view.get(key, missing) == new:
            continue
        if key in roots:
            refusal = roots[key]
        elif key in _SLOT_ROOTS or type(key) is not str:
            return _accept_paths(current, view, proposed, grant)
        else:
            refusal = Refusal("extensions." + key, _UNKNOWN_KEY)
        if refusal is not None:
            refusals.append(refusal)
            continue
        if result is None:
            result = dict(current)
        if new is missing:
            result.pop(key, None)
        else:
            result[key] = new
        changed.add(key)
    return (result if result is not None else dict(current)), refusals, changed


def _accept_paths(
    current: dict[str, Any], view: dict[str, Any], proposed: dict[str, Any], grant: Grant
) -> tuple[dict[str, Any], list[Refusal], set[str]]:
    """accept() by the walk over the tier table's most specific paths."""
    result = dict(current)
    refusals: list[Refusal] = []
    changed: set[str] = set()
    for path in _changed_paths(view, proposed):
        slot = _governing(path)
        if slot is None:
            refusals.append(Refusal(_field(path), _UNKNOWN_KEY))
            continue
        if not grant.may_write(slot):
            refusals.append(Refusal(_field(path), _refused_why(slot)))
            continue
        new = _get(proposed, path)
        if slot.tier == "monotonic":
            old = _get(view, path)
            if new is _MISSING or not _grows(None if old is _MISSING else old, new):
                refusals.append(Refusal(_field(path), "monotonic: entries may only be added, never removed or changed"))
                continue
            _set(result, path, _union(_get(result, path), new))
        elif new is _MISSING:
            _delete_copying(result, path)
        else:
            _set(result, path, new)
        changed.add(path[0])
    return result, refusals, changed


def _field(path: Path) -> str:
    return "extensions." + ".".join(path)


def _changed_paths(view: dict[str, Any], proposed: dict[str, Any]) -> list[Path]:
    """The most specific tier-table paths (or unknown keys) whose values differ. A
    container slot (security, security.subject) is compared without its listed
    children, which are compared on their own."""
    changed: list[Path] = []
    _walk((), view, proposed, changed)
    return changed


def _walk(prefix: Path, old: dict[str, Any], new: dict[str, Any], changed: list[Path]) -> None:
    # old's keys when new has none of its own (a set comparison of the key views, in C).
    keys: Any = old if dict.keys(new) <= dict.keys(old) else [*old, *(k for k in new if k not in old)]
    if prefix in _BY_PATH:  # a slot's own fields were compared already; only its listed children remain
        keys = [k for k in keys if (*prefix, k) in _BY_PATH]
    for key in keys:
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a == b:
            continue
        path = (*prefix, key)
        if path in _CHILDREN and (a is _MISSING or isinstance(a, dict)) and (b is _MISSING or isinstance(b, dict)):
            a_dict = a if isinstance(a, dict) else {}
            b_dict = b if isinstance(b, dict) else {}
            if path in _BY_PATH and _strip_children(path, a_dict) != _strip_children(path, b_dict):
                changed.append(path)
            _walk(path, a_dict, b_dict, changed)
        else:
            changed.append(path)


def _strip_children(path: Path, value: dict[str, Any]) -> dict[str, Any]:
    children = _CHILDREN[path]
    return {k: v for k, v in value.items() if k not in children}


def _governing(path: Path) -> Slot | None:
    for i in range(len(path), 0, -1):
        slot = _BY_PATH.get(path[:i])
        if slot is not None:
            return slot
    return None


def _grows(old: Any, new: Any) -> bool:
    """new contains everything old had: lists keep their entries (strings as a set,
    records as a prefix), maps keep their keys, numbers do not decrease."""
    if old is None:
        return True
    if isinstance(old, list) and isinstance(new, list):
        if all(isinstance(x, str) for x in old):
            return set(old) <= set(new)
        return new[: len(old)] == old
    if isinstance(old, dict) and isinstance(new, dict):
        return all(k in new and _grows(v, new[k]) for k, v in old.items())
    if isinstance(old, bool) or isinstance(new, bool):
        return old == new or (old is False and new is True)
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return new >= old
    return bool(old == new)


def _union(current: Any, new: Any) -> Any:
    """Merges a grown value into the call's (which may hold entries the plugin did not
    see): lists gain the new entries, maps merge key by key."""
    if current is _MISSING or current is None:
        return new
    if isinstance(current, list) and isinstance(new, list):
        if all(isinstance(x, str) for x in current):
            return current + [x for x in new if x not in current]
        return new if new[: len(current)] == current else current + new[len(current) :]
    if isinstance(current, dict) and isinstance(new, dict):
        return {**current, **{k: _union(current.get(k, _MISSING), v) for k, v in new.items()}}
    return new


def _get(tree: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return _MISSING
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], path: Path, value: Any) -> None:
    """Sets path in tree (a private top-level map), copying the maps on the way:
    those below tree may be shared with a read-only value."""
    for key in path[:-1]:
        nxt = tree.get(key)
        nxt = tree[key] = dict(nxt) if isinstance(nxt, dict) else {}
        tree = nxt
    tree[path[-1]] = value


def _delete_copying(tree: dict[str, Any], path: Path) -> None:
    """Removes path from tree, copying the maps on the way (as _set)."""
    if _get(tree, path) is _MISSING:
        return
    for key in path[:-1]:
        tree = tree[key] = dict(tree[key])
    tree.pop(path[-1], None)


def _delete(tree: dict[str, Any], path: Path) -> None:
    """Removes path from tree (a private copy), in place."""
    for key in path[:-1]:
        tree = tree.get(key)  # type: ignore[assignment]
        if not isinstance(tree, dict):
            return
    tree.pop(path[-1], None)
