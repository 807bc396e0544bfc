"""Entity-name patterns of routes and plugin conditions, wildmatch style (as the Rust
cpex, which uses the `wildmatch` crate): `*` matches any run of characters (none
included, `/` included), `?` exactly one character, everything else itself; the whole
name must match, case-sensitively.

Anything a reader could take for a richer syntax (`[...]`, `{a,b}`, a `\\` escape, a
regular expression's leading `^`, trailing `$` or `.+`) is refused when the config
loads: such a pattern would otherwise load and silently match nothing. `.*` is not
refused: `math.*` is a natural glob ("math." then anything), and the Rust cpex
accepts it.

A pattern is compiled once: an exact name compares equal, a run of only `*` matches
everything, any other pattern is split at its `*`s into fixed-length segments that
are found left to right (first segment at the start, last at the end, the middle ones
at their leftmost place), which is linear in the name and never backtracks.
"""

from __future__ import annotations

import re

WILDCARDS = frozenset("*?")
_UNSUPPORTED = frozenset("[]{}\\")
_REGEX_RUNS = (".+",)


def check_pattern(text: str, what: str) -> str:
    """text, when it is a pattern the matcher supports; else ValueError naming what is
    wrong and what to write instead. what names the patterns' owner ('route')."""
    if not text:
        raise ValueError(f"empty; expected an entity name or a {what} pattern such as 'get_*' (only * and ? are wildcards)")
    for ch in text:
        if ch in _UNSUPPORTED:
            raise ValueError(f"pattern {text!r} uses {ch!r}, which {what} patterns do not support (only * and ? are wildcards)")
    regex = _regex_look_alike(text)
    if regex is not None:
        raise ValueError(
            f"pattern {text!r} looks like a regular expression ({regex}); {what} patterns are globs matched against the "
            f"whole name: write {_as_glob(text)!r} (only * and ? are wildcards: * any run of characters, ? one character)"
        )
    return text


def _regex_look_alike(text: str) -> str | None:
    if text.startswith("^"):
        return "a leading '^'"
    if text.endswith("$"):
        return "a trailing '$'"
    for run in _REGEX_RUNS:
        if run in text:
            return repr(run)
    return None


def _as_glob(text: str) -> str:
    """The glob a regular-expression-looking pattern most likely meant."""
    glob = text.removeprefix("^").removesuffix("$").replace(".*", "*").replace(".+", "?*")
    return glob or "*"


class _Segment:
    """A piece of a pattern between two `*`: literal characters and `?`s."""

    __slots__ = ("text", "size", "regex")

    def __init__(self, text: str) -> None:
        self.text = text
        self.size = len(text)
        # Only a segment with a `?` needs a regex (fixed length: no backtracking).
        self.regex = re.compile("".join("." if c == "?" else re.escape(c) for c in text), re.DOTALL) if "?" in text else None

    def at(self, name: str, pos: int) -> bool:
        if self.regex is None:
            return name.startswith(self.text, pos)
        return self.regex.match(name, pos) is not None

    def find(self, name: str, start: int, end: int) -> int:
        """Where the segment first lies wholly within name[start:end], or -1."""
        if self.regex is None:
            return name.find(self.text, start, end)
        found = self.regex.search(name, start, end)
        return -1 if found is None else found.start()


class Pattern:
    """One compiled pattern. exact: the text has no wildcard (compare with ==);
    catch_all: the text is exactly `*`."""

    __slots__ = ("text", "exact", "catch_all", "_any", "_head", "_middle", "_tail", "_least")

    def __init__(self, text: str) -> None:
        self.text = text
        self.exact = not (WILDCARDS & set(text))
        self.catch_all = text == "*"
        parts = text.split("*")
        self._any = not self.exact and all(not p for p in parts)  # only stars
        self._head = _Segment(parts[0])
        self._tail = _Segment(parts[-1]) if len(parts) > 1 else None
        self._middle = tuple(_Segment(p) for p in parts[1:-1] if p)
        self._least = len(text) - text.count("*")  # the shortest name that can match

    def matches(self, name: str) -> bool:
        if self.exact:
            return name == self.text
        if self._any:
            return True
        if len(name) < self._least or not self._head.at(name, 0):
            return False
        if self._tail is None:  # no `*`: the `?`s fix the length
            return len(name) == self._head.size
        end = len(name) - self._tail.size  # >= the head's end, by the length check
        if not self._tail.at(name, end):
            return False
        pos = self._head.size
        for segment in self._middle:
            found = segment.find(name, pos, end)
            if found < 0:
                return False
            pos = found + segment.size
        return True

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"
