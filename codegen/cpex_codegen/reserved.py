"""Words no schema identifier may take, because some generated target would break."""

_C = """auto break case char const continue default do double else enum extern float for goto
if inline int long register restrict return short signed sizeof static struct switch typedef
union unsigned void volatile while bool true false""".split()
_CPP = """class delete new namespace operator private protected public template this throw try
catch virtual friend mutable explicit export typename using""".split()
_GO = """break case chan const continue default defer else fallthrough for func go goto if
import interface map package range return select struct switch type var""".split()
_PY = """False None True and as assert async await break class continue def del elif else
except finally for from global if import in is lambda nonlocal not or pass raise return try
while with yield""".split()

RESERVED: dict[str, str] = {}
for _lang, _words in (("Python", _PY), ("Go", _GO), ("C++", _CPP), ("C", _C)):
    for _w in _words:
        RESERVED[_w] = _lang

# Python attribute names a generated pydantic model cannot take.
PY_RESERVED: dict[str, str] = {w: "is a Python keyword" for w in _PY}
PY_RESERVED.update({w: "shadows a pydantic BaseModel attribute" for w in ("copy", "dict", "json", "schema", "construct", "validate")})
