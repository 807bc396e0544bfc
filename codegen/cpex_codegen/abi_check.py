"""ABI stability: the current include/cpex.h against the newest released header.

Every release keeps its header in include/abi/<prefix>-<major>.<minor>.h (see
include/abi/README.md). Both headers are read with pycparser (the parser of the
generator's header check) and compared:

- the ABI version macros of the header must agree with codegen/schema/abi.yaml, and
  <PREFIX>_ABI_VERSION must be (major << 16) | minor;
- the version may not go backwards;
- a higher major version allows anything;
- within the baseline's major version nothing may be removed (function, type, status
  code, payload type, enum constant, other constant or macro) and nothing may change (a
  function's return type, parameter count or parameter types, a type's definition, a
  constant's value or type);
- anything added (a function, status code, payload type, type, constant) needs a minor
  version above the baseline's.

`python -m cpex_codegen --check` (`make codegen-check`, hence `make test`) runs it on the
committed include/cpex.h, `python -m cpex_codegen` (`make codegen`) on the header about
to be written; this module's command line (`make abi-check`) checks any header file:

    python -m cpex_codegen.abi_check [--header include/cpex.h] [--baselines include/abi]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycparser import c_ast

from . import header_check
from .schema import Schema, SchemaError, load

ROOT = Path(__file__).resolve().parents[2]


class AbiCheckError(Exception):
    """The header breaks the ABI rules; the message lists every problem, one a line."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str


@dataclass(frozen=True)
class Function:
    name: str
    returns: str
    params: tuple[Param, ...]
    variadic: bool = False

    def signature(self) -> str:
        params = [p.type for p in self.params] + (["..."] if self.variadic else [])
        return f"{self.returns} {self.name}({', '.join(params) or 'void'})"


@dataclass(frozen=True)
class Entity:
    """Anything else the header declares: a type, a constant, a macro, a variable."""

    kind: str  # "type", "status code", "payload type", "enum constant", "constant", "macro", "variable"
    name: str
    definition: str  # what must stay the same: a type's text, a constant's value, a macro's text
    ctype: str | None = None  # the type a constant is cast to: ((cpex_status)(-1)) -> cpex_status


@dataclass
class Abi:
    """What a header declares, by name, in header order."""

    where: str
    major: int
    minor: int
    functions: dict[str, Function] = field(default_factory=dict)
    entities: dict[str, Entity] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"


# --- reading a header -------------------------------------------------------------------

_PROBE = "__cpex_abi_probe__"
_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)", re.MULTILINE)
_DM_LINE = re.compile(r"^#define ([A-Za-z_]\w*)(\([^)]*\))?(?: (.*))?$")


def read_abi(header: str, prefix: str, where: str = "cpex.h") -> Abi:
    """Every function, type, constant and macro of a header, and its ABI version."""
    body = header_check.STD_TYPEDEFS + header_check.strip_includes(header)
    defined = list(dict.fromkeys(_DEFINE.findall(header)))
    macros: dict[str, tuple[str | None, str]] = {}  # name -> (parameters of a function-like macro, body)
    for line in header_check.preprocess(body, "-dM", what=where).splitlines():
        m = _DM_LINE.match(line)
        if m and m.group(1) in defined:
            macros[m.group(1)] = (m.group(2), (m.group(3) or "").strip())
    # One preprocessing run expands the declarations and every object-like macro (a
    # string literal names each probe: it is not expanded).
    probed = [n for n in defined if n in macros and macros[n][0] is None and macros[n][1]]
    probes = "".join(f'\n{_PROBE}("{n}") {n}' for n in probed)
    out = header_check.preprocess(body + "\n" + probes + "\n", what=where)
    decls, expansions = [], {}
    for line in out.splitlines():
        m = re.match(rf'^{_PROBE}\("(\w+)"\)\s*(.*)$', line)
        if m:
            expansions[m.group(1)] = m.group(2).strip()
        else:
            decls.append(line)
    ast = header_check.parse_c("\n".join(decls), where)

    abi = Abi(where=where, major=-1, minor=-1)
    typedefs: list[str] = []
    enum_values: dict[str, int] = {}
    for node in ast.ext:
        _read_decl(abi, node, typedefs, enum_values)
    _read_macros(abi, prefix, defined, macros, expansions, typedefs, enum_values)

    upper = prefix.upper()
    versions = {}
    for part in ("MAJOR", "MINOR"):
        name = f"{upper}_ABI_VERSION_{part}"
        ent = abi.entities.pop(name, None)
        if ent is None or ent.kind == "macro":
            raise AbiCheckError(f"{where}: no integer {name} macro")
        versions[part] = int(ent.definition)
    abi.major, abi.minor = versions["MAJOR"], versions["MINOR"]
    combined = abi.entities.pop(f"{upper}_ABI_VERSION", None)
    expected = (abi.major << 16) | abi.minor
    if combined is None or combined.kind == "macro" or int(combined.definition) != expected:
        got = combined.definition if combined else "missing"
        raise AbiCheckError(
            f"{where}: {upper}_ABI_VERSION is {got}, not (major << 16) | minor = {expected} for ABI {abi.version}"
        )
    return abi


def _read_decl(abi: Abi, node: Any, typedefs: list[str], enum_values: dict[str, int]) -> None:
    for enum in _find(node, c_ast.Enum):
        if enum.values is None:
            continue
        nxt = 0
        for e in enum.values.enumerators:
            if e.value is not None:
                value = _evaluate(e.value, enum_values)
                if value is None:
                    raise AbiCheckError(f"{abi.where}: enum constant {e.name} has no integer value")
                nxt = value
            enum_values[e.name] = nxt
            abi.entities[e.name] = Entity("enum constant", e.name, str(nxt))
            nxt += 1
    for struct in _find(node, (c_ast.Struct, c_ast.Union)):
        if struct.decls is not None and struct.name:
            tag = f"{'struct' if isinstance(struct, c_ast.Struct) else 'union'} {struct.name}"
            abi.entities[tag] = Entity("type", tag, _members(struct))
    if isinstance(node, c_ast.Typedef):
        typedefs.append(node.name)
        if node.name not in header_check.STD_TYPEDEF_NAMES:
            abi.entities[node.name] = Entity("type", node.name, _render(node.type))
    elif isinstance(node, c_ast.Decl) and isinstance(node.type, c_ast.FuncDecl):
        args = list(node.type.args.params) if node.type.args else []
        variadic = bool(args) and isinstance(args[-1], c_ast.EllipsisParam)
        if variadic:
            args = args[:-1]
        if len(args) == 1 and isinstance(args[0], c_ast.Typename) and _render(args[0].type) == "void":
            args = []
        params = tuple(Param(str(a.name or f"#{i + 1}"), _render(a.type, top=True)) for i, a in enumerate(args))
        abi.functions[node.name] = Function(node.name, _render(node.type.type), params, variadic)
    elif isinstance(node, c_ast.Decl) and node.name:
        abi.entities[node.name] = Entity("variable", node.name, _render(node.type))


def _read_macros(
    abi: Abi,
    prefix: str,
    defined: list[str],
    macros: dict[str, tuple[str | None, str]],
    expansions: dict[str, str],
    typedefs: list[str],
    enum_values: dict[str, int],
) -> None:
    status_type = f"{prefix}_status"
    payload_prefix = f"{prefix.upper()}_PAYLOAD_"
    prelude = "".join(f"typedef int {t};\n" for t in typedefs)
    for name in defined:
        if name not in macros:
            continue  # #undef'd again
        params, text = macros[name]
        if params is not None or not text:
            if text or params:  # an include guard (empty) is not part of the ABI
                abi.entities[name] = Entity("macro", name, f"{params or ''} {text}".strip())
            continue
        value: int | None = None
        cast: str | None = None
        try:
            ast = header_check.parse_c(f"{prelude}long long {_PROBE} = ({expansions[name]});", name)
        except header_check.HeaderCheckError:
            ast = None
        if ast is not None:
            init = ast.ext[-1].init
            if isinstance(init, c_ast.Cast):
                cast = _render(init.to_type.type)
            value = _evaluate(init, enum_values)
        if value is None:
            abi.entities[name] = Entity("macro", name, text)
            continue
        if cast == status_type:
            kind = "status code"
        else:
            kind = "payload type" if name.startswith(payload_prefix) else "constant"
        abi.entities[name] = Entity(kind, name, str(value), cast)


def _find(node: Any, kinds: Any) -> list[Any]:
    """Every node of the given kinds in a subtree, in source order."""
    found = [node] if isinstance(node, kinds) else []
    for _, child in node.children():
        found += _find(child, kinds)
    return found


def _render(node: Any, top: bool = False) -> str:
    """A declarator's type without its name: `const char *`, `cpex_manager **`.
    top: drop the outermost qualifiers (a parameter's own const is not part of the
    function's type)."""
    if isinstance(node, c_ast.TypeDecl):
        own = [] if top else list(node.quals)
        return " ".join([*own, _render(node.type)])
    if isinstance(node, c_ast.IdentifierType):
        return " ".join(node.names)
    if isinstance(node, (c_ast.Struct, c_ast.Union)):
        kw = "struct" if isinstance(node, c_ast.Struct) else "union"
        if node.name:
            return f"{kw} {node.name}"
        return f"{kw} {_members(node)}"
    if isinstance(node, c_ast.Enum):
        if node.name:
            return f"enum {node.name}"
        return "enum {" + ", ".join(e.name for e in node.values.enumerators) + "}"
    if isinstance(node, c_ast.PtrDecl):
        quals = "" if top else "".join(" " + q for q in node.quals)
        if isinstance(node.type, c_ast.FuncDecl):
            return _render_function_type(node.type, f"(*{quals})")
        inner = _render(node.type)
        return f"{inner}*{quals}" if inner.endswith("*") else f"{inner} *{quals}"
    if isinstance(node, c_ast.ArrayDecl):
        dim = "" if node.dim is None else str(_evaluate(node.dim, {}))
        return f"{_render(node.type)}[{dim}]"
    if isinstance(node, c_ast.FuncDecl):
        return _render_function_type(node, "")
    if isinstance(node, c_ast.Typename):
        return _render(node.type, top)
    raise AbiCheckError(f"cannot describe the C type {type(node).__name__}")


def _render_function_type(fn: Any, declarator: str) -> str:
    args = list(fn.args.params) if fn.args else []
    params = ", ".join("..." if isinstance(a, c_ast.EllipsisParam) else _render(a.type, top=True) for a in args)
    return f"{_render(fn.type)} {declarator}({params})" if declarator else f"{_render(fn.type)}({params})"


def _members(node: Any) -> str:
    members = []
    for d in node.decls or []:
        bits = "" if d.bitsize is None else f" : {_evaluate(d.bitsize, {})}"
        members.append(f"{_render(d.type)} {d.name or ''}{bits};".replace(" ;", ";"))
    return "{ " + " ".join(members) + " }"


def _evaluate(node: Any, env: dict[str, int]) -> int | None:
    """The value of an integer constant expression, or None."""
    if isinstance(node, c_ast.Constant):
        if node.type not in ("int", "unsigned int", "long int", "unsigned long int", "long long int", "unsigned long long int"):
            return None
        text = str(node.value).rstrip("uUlL")
        if len(text) > 1 and text[0] == "0" and text[1] not in "xXbB":
            return int(text, 8)
        return int(text, 0)
    if isinstance(node, c_ast.ID):
        return env.get(node.name)
    if isinstance(node, c_ast.Cast):
        return _evaluate(node.expr, env)
    if isinstance(node, c_ast.UnaryOp):
        v = _evaluate(node.expr, env)
        if v is None:
            return None
        ops: dict[str, Callable[[int], int]] = {
            "-": lambda x: -x,
            "+": lambda x: x,
            "~": lambda x: ~x,
            "!": lambda x: int(not x),
        }
        return ops[node.op](v) if node.op in ops else None
    if isinstance(node, c_ast.BinaryOp):
        a, b = _evaluate(node.left, env), _evaluate(node.right, env)
        if a is None or b is None:
            return None
        binops: dict[str, Callable[[int, int], int]] = {
            "+": lambda x, y: x + y,
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
            "<<": lambda x, y: x << y,
            ">>": lambda x, y: x >> y,
            "|": lambda x, y: x | y,
            "&": lambda x, y: x & y,
            "^": lambda x, y: x ^ y,
        }
        if node.op in binops:
            return binops[node.op](a, b)
        if node.op in ("/", "%") and b != 0:
            q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)  # C truncates
            return q if node.op == "/" else a - q * b
        return None
    if isinstance(node, c_ast.TernaryOp):
        c = _evaluate(node.cond, env)
        return None if c is None else _evaluate(node.iftrue if c else node.iffalse, env)
    return None


# --- comparing two headers -------------------------------------------------------------


def compare(baseline: Abi, current: Abi) -> list[str]:
    """Every way `current` breaks the rules against `baseline`; empty when it keeps them."""
    old, new = (baseline.major, baseline.minor), (current.major, current.minor)
    if new < old:
        return [
            f"ABI version went backwards: {current.where} is {current.version}, "
            f"the released {baseline.where} is {baseline.version}"
        ]
    if current.major > baseline.major:
        return []  # a new major version may change anything
    problems: list[str] = []
    why_major = f"needs a new major version (ABI {baseline.major + 1}.0)"
    for name, fn in baseline.functions.items():
        now = current.functions.get(name)
        if now is None:
            problems.append(f"function {name} was removed (it is in ABI {baseline.version}); that {why_major}")
            continue
        for change in _signature_changes(fn, now):
            problems.append(
                f"function {name}: {change} (ABI {baseline.version}: `{fn.signature()}`, "
                f"now `{now.signature()}`); that {why_major}"
            )
    for name, ent in baseline.entities.items():
        cur = current.entities.get(name)
        if cur is None:
            problems.append(f"{ent.kind} {name} was removed (it is in ABI {baseline.version}); that {why_major}")
        else:
            for change in _entity_changes(ent, cur):
                problems.append(f"{ent.kind} {name}: {change}; that {why_major}")
    added = [f"function {n}" for n in current.functions if n not in baseline.functions]
    added += [f"{e.kind} {n}" for n, e in current.entities.items() if n not in baseline.entities]
    if added and current.minor <= baseline.minor:
        for what in added:
            problems.append(
                f"{what} was added without a minor version bump: the header says ABI {current.version} like "
                f"the released {baseline.where}; set abi.minor to {baseline.minor + 1} in codegen/schema/abi.yaml"
            )
    return problems


def _entity_changes(old: Entity, new: Entity) -> list[str]:
    changes = []
    if old.definition != new.definition:
        if old.kind in ("type", "macro", "variable"):
            changes.append(f"definition changed from `{old.definition}` to `{new.definition}`")
        else:
            changes.append(f"value changed from {old.definition} to {new.definition}")
    if old.ctype != new.ctype:
        changes.append(f"type changed from {old.ctype or '(none)'} to {new.ctype or '(none)'}")
    if old.kind != new.kind:
        changes.append(f"is now a {new.kind}")
    return changes


def _signature_changes(old: Function, new: Function) -> list[str]:
    changes = []
    if old.returns != new.returns:
        changes.append(f"return type changed from `{old.returns}` to `{new.returns}`")
    if len(old.params) != len(new.params) or old.variadic != new.variadic:
        changes.append(
            f"parameter count changed from {len(old.params)}{' + ...' if old.variadic else ''} "
            f"to {len(new.params)}{' + ...' if new.variadic else ''}"
        )
    for i, (a, b) in enumerate(zip(old.params, new.params, strict=False), 1):
        if a.type != b.type:
            changes.append(f"parameter {i} ({a.name}) changed type from `{a.type}` to `{b.type}`")
    return changes


# --- baselines and the schema ----------------------------------------------------------


def baselines(directory: Path, prefix: str) -> list[tuple[int, int, Path]]:
    """The released headers, oldest first; a header of another name is an error."""
    found = []
    for path in sorted(directory.glob("*.h")):
        m = re.fullmatch(rf"{re.escape(prefix)}-(\d+)\.(\d+)\.h", path.name)
        if m is None:
            raise AbiCheckError(f"{path}: a released header is named {prefix}-<major>.<minor>.h")
        found.append((int(m.group(1)), int(m.group(2)), path))
    return sorted(found)


def check_versions(schema: Schema, current: Abi) -> list[str]:
    a = schema.abi
    if (current.major, current.minor) != (a.major, a.minor):
        return [f"{current.where} declares ABI {current.version}, codegen/schema/abi.yaml says {a.major}.{a.minor}"]
    return []


def check(schema: Schema, header: str, baseline_dir: Path, where: str = "include/cpex.h") -> None:
    """Raise AbiCheckError listing every problem of `header` (the current header)."""
    prefix = schema.abi.prefix
    current = read_abi(header, prefix, where)
    problems = check_versions(schema, current)
    released = baselines(baseline_dir, prefix) if baseline_dir.is_dir() else []
    against = ""
    if not released:
        problems.append(
            f"no released header in {baseline_dir} to check {where} against (a new library records its first "
            "release with `python -m cpex_codegen --layout FILE --release`; docs/codegen.md, Versions)"
        )
    else:
        major, minor, path = released[-1]
        shown = f"include/abi/{path.name}" if path.parent.parts[-2:] == ("include", "abi") else str(path)
        baseline = read_abi(path.read_text(encoding="utf-8"), prefix, shown)
        if (baseline.major, baseline.minor) != (major, minor):
            problems.append(f"{baseline.where} declares ABI {baseline.version}; its name says {major}.{minor}")
        problems += compare(baseline, current)
        against = f" against {baseline.where}"
    if problems:
        head = f"ABI check of {where} (ABI {current.version}){against} failed:"
        raise AbiCheckError(head + "\n  " + "\n  ".join(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cpex_codegen.abi_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--header", type=Path, default=ROOT / "include" / "cpex.h")
    parser.add_argument("--baselines", type=Path, default=ROOT / "include" / "abi")
    parser.add_argument("--schema", type=Path, default=ROOT / "codegen" / "schema")
    args = parser.parse_args(argv)
    try:
        sch = load(args.schema)
        check(sch, args.header.read_text(encoding="utf-8"), args.baselines, str(args.header))
    except (SchemaError, AbiCheckError, header_check.HeaderCheckError, OSError) as exc:
        print(f"abi_check: {exc}", file=sys.stderr)
        return 1
    print(f"abi_check: {args.header} keeps the ABI rules against {args.baselines}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
