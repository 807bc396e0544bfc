"""Checks of the generated header: pycparser reads it back, gcc and g++ compile it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pycparser
from pycparser import c_ast

from . import naming
from .schema import Schema

# Stand-ins for <stdint.h> / <stddef.h>: pycparser has no libc headers of its own.
STD_TYPEDEFS = """
typedef unsigned long size_t;
typedef signed int int32_t;
typedef unsigned char uint8_t;
typedef unsigned int uint32_t;
typedef unsigned long uintptr_t;
"""
STD_TYPEDEF_NAMES = frozenset(line.rstrip(";").split()[-1] for line in STD_TYPEDEFS.strip().splitlines())

STRICT = ["-Wall", "-Wextra", "-Werror", "-pedantic"]


class HeaderCheckError(Exception):
    pass


def strip_includes(header: str) -> str:
    """The header without its #include lines: pycparser gets STD_TYPEDEFS instead."""
    return "\n".join(line for line in header.splitlines() if not line.lstrip().startswith("#include"))


def preprocess(source: str, *flags: str, what: str = "cpex.h") -> str:
    """`gcc -E -P` of a C translation unit (flags: e.g. -dM for the macro definitions)."""
    pre = subprocess.run(
        ["gcc", "-E", "-P", "-std=c99", *flags, "-x", "c", "-"],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    if pre.returncode != 0:
        raise HeaderCheckError(f"the preprocessor rejected {what}:\n{pre.stderr}")
    return pre.stdout


def parse_c(source: str, what: str = "cpex.h") -> Any:
    """A pycparser FileAST of preprocessed C source."""
    try:
        return pycparser.CParser().parse(source, what)
    except pycparser.c_parser.ParseError as exc:
        raise HeaderCheckError(f"pycparser cannot parse {what}: {exc}") from None


def parse_header(header: str, what: str = "cpex.h") -> Any:
    """The pycparser FileAST of a header, with STD_TYPEDEFS standing in for libc."""
    return parse_c(preprocess(STD_TYPEDEFS + strip_includes(header), what=what), what)


def parse_declarations(header: str) -> dict[str, int]:
    """Function name -> parameter count, as pycparser reads the header."""
    ast = parse_header(header)
    found: dict[str, int] = {}
    for node in ast.ext:
        if isinstance(node, c_ast.Decl) and isinstance(node.type, c_ast.FuncDecl):
            args = node.type.args.params if node.type.args else []
            is_void = len(args) == 1 and isinstance(args[0], c_ast.Typename)
            found[node.name] = 0 if is_void else len(args)
    return found


def check_parse(schema: Schema, header: str) -> None:
    found = parse_declarations(header)
    prefix = schema.abi.prefix + "_"
    expected = {f"{prefix}{f.name}": len(naming.c_params(schema, f)) for f in schema.functions}
    for name in found:
        if not name.startswith(prefix):
            raise HeaderCheckError(f"cpex.h declares {name}, which lacks the {prefix} prefix")
    if found != expected:
        raise HeaderCheckError(f"cpex.h declarations differ from the schema: header {found}, schema {expected}")


def _use_everything(schema: Schema) -> str:
    """A translation unit binding every function to a pointer of the schema's own
    signature, so a prototype that drifted from the schema fails to compile."""
    lines = ['#include "cpex.h"', "int main(void) {"]
    for f in schema.functions:
        ptr = naming.c_decl(schema, f).replace(f"{schema.abi.prefix}_{f.name}(", f"(*p_{f.name})(", 1)
        lines += [f"    {ptr} = {schema.abi.prefix}_{f.name};", f"    (void)p_{f.name};"]
    lines += [f"    return (int)({schema.abi.prefix.upper()}_ABI_VERSION == 0u);", "}"]
    return "\n".join(lines) + "\n"


def check_compile(schema: Schema, header: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "cpex.h").write_text(header, encoding="utf-8")
        (d / "use.c").write_text(_use_everything(schema), encoding="utf-8")
        for compiler, std, lang in (("gcc", "-std=c99", "c"), ("g++", "-std=c++11", "c++")):
            if shutil.which(compiler) is None:
                raise HeaderCheckError(f"{compiler} is not installed; the header checks need it")
            cmd = [compiler, std, *STRICT, "-x", lang, "-c", "use.c", "-o", f"use-{lang}.o"]
            proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise HeaderCheckError(f"{' '.join(cmd)} failed:\n{proc.stderr}")


def check(schema: Schema, header: str) -> None:
    check_parse(schema, header)
    check_compile(schema, header)
