/* Python builtins for the boundary's per-invoke C helpers (module _cpex_natives,
   installed by cpexrt_install_natives when the boundary loads). cffi releases and
   retakes the GIL around every call of a lib function: on an invoke's path each such
   call lets the runtime loop's thread (fire-and-forget tasks) take the GIL in the
   middle of the invoke, which then waits for it. These builtins run with the GIL held,
   and release it only for inputs large enough for the work to matter. Pasted into the
   cffi source after ffi/fastpath.c (cpexrt_plain_maps, the limits table) and
   ffi/handles.c, before the generated shims (which call cpex__native_<name>). */

#define CPEX__NATIVES_NOGIL_ABOVE (64 * 1024)

/* plain_maps(payload: bytes, extensions: bytes | None, max_entries: int) -> int: the
   bits of cpexrt_plain_maps. */
static PyObject *cpex__natives_plain_maps(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    const uint8_t *payload, *extensions = (const uint8_t *)"";
    size_t payload_len, extensions_len = 0, max_entries;
    int plain;
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0]) || (args[1] != Py_None && !PyBytes_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "plain_maps(payload: bytes, extensions: bytes | None, max_entries: int)");
        return NULL;
    }
    max_entries = PyLong_AsSize_t(args[2]);
    if (max_entries == (size_t)-1 && PyErr_Occurred())
        return NULL;
    payload = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    payload_len = (size_t)PyBytes_GET_SIZE(args[0]);
    if (args[1] != Py_None) {
        extensions = (const uint8_t *)PyBytes_AS_STRING(args[1]);
        extensions_len = (size_t)PyBytes_GET_SIZE(args[1]);
    }
    if (payload_len + extensions_len > CPEX__NATIVES_NOGIL_ABOVE) {
        /* The bytes objects are immutable and the caller's references keep them. */
        Py_BEGIN_ALLOW_THREADS
        plain = cpexrt_plain_maps(payload, payload_len, extensions, extensions_len, max_entries);
        Py_END_ALLOW_THREADS
    } else {
        plain = cpexrt_plain_maps(payload, payload_len, extensions, extensions_len, max_entries);
    }
    return PyLong_FromLong(plain);
}

/* decode_map(data: bytes) -> dict | None: the map msgpack.unpackb(data) decodes (its
   defaults: str as str, bin as bytes, arrays as lists, map keys interned), built here
   for the bytes the C checker took (a map, string keys, no extension type); None when
   data is not one whole map of exactly that kind (bytes keys, an extension type,
   invalid UTF-8, bytes left over, nesting past the checker's CPEX__MAX_DEPTH): the caller then
   decodes it with msgpack, which raises or decodes as it always did. */

typedef struct {
    const uint8_t *p, *end;
} cpex__mp;

static PyObject *cpex__mp_value(cpex__mp *in, int depth);

static int cpex__mp_take(cpex__mp *in, size_t n, const uint8_t **out)
{
    if ((size_t)(in->end - in->p) < n)
        return -1;
    *out = in->p;
    in->p += n;
    return 0;
}

static int cpex__mp_uint(cpex__mp *in, int width, uint64_t *out)
{
    const uint8_t *b;
    uint64_t v = 0;
    int i;
    if (cpex__mp_take(in, (size_t)width, &b) != 0)
        return -1;
    for (i = 0; i < width; i++)
        v = (v << 8) | b[i];
    *out = v;
    return 0;
}

static PyObject *cpex__mp_str(cpex__mp *in, size_t n)
{
    const uint8_t *b;
    PyObject *out;
    if (cpex__mp_take(in, n, &b) != 0)
        return NULL;
    out = PyUnicode_DecodeUTF8((const char *)b, (Py_ssize_t)n, NULL);
    if (out == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        PyErr_Clear(); /* not taken: msgpack names it */
    return out;
}

static PyObject *cpex__mp_bin(cpex__mp *in, size_t n)
{
    const uint8_t *b;
    if (cpex__mp_take(in, n, &b) != 0)
        return NULL;
    return PyBytes_FromStringAndSize((const char *)b, (Py_ssize_t)n);
}

static PyObject *cpex__mp_array(cpex__mp *in, size_t n, int depth)
{
    PyObject *out;
    size_t i;
    if (n > (size_t)(in->end - in->p)) /* every item takes a byte at least */
        return NULL;
    out = PyList_New((Py_ssize_t)n);
    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *item = cpex__mp_value(in, depth + 1);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, item);
    }
    return out;
}

/* The map keys met lately, interned, by their bytes: a key met again (hosts send the
   same few) is taken from here, with no decode, no hash and no intern lookup; the
   same object PyUnicode_InternInPlace gives, since the table keeps it interned. A
   slot holds the last key of its hash; keys of up to CPEX__MP_KEY_MAX bytes. */
#define CPEX__MP_KEYS 512
#define CPEX__MP_KEY_MAX 48
static PyObject *cpex__mp_keys[CPEX__MP_KEYS];

static PyObject *cpex__mp_key(cpex__mp *in)
{
    const uint8_t *b;
    size_t n;
    uint32_t h = 2166136261u;
    PyObject *key, **slot;
    uint8_t c;
    if (in->p >= in->end)
        return NULL;
    c = *in->p;
    if (c < 0xa0 || c > 0xbf || (size_t)(c & 0x1f) > CPEX__MP_KEY_MAX) {
        key = cpex__mp_value(in, 0); /* a long key, or not a string */
        if (key == NULL || !PyUnicode_CheckExact(key)) {
            Py_XDECREF(key); /* a bytes key: not taken, msgpack decodes it */
            return NULL;
        }
        PyUnicode_InternInPlace(&key);
        return key;
    }
    in->p++;
    n = c & 0x1f;
    if (cpex__mp_take(in, n, &b) != 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    slot = &cpex__mp_keys[(h ^ (h >> 16)) % CPEX__MP_KEYS];
    key = *slot;
    if (key != NULL && PyUnicode_IS_COMPACT_ASCII(key) && (size_t)PyUnicode_GET_LENGTH(key) == n &&
        memcmp(PyUnicode_DATA(key), b, n) == 0)
        return Py_NewRef(key);
    key = PyUnicode_DecodeUTF8((const char *)b, (Py_ssize_t)n, NULL);
    if (key == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            PyErr_Clear(); /* not taken: msgpack names it */
        return NULL;
    }
    PyUnicode_InternInPlace(&key);
    Py_XSETREF(*slot, Py_NewRef(key));
    return key;
}

static PyObject *cpex__mp_map(cpex__mp *in, size_t n, int depth)
{
    PyObject *out;
    size_t i;
    if (n > (size_t)(in->end - in->p) / 2) /* every entry takes two bytes at least */
        return NULL;
    out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *key = cpex__mp_key(in), *value; /* interned, as msgpack's map keys */
        int rc;
        if (key == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        value = cpex__mp_value(in, depth + 1);
        if (value == NULL) {
            Py_DECREF(key);
            Py_DECREF(out);
            return NULL;
        }
        rc = PyDict_SetItem(out, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc != 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *cpex__mp_value(cpex__mp *in, int depth)
{
    const uint8_t *b;
    uint64_t n;
    uint8_t c;
    if (depth > CPEX__MAX_DEPTH || cpex__mp_take(in, 1, &b) != 0)
        return NULL;
    c = *b;
    if (c <= 0x7f)
        return PyLong_FromLong(c);
    if (c >= 0xe0)
        return PyLong_FromLong((long)(int8_t)c);
    if (c >= 0xa0 && c <= 0xbf)
        return cpex__mp_str(in, c & 0x1f);
    if (c >= 0x90 && c <= 0x9f)
        return cpex__mp_array(in, c & 0x0f, depth);
    if (c >= 0x80 && c <= 0x8f)
        return cpex__mp_map(in, c & 0x0f, depth);
    switch (c) {
    case 0xc0:
        Py_RETURN_NONE;
    case 0xc2:
        Py_RETURN_FALSE;
    case 0xc3:
        Py_RETURN_TRUE;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return cpex__mp_uint(in, 1 << (c - 0xc4), &n) == 0 ? cpex__mp_bin(in, (size_t)n) : NULL;
    case 0xca: {
        uint32_t bits;
        float f;
        if (cpex__mp_uint(in, 4, &n) != 0)
            return NULL;
        bits = (uint32_t)n;
        memcpy(&f, &bits, sizeof f);
        return PyFloat_FromDouble((double)f);
    }
    case 0xcb: {
        double d;
        if (cpex__mp_uint(in, 8, &n) != 0)
            return NULL;
        memcpy(&d, &n, sizeof d);
        return PyFloat_FromDouble(d);
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        return cpex__mp_uint(in, 1 << (c - 0xcc), &n) == 0 ? PyLong_FromUnsignedLongLong(n) : NULL;
    case 0xd0:
        return cpex__mp_uint(in, 1, &n) == 0 ? PyLong_FromLong((long)(int8_t)n) : NULL;
    case 0xd1:
        return cpex__mp_uint(in, 2, &n) == 0 ? PyLong_FromLong((long)(int16_t)n) : NULL;
    case 0xd2:
        return cpex__mp_uint(in, 4, &n) == 0 ? PyLong_FromLong((long)(int32_t)n) : NULL;
    case 0xd3:
        return cpex__mp_uint(in, 8, &n) == 0 ? PyLong_FromLongLong((long long)(int64_t)n) : NULL;
    case 0xd9:
    case 0xda:
    case 0xdb:
        return cpex__mp_uint(in, 1 << (c - 0xd9), &n) == 0 ? cpex__mp_str(in, (size_t)n) : NULL;
    case 0xdc:
    case 0xdd:
        return cpex__mp_uint(in, 2 << (c - 0xdc), &n) == 0 ? cpex__mp_array(in, (size_t)n, depth) : NULL;
    case 0xde:
    case 0xdf:
        return cpex__mp_uint(in, 2 << (c - 0xde), &n) == 0 ? cpex__mp_map(in, (size_t)n, depth) : NULL;
    default:
        return NULL; /* an extension type, or 0xc1 (never used) */
    }
}

static PyObject *cpex__natives_decode_map(PyObject *self, PyObject *data)
{
    cpex__mp in;
    PyObject *out;
    (void)self;
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "decode_map(data: bytes)");
        return NULL;
    }
    in.p = (const uint8_t *)PyBytes_AS_STRING(data);
    in.end = in.p + PyBytes_GET_SIZE(data);
    if (in.p == in.end || ((*in.p & 0xf0) != 0x80 && *in.p != 0xde && *in.p != 0xdf))
        Py_RETURN_NONE;
    out = cpex__mp_value(&in, 0);
    if (out != NULL && in.p != in.end)
        Py_CLEAR(out); /* bytes left over: msgpack's ExtraData */
    if (out == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

/* copy_out(data: bytes) -> int: the address of a malloc'ed copy (cpexrt_copy_out),
   for the caller to free with cpex_free_buffer; MemoryError when malloc fails. */
static PyObject *cpex__natives_copy_out(PyObject *self, PyObject *data)
{
    void *out;
    size_t len;
    (void)self;
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "copy_out(data: bytes)");
        return NULL;
    }
    len = (size_t)PyBytes_GET_SIZE(data);
    if (len > CPEX__NATIVES_NOGIL_ABOVE) {
        Py_BEGIN_ALLOW_THREADS
        out = cpexrt_copy_out(PyBytes_AS_STRING(data), len);
        Py_END_ALLOW_THREADS
    } else {
        out = cpexrt_copy_out(PyBytes_AS_STRING(data), len);
    }
    if (out == NULL) {
        PyErr_Format(PyExc_MemoryError, "allocating %zu bytes for a result", len);
        return NULL;
    }
    return PyLong_FromVoidPtr(out);
}

/* drain() -> tuple[int, ...]: the tokens of the handles the shims freed since the last
   drain (ffi/handles.c), for the boundary to drop from its table; () at once when
   there are none. */
static PyObject *cpex__natives_drain(PyObject *self, PyObject *unused)
{
    uintptr_t tokens[CPEX__FREED_MAX];
    size_t n, i;
    PyObject *out;
    (void)self;
    (void)unused;
    if (__atomic_load_n(&cpex__freed_n, __ATOMIC_RELAXED) == 0)
        return PyTuple_New(0);
    n = cpexrt_handles_drain(tokens, CPEX__FREED_MAX);
    out = PyTuple_New((Py_ssize_t)n);
    if (out == NULL)
        return NULL; /* the tokens are dead in C already: only their objects stay */
    for (i = 0; i < n; i++) {
        PyObject *token = PyLong_FromSize_t(tokens[i]);
        if (token == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, (Py_ssize_t)i, token);
    }
    return out;
}

/* clone(value) -> a deep copy of decoded data, as cpexrt.wire.clone makes it: wire
   records (the instance dict, fields set and unknown fields copied, each value copied
   deep), dicts with string or bytes keys, lists (tuples become
   lists) and the immutable scalars str, bytes, int, float, bool and None, taken as
   they are. TypeError for anything else, or nesting deeper than CPEX__CLONE_DEPTH
   (the caller then decodes a copy). No Python code runs while it copies: only exact
   types are taken, and only string or bytes keys (their hashes are cached or cheap,
   and never user code). clone_setup(record_type, object_new, fields_set, extra)
   gives it the record base class (cpexrt.wire.WireRecord) and its two slots'
   descriptors, once. */

#define CPEX__CLONE_DEPTH 200

static PyObject *cpex__clone_record_type, *cpex__clone_new, *cpex__clone_fields_set, *cpex__clone_extra,
    *cpex__clone_no_args;

static int cpex__clone_plain(PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    return t == &PyUnicode_Type || t == &PyLong_Type || v == Py_None || t == &PyBool_Type || t == &PyFloat_Type ||
           t == &PyBytes_Type;
}

/* records: 1 for clone (wire records copied), 0 for copy_plain (refused). */
static PyObject *cpex__clone_any(PyObject *v, int depth, int records);
#define cpex__clone(v, depth) cpex__clone_any((v), (depth), 1)

static PyObject *cpex__clone_slot_get(PyObject *descr, PyObject *obj)
{
    descrgetfunc get = Py_TYPE(descr)->tp_descr_get;
    return get(descr, obj, (PyObject *)Py_TYPE(obj));
}

static int cpex__clone_slot_set(PyObject *descr, PyObject *obj, PyObject *value)
{
    descrsetfunc set = Py_TYPE(descr)->tp_descr_set;
    return set(descr, obj, value);
}

/* A copy of dict d: its values copied deep (string or bytes keys only). The copy is
   made at once, then its values replaced where they are not immutable scalars (the
   keys never change while it is walked). */
static PyObject *cpex__clone_dict(PyObject *d, int depth, int records)
{
    PyObject *out = PyDict_Copy(d), *key, *value;
    Py_ssize_t pos = 0;
    if (out == NULL)
        return NULL;
    while (PyDict_Next(out, &pos, &key, &value)) {
        PyObject *copy;
        int rc;
        if (!PyUnicode_CheckExact(key) && !PyBytes_CheckExact(key)) {
            PyErr_Format(PyExc_TypeError, "cannot clone a map with a %.100s key", Py_TYPE(key)->tp_name);
            Py_DECREF(out);
            return NULL;
        }
        if (cpex__clone_plain(value))
            continue;
        copy = cpex__clone_any(value, depth + 1, records);
        if (copy == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        rc = PyDict_SetItem(out, key, copy);
        Py_DECREF(copy);
        if (rc != 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *cpex__clone_record(PyObject *v, int depth)
{
    PyObject *dict = NULL, *copy = NULL, *out = NULL, *fields_set = NULL, *extra = NULL, *value = NULL;
    dict = PyObject_GenericGetDict(v, NULL);
    if (dict == NULL)
        return NULL;
    if (!PyDict_CheckExact(dict)) {
        PyErr_SetString(PyExc_TypeError, "cannot clone a record whose __dict__ is not a dict");
        goto done;
    }
    copy = cpex__clone_dict(dict, depth, 1);
    if (copy == NULL)
        goto done;
    /* object.__new__(type(v)), as the Python clone makes it (the type's own tp_new
       when that is object's, which a record's is: no __new__ of its own). */
    if (Py_TYPE(v)->tp_new == PyBaseObject_Type.tp_new && cpex__clone_no_args != NULL)
        out = Py_TYPE(v)->tp_new(Py_TYPE(v), cpex__clone_no_args, NULL);
    else
        out = PyObject_CallOneArg(cpex__clone_new, (PyObject *)Py_TYPE(v));
    if (out == NULL)
        goto done;
    if (Py_TYPE(out) != Py_TYPE(v)) {
        PyErr_SetString(PyExc_TypeError, "cannot clone a record made of another type");
        goto fail;
    }
    if (PyObject_GenericSetDict(out, copy, NULL) != 0)
        goto fail;
    value = cpex__clone_slot_get(cpex__clone_fields_set, v);
    if (value == NULL)
        goto fail;
    fields_set = PySet_New(value);
    Py_CLEAR(value);
    if (fields_set == NULL || cpex__clone_slot_set(cpex__clone_fields_set, out, fields_set) != 0)
        goto fail;
    /* The unknown fields: copied when there are some, None (none) stays None, an
       empty map becomes a new one. */
    value = cpex__clone_slot_get(cpex__clone_extra, v);
    if (value == NULL)
        goto fail;
    if (value == Py_None) {
        extra = Py_NewRef(value);
    } else {
        int truth = PyObject_IsTrue(value);
        if (truth < 0)
            goto fail;
        extra = truth ? cpex__clone(value, depth + 1) : PyDict_New();
    }
    Py_CLEAR(value);
    if (extra == NULL || cpex__clone_slot_set(cpex__clone_extra, out, extra) != 0)
        goto fail;
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(dict);
    Py_XDECREF(copy);
    Py_XDECREF(fields_set);
    Py_XDECREF(extra);
    Py_XDECREF(value);
    return out;
}

static PyObject *cpex__clone_any(PyObject *v, int depth, int records)
{
    PyTypeObject *t = Py_TYPE(v);
    if (cpex__clone_plain(v))
        return Py_NewRef(v);
    if (depth > CPEX__CLONE_DEPTH) {
        PyErr_SetString(PyExc_TypeError, "cannot clone a value nested this deep");
        return NULL;
    }
    if (t == &PyDict_Type)
        return cpex__clone_dict(v, depth, records);
    if (t == &PyList_Type || t == &PyTuple_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v), i;
        PyObject *out = PyList_New(n);
        if (out == NULL)
            return NULL;
        for (i = 0; i < n; i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(v, i), *copy;
            copy = cpex__clone_plain(item) ? Py_NewRef(item) : cpex__clone_any(item, depth + 1, records);
            if (copy == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(out, i, copy);
        }
        return out;
    }
    if (records && cpex__clone_record_type != NULL && PyType_IsSubtype(t, (PyTypeObject *)cpex__clone_record_type))
        return cpex__clone_record(v, depth);
    PyErr_Format(PyExc_TypeError, "cannot clone a %.100s", t->tp_name);
    return NULL;
}

static PyObject *cpex__natives_clone(PyObject *self, PyObject *value)
{
    (void)self;
    if (cpex__clone_record_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "clone: clone_setup was not called");
        return NULL;
    }
    return cpex__clone(value, 0);
}

/* copy_plain(value) -> a private deep copy of plain data, equal to what a MessagePack
   round trip of value decodes to: dicts (string or bytes keys, in their order), lists
   (tuples become lists) and the immutable scalars str, bytes, int, float, bool and
   None, exact types only. TypeError for anything else (a wire record included), or
   nesting deeper than CPEX__CLONE_DEPTH: the caller then decodes its copy. As clone,
   no Python code runs while it copies. */
static PyObject *cpex__natives_copy_plain(PyObject *self, PyObject *value)
{
    (void)self;
    return cpex__clone_any(value, 0, 0);
}

static PyObject *cpex__natives_clone_setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t i;
    (void)self;
    if (nargs != 4 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "clone_setup(record_type, object_new, fields_set, extra)");
        return NULL;
    }
    for (i = 2; i < 4; i++) {
        if (Py_TYPE(args[i])->tp_descr_get == NULL || Py_TYPE(args[i])->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "clone_setup: the slots must be data descriptors");
            return NULL;
        }
    }
    if (cpex__clone_no_args == NULL) {
        cpex__clone_no_args = PyTuple_New(0);
        if (cpex__clone_no_args == NULL)
            return NULL;
    }
    /* Kept for the life of the process, as the module is. */
    Py_XSETREF(cpex__clone_new, Py_NewRef(args[1]));
    Py_XSETREF(cpex__clone_fields_set, Py_NewRef(args[2]));
    Py_XSETREF(cpex__clone_extra, Py_NewRef(args[3]));
    Py_XSETREF(cpex__clone_record_type, Py_NewRef(args[0]));
    Py_RETURN_NONE;
}

/* parse(cls, data) -> the record cls._parse(data) makes, or None when it does not
   take data (the caller then runs cls._parse, which refuses it naming the field or
   takes it as it would). It takes only what the generated _parse takes on its inline
   path, exact types all the way down: a string field's exact str, a record field's
   exact dict (parsed as its record), a list of records' exact list of exact dicts, a
   map of any's exact dict with exact str keys (copied), a map of strings' exact dict
   with exact str keys and values (copied), an any as it is; a union's
   exact str tag, a known variant's value parsed as its record (a string variant's
   taken as it is), an unknown one's whole map kept. The record it makes is the one
   _parse makes: the instance dict's keys in field order, the fields set, the unknown
   fields in their order (None: none). A record class without a spec is parsed by
   its own _parse (any exception: not taken). No Python code runs otherwise: keys are
   exact str (cached hashes). parse_setup(specs) gives it the specs, once:
   {cls: (names: frozenset, 0, ((name, kind, default, sub), ...))} for a record
   (kinds CPEX__PARSE_*), {cls: (names, 1, (tag, {tag: (field, kind)}, fields))} for a
   union (cpexrt.wire.parse_specs builds them from the generated classes). */

enum {
    CPEX__PARSE_STR,
    CPEX__PARSE_STR_DEFAULT,
    CPEX__PARSE_STR_OPT,
    CPEX__PARSE_RECORD,
    CPEX__PARSE_RECORD_OPT,
    CPEX__PARSE_RECORDS,
    CPEX__PARSE_RECORDS_OPT,
    CPEX__PARSE_MAP,
    CPEX__PARSE_MAP_OPT,
    CPEX__PARSE_ANY,
    CPEX__PARSE_ANY_OPT,
    CPEX__PARSE_SMAP,
    CPEX__PARSE_SMAP_OPT,
};

static PyObject *cpex__parse_specs, *cpex__parse_raw_key;

/* Not taken: NULL with no exception set (an exception set: a real failure). */
static PyObject *cpex__parse_record(PyObject *cls, PyObject *data, int depth);

static PyObject *cpex__parse_own(PyObject *cls, PyObject *data)
{
    PyObject *out = PyObject_CallMethod(cls, "_parse", "O", data);
    if (out == NULL)
        PyErr_Clear(); /* refused: the caller's _parse names why */
    return out;
}

/* A record field's value: an exact dict parsed as cls, NULL (not taken) else. */
static PyObject *cpex__parse_sub(PyObject *cls, PyObject *value, int depth)
{
    if (!PyDict_CheckExact(value))
        return NULL;
    return cpex__parse_record(cls, value, depth + 1);
}

static PyObject *cpex__parse_records(PyObject *cls, PyObject *value, int depth)
{
    Py_ssize_t n, i;
    PyObject *out;
    if (!PyList_CheckExact(value))
        return NULL;
    n = PyList_GET_SIZE(value);
    out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *item = cpex__parse_sub(cls, PyList_GET_ITEM(value, i), depth);
        if (item == NULL || PyList_GET_SIZE(value) != n) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

static PyObject *cpex__parse_map(PyObject *value)
{
    PyObject *key, *item;
    Py_ssize_t pos = 0;
    if (!PyDict_CheckExact(value))
        return NULL;
    while (PyDict_Next(value, &pos, &key, &item))
        if (!PyUnicode_CheckExact(key))
            return NULL;
    return PyDict_Copy(value);
}

/* A map<string, string>: an exact dict of exact str keys and values, copied (as the
   generated _parse copies it); NULL (not taken) for anything else. */
static PyObject *cpex__parse_smap(PyObject *value)
{
    PyObject *key, *item;
    Py_ssize_t pos = 0;
    if (!PyDict_CheckExact(value))
        return NULL;
    while (PyDict_Next(value, &pos, &key, &item))
        if (!PyUnicode_CheckExact(key) || !PyUnicode_CheckExact(item))
            return NULL;
    return PyDict_Copy(value);
}

/* The record's instance dict values, its fields set and unknown fields, set on a new
   cls (as _parse: object.__new__, then the three slots). Steals values. known: how
   many of data's keys are field names (-1: not counted); when all are, data has no
   unknown field to look for. */
static PyObject *cpex__parse_make(PyObject *cls, PyObject *names, PyObject *data, PyObject *values, Py_ssize_t known_keys)
{
    PyObject *out = NULL, *fields_set = NULL, *extra = NULL, *key, *item;
    Py_ssize_t pos = 0;
    if (((PyTypeObject *)cls)->tp_new != PyBaseObject_Type.tp_new || cpex__clone_no_args == NULL) {
        PyErr_SetString(PyExc_TypeError, "parse: a record class with a __new__ of its own");
        goto done;
    }
    out = ((PyTypeObject *)cls)->tp_new((PyTypeObject *)cls, cpex__clone_no_args, NULL);
    if (out == NULL || PyObject_GenericSetDict(out, values, NULL) != 0)
        goto fail;
    fields_set = PySet_New(data);
    if (fields_set == NULL)
        goto fail;
    while (known_keys != PyDict_GET_SIZE(data) && PyDict_Next(data, &pos, &key, &item)) {
        int known = PySet_Contains(names, key);
        if (known < 0)
            goto fail;
        if (known)
            continue;
        if (extra == NULL && (extra = PyDict_New()) == NULL)
            goto fail;
        if (PyDict_SetItem(extra, key, item) != 0 || PySet_Discard(fields_set, key) < 0)
            goto fail;
    }
    if (cpex__clone_slot_set(cpex__clone_fields_set, out, fields_set) != 0 ||
        cpex__clone_slot_set(cpex__clone_extra, out, extra != NULL ? extra : Py_None) != 0)
        goto fail;
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_DECREF(values);
    Py_XDECREF(fields_set);
    Py_XDECREF(extra);
    return out;
}

static PyObject *cpex__parse_union(PyObject *cls, PyObject *names, PyObject *spec, PyObject *data, int depth)
{
    PyObject *tag_name, *variants, *fields, *tag, *known, *values;
    Py_ssize_t i, n;
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 3)
        return NULL;
    tag_name = PyTuple_GET_ITEM(spec, 0);
    variants = PyTuple_GET_ITEM(spec, 1);
    fields = PyTuple_GET_ITEM(spec, 2);
    tag = PyDict_GetItemWithError(data, tag_name);
    if (tag == NULL || !PyUnicode_CheckExact(tag))
        return NULL;
    values = PyDict_New();
    if (values == NULL || PyDict_SetItem(values, tag_name, tag) != 0)
        goto fail;
    n = PyTuple_GET_SIZE(fields);
    for (i = 0; i < n; i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i), *value = PyDict_GetItemWithError(data, field);
        if (value == NULL && PyErr_Occurred())
            goto fail;
        if (PyDict_SetItem(values, field, value != NULL ? value : Py_None) != 0)
            goto fail;
    }
    known = PyDict_GetItemWithError(variants, tag);
    if (known == NULL) {
        PyObject *raw;
        if (PyErr_Occurred())
            goto fail;
        raw = PyDict_Copy(data); /* an unknown variant: its whole map, re-emitted as received */
        if (raw == NULL || PyDict_SetItem(values, cpex__parse_raw_key, raw) != 0) {
            Py_XDECREF(raw);
            goto fail;
        }
        Py_DECREF(raw);
    } else {
        PyObject *field = PyTuple_GET_ITEM(known, 0), *kind = PyTuple_GET_ITEM(known, 1);
        PyObject *value = PyDict_GetItemWithError(values, field);
        if (value == NULL)
            goto fail;
        if (kind != (PyObject *)&PyUnicode_Type && value != Py_None && (PyObject *)Py_TYPE(value) != kind) {
            PyObject *parsed = cpex__parse_sub(kind, value, depth);
            int rc;
            if (parsed == NULL)
                goto fail;
            rc = PyDict_SetItem(values, field, parsed);
            Py_DECREF(parsed);
            if (rc != 0)
                goto fail;
        }
    }
    return cpex__parse_make(cls, names, data, values, -1);
fail:
    Py_XDECREF(values);
    return NULL;
}

static PyObject *cpex__parse_record(PyObject *cls, PyObject *data, int depth)
{
    PyObject *spec, *names, *fields, *values;
    Py_ssize_t i, n, known_keys = 0;
    if (depth > CPEX__CLONE_DEPTH)
        return NULL;
    spec = PyDict_GetItemWithError(cpex__parse_specs, cls);
    if (spec == NULL)
        return PyErr_Occurred() ? NULL : cpex__parse_own(cls, data);
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 3)
        return NULL;
    names = PyTuple_GET_ITEM(spec, 0);
    fields = PyTuple_GET_ITEM(spec, 2);
    if (PyTuple_GET_ITEM(spec, 1) == Py_True)
        return cpex__parse_union(cls, names, fields, data, depth);
    values = PyDict_New();
    if (values == NULL)
        return NULL;
    n = PyTuple_GET_SIZE(fields);
    for (i = 0; i < n; i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i), *name = PyTuple_GET_ITEM(field, 0);
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(field, 1));
        PyObject *sub = PyTuple_GET_ITEM(field, 3), *value = PyDict_GetItemWithError(data, name), *made = NULL;
        int optional = kind == CPEX__PARSE_STR_OPT || kind == CPEX__PARSE_RECORD_OPT || kind == CPEX__PARSE_RECORDS_OPT ||
                       kind == CPEX__PARSE_MAP_OPT || kind == CPEX__PARSE_ANY_OPT || kind == CPEX__PARSE_SMAP_OPT;
        int rc;
        if (value == NULL && PyErr_Occurred())
            goto fail;
        if (value != NULL)
            known_keys++;
        if (value == NULL && kind == CPEX__PARSE_STR_DEFAULT)
            value = PyTuple_GET_ITEM(field, 2);
        if (value == NULL || value == Py_None) {
            if (!optional)
                goto fail; /* missing or null: _parse refuses it (or says why it takes it) */
            made = Py_NewRef(Py_None);
        } else {
            switch (kind) {
            case CPEX__PARSE_STR:
            case CPEX__PARSE_STR_DEFAULT:
            case CPEX__PARSE_STR_OPT:
                made = PyUnicode_CheckExact(value) ? Py_NewRef(value) : NULL;
                break;
            case CPEX__PARSE_RECORD:
            case CPEX__PARSE_RECORD_OPT:
                made = cpex__parse_sub(sub, value, depth);
                break;
            case CPEX__PARSE_RECORDS:
            case CPEX__PARSE_RECORDS_OPT:
                made = cpex__parse_records(sub, value, depth);
                break;
            case CPEX__PARSE_MAP:
            case CPEX__PARSE_MAP_OPT:
                made = cpex__parse_map(value);
                break;
            case CPEX__PARSE_ANY:
            case CPEX__PARSE_ANY_OPT:
                made = Py_NewRef(value);
                break;
            case CPEX__PARSE_SMAP:
            case CPEX__PARSE_SMAP_OPT:
                made = cpex__parse_smap(value);
                break;
            default:
                break;
            }
        }
        if (made == NULL)
            goto fail;
        rc = PyDict_SetItem(values, name, made);
        Py_DECREF(made);
        if (rc != 0)
            goto fail;
    }
    return cpex__parse_make(cls, names, data, values, known_keys);
fail:
    Py_DECREF(values);
    return NULL;
}

static PyObject *cpex__natives_parse(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *out;
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse(cls, data)");
        return NULL;
    }
    if (cpex__parse_specs == NULL || cpex__clone_fields_set == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "parse: parse_setup and clone_setup were not called");
        return NULL;
    }
    if (!PyDict_CheckExact(args[1]))
        Py_RETURN_NONE;
    out = cpex__parse_record(args[0], args[1], 0);
    if (out == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

static PyObject *cpex__natives_parse_setup(PyObject *self, PyObject *specs)
{
    (void)self;
    if (!PyDict_CheckExact(specs)) {
        PyErr_SetString(PyExc_TypeError, "parse_setup(specs: dict)");
        return NULL;
    }
    if (cpex__parse_raw_key == NULL && (cpex__parse_raw_key = PyUnicode_InternFromString("_raw")) == NULL)
        return NULL;
    Py_XSETREF(cpex__parse_specs, Py_NewRef(specs)); /* kept for the life of the process */
    Py_RETURN_NONE;
}

/* pack(value) -> bytes | None: the MessagePack msgpack.Packer(use_bin_type=True)
   gives for value, byte for byte (the smallest int, str 8 for short strings, bin for
   bytes, float 64, a dict's entries in its order), made when value is of exact
   types all the way down (None, bool, int within 64 bits, float, str, bytes, list,
   tuple, dict) and nested at most CPEX__CLONE_DEPTH deep; None for anything else
   (a subclass, a str that is not UTF-8 encodable, an int out of range, ...), which
   the caller then packs with msgpack, which packs it or says why not. No Python
   code runs (exact types only).
   pack_wire(value): the same, and wire records too, once pack_setup(plans) gave their
   classes' plans
   (cpexrt.wire.pack_plans: {cls: (union, (name, how, name, how, ...))}): a record of
   exact class packs as its to_wire() map would (cpexrt/wire.py WireRecord.to_wire:
   its fields in WIRE order, how 0 always, 1 omitted when None or empty, 2 omitted
   when None); a union part that kept an unknown variant's map (_raw) packs as that
   map. A record with unknown fields (_extra), a field missing from its dict, or a
   class without a plan is left to the caller (None), whose msgpack packs records by
   to_wire() (cpexrt.wire.pack_wire). */
typedef struct {
    char *buf;
    size_t len, cap;
    int records; /* pack_wire: wire records packed too */
} cpex__pk;

static int cpex__pk_grow(cpex__pk *out, size_t n)
{
    size_t cap;
    char *buf;
    if (out->len + n <= out->cap)
        return 0;
    cap = out->cap ? out->cap : 256;
    while (cap < out->len + n) {
        if (cap > ((size_t)1 << 40))
            return -1;
        cap *= 2;
    }
    buf = (char *)PyMem_Realloc(out->buf, cap);
    if (buf == NULL)
        return -1;
    out->buf = buf;
    out->cap = cap;
    return 0;
}

static int cpex__pk_put(cpex__pk *out, const void *data, size_t n)
{
    if (cpex__pk_grow(out, n) != 0)
        return -1;
    memcpy(out->buf + out->len, data, n);
    out->len += n;
    return 0;
}

/* A head byte then n big-endian bytes of v. */
static int cpex__pk_head(cpex__pk *out, uint8_t head, uint64_t v, int n)
{
    uint8_t b[9];
    int i;
    b[0] = head;
    for (i = 0; i < n; i++)
        b[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return cpex__pk_put(out, b, (size_t)n + 1);
}

/* A length-prefixed item's head: fix (small) form below fix_limit, else the 8 / 16 /
   32-bit forms (h8 0: none). */
static int cpex__pk_len(cpex__pk *out, size_t n, uint8_t fix, size_t fix_limit, uint8_t h8, uint8_t h16, uint8_t h32)
{
    if (n < fix_limit)
        return cpex__pk_head(out, (uint8_t)(fix | n), 0, 0);
    if (h8 && n < 0x100)
        return cpex__pk_head(out, h8, n, 1);
    if (n < 0x10000)
        return cpex__pk_head(out, h16, n, 2);
    if (n <= 0xffffffffu)
        return cpex__pk_head(out, h32, n, 4);
    return -1;
}

static PyObject *cpex__pack_plans;
static int cpex__pk_record(cpex__pk *out, PyObject *v, PyObject *plan, int depth);

static int cpex__pk_value(cpex__pk *out, PyObject *v, int depth)
{
    PyTypeObject *t = Py_TYPE(v);
    if (depth > CPEX__CLONE_DEPTH)
        return -1;
    if (v == Py_None)
        return cpex__pk_head(out, 0xc0, 0, 0);
    if (v == Py_True)
        return cpex__pk_head(out, 0xc3, 0, 0);
    if (v == Py_False)
        return cpex__pk_head(out, 0xc2, 0, 0);
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s == NULL) {
            PyErr_Clear(); /* msgpack says why */
            return -1;
        }
        if (cpex__pk_len(out, (size_t)n, 0xa0, 32, 0xd9, 0xda, 0xdb) != 0)
            return -1;
        return cpex__pk_put(out, s, (size_t)n);
    }
    if (t == &PyLong_Type) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(v);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return -1;
            }
            return cpex__pk_head(out, 0xcf, u, 8);
        }
        if (overflow < 0 || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return -1;
        }
        if (x >= 0) {
            if (x < 0x80)
                return cpex__pk_head(out, (uint8_t)x, 0, 0);
            if (x < 0x100)
                return cpex__pk_head(out, 0xcc, (uint64_t)x, 1);
            if (x < 0x10000)
                return cpex__pk_head(out, 0xcd, (uint64_t)x, 2);
            if (x < 0x100000000LL)
                return cpex__pk_head(out, 0xce, (uint64_t)x, 4);
            return cpex__pk_head(out, 0xcf, (uint64_t)x, 8);
        }
        if (x >= -32)
            return cpex__pk_head(out, (uint8_t)(int8_t)x, 0, 0);
        if (x >= -128)
            return cpex__pk_head(out, 0xd0, (uint64_t)x, 1);
        if (x >= -32768)
            return cpex__pk_head(out, 0xd1, (uint64_t)x, 2);
        if (x >= -2147483648LL)
            return cpex__pk_head(out, 0xd2, (uint64_t)x, 4);
        return cpex__pk_head(out, 0xd3, (uint64_t)x, 8);
    }
    if (t == &PyBytes_Type) {
        size_t n = (size_t)PyBytes_GET_SIZE(v);
        if (cpex__pk_len(out, n, 0, 0, 0xc4, 0xc5, 0xc6) != 0)
            return -1;
        return cpex__pk_put(out, PyBytes_AS_STRING(v), n);
    }
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(v);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        return cpex__pk_head(out, 0xcb, bits, 8);
    }
    if (t == &PyDict_Type) {
        PyObject *key, *item;
        Py_ssize_t pos = 0, n = PyDict_GET_SIZE(v);
        if (cpex__pk_len(out, (size_t)n, 0x80, 16, 0, 0xde, 0xdf) != 0)
            return -1;
        while (PyDict_Next(v, &pos, &key, &item))
            if (cpex__pk_value(out, key, depth + 1) != 0 || cpex__pk_value(out, item, depth + 1) != 0)
                return -1;
        return PyDict_GET_SIZE(v) == n ? 0 : -1;
    }
    if (t == &PyList_Type || t == &PyTuple_Type) {
        Py_ssize_t i, n = PySequence_Fast_GET_SIZE(v);
        if (cpex__pk_len(out, (size_t)n, 0x90, 16, 0, 0xdc, 0xdd) != 0)
            return -1;
        for (i = 0; i < n; i++) {
            if (i >= PySequence_Fast_GET_SIZE(v))
                return -1;
            if (cpex__pk_value(out, PySequence_Fast_GET_ITEM(v, i), depth + 1) != 0)
                return -1;
        }
        return PySequence_Fast_GET_SIZE(v) == n ? 0 : -1;
    }
    if (out->records && cpex__pack_plans != NULL) {
        PyObject *plan = PyDict_GetItemWithError(cpex__pack_plans, (PyObject *)t);
        if (plan != NULL)
            return cpex__pk_record(out, v, plan, depth);
        PyErr_Clear();
    }
    return -1;
}

/* Whether to_wire emits a field of value v under how (0 always, 1 omitted when None
   or empty: False, a zero int or float, an empty str, bytes, list, dict or tuple, of
   exact type; 2 omitted when None). */
static int cpex__pk_emits(PyObject *v, long how)
{
    PyTypeObject *t;
    if (v == Py_None)
        return how == 0;
    if (how != 1)
        return 1;
    if (v == Py_False)
        return 0;
    t = Py_TYPE(v);
    if (t == &PyLong_Type || t == &PyFloat_Type)
        return PyObject_IsTrue(v) > 0; /* runs no Python code for these exact types */
    if (t == &PyUnicode_Type)
        return PyUnicode_GET_LENGTH(v) != 0;
    if (t == &PyBytes_Type)
        return PyBytes_GET_SIZE(v) != 0;
    if (t == &PyList_Type || t == &PyTuple_Type)
        return PySequence_Fast_GET_SIZE(v) != 0;
    if (t == &PyDict_Type)
        return PyDict_GET_SIZE(v) != 0;
    return 1;
}

static int cpex__pk_record(cpex__pk *out, PyObject *v, PyObject *plan, int depth)
{
    PyObject *dict, *extra, *fields, *raw;
    Py_ssize_t i, n, count = 0;
    int rc = -1, pass;
    if (!PyTuple_CheckExact(plan) || PyTuple_GET_SIZE(plan) != 2 || cpex__clone_extra == NULL)
        return -1;
    fields = PyTuple_GET_ITEM(plan, 1);
    if (!PyTuple_CheckExact(fields))
        return -1;
    n = PyTuple_GET_SIZE(fields) / 2;
    dict = PyObject_GenericGetDict(v, NULL);
    if (dict == NULL) {
        PyErr_Clear();
        return -1;
    }
    rc = -1;
    if (!PyDict_CheckExact(dict))
        goto done;
    if (PyTuple_GET_ITEM(plan, 0) == Py_True) {
        /* A union part: an unknown variant's map as it came (to_wire: dict(self._raw)). */
        raw = PyDict_GetItemWithError(dict, cpex__parse_raw_key);
        if (raw == NULL && PyErr_Occurred()) {
            PyErr_Clear();
            goto done;
        }
        if (raw != NULL && raw != Py_None) {
            if (PyDict_CheckExact(raw))
                rc = cpex__pk_value(out, raw, depth + 1);
            goto done;
        }
    }
    extra = cpex__clone_slot_get(cpex__clone_extra, v);
    if (extra == NULL) {
        PyErr_Clear();
        goto done;
    }
    pass = extra == Py_None || (PyDict_CheckExact(extra) && PyDict_GET_SIZE(extra) == 0);
    Py_DECREF(extra);
    if (!pass)
        goto done; /* to_wire appends them */
    /* Pass 0 counts the fields emitted, pass 1 packs them; no Python code runs between
       the two (exact types only), so both see the same values. */
    for (pass = 0; pass < 2; pass++) {
        if (pass == 1 && cpex__pk_len(out, (size_t)count, 0x80, 16, 0, 0xde, 0xdf) != 0)
            goto done;
        for (i = 0; i < n; i++) {
            PyObject *name = PyTuple_GET_ITEM(fields, 2 * i), *value;
            long how = PyLong_AsLong(PyTuple_GET_ITEM(fields, 2 * i + 1));
            if (how == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                goto done;
            }
            value = PyDict_GetItemWithError(dict, name);
            if (value == NULL) {
                PyErr_Clear(); /* a field deleted: to_wire's getattr says what it is */
                goto done;
            }
            if (!cpex__pk_emits(value, how))
                continue;
            if (pass == 0)
                count++;
            else if (cpex__pk_value(out, name, depth + 1) != 0 || cpex__pk_value(out, value, depth + 1) != 0)
                goto done;
        }
    }
    rc = 0;
done:
    Py_DECREF(dict);
    return rc;
}

/* pack_setup(plans): the record classes' plans (cpexrt.wire.pack_plans), once. */
static PyObject *cpex__natives_pack_setup(PyObject *self, PyObject *plans)
{
    (void)self;
    if (!PyDict_CheckExact(plans)) {
        PyErr_SetString(PyExc_TypeError, "pack_setup(plans: dict)");
        return NULL;
    }
    /* the union parts' "_raw" key, shared with parse_setup */
    if (cpex__parse_raw_key == NULL && (cpex__parse_raw_key = PyUnicode_InternFromString("_raw")) == NULL)
        return NULL;
    Py_XSETREF(cpex__pack_plans, Py_NewRef(plans)); /* kept for the life of the process */
    Py_RETURN_NONE;
}

static PyObject *cpex__pack(PyObject *value, int records)
{
    cpex__pk out = {NULL, 0, 0, records};
    PyObject *data;
    if (cpex__pk_value(&out, value, 0) != 0) {
        PyMem_Free(out.buf);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    data = PyBytes_FromStringAndSize(out.buf, (Py_ssize_t)out.len);
    PyMem_Free(out.buf);
    return data;
}

static PyObject *cpex__natives_pack(PyObject *self, PyObject *value)
{
    (void)self;
    return cpex__pack(value, 0);
}

static PyObject *cpex__natives_pack_wire(PyObject *self, PyObject *value)
{
    (void)self;
    return cpex__pack(value, 1);
}

/* The watchdog's arm and disarm (cpexrt/engine/watchdog.py, Watchdog.arm and .disarm),
   the same steps on the same tables, as builtins: a plugin run pays both, and in
   Python they cost more than the rest of a plugin's step around them. Each table step
   is one dict operation under the GIL with no Python code between them (the keys are
   ints and bare objects: their hashes and comparisons run no code), so the watchdog
   thread sees each step whole, as it sees Python's dict.pop. The rare paths stay in
   Python: starting or waking the thread (alert) and a disarm that lost its claim to
   the watchdog (claimed). watch_setup(watchdog, current, armed, alert, claimed), once. */
static PyObject *cpex__watch_self, *cpex__watch_current, *cpex__watch_armed, *cpex__watch_alert, *cpex__watch_claimed,
    *cpex__watch_target;

static PyObject *cpex__natives_watch_setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5 || !PyDict_CheckExact(args[1]) || !PyDict_CheckExact(args[2]) || !PyCallable_Check(args[3]) ||
        !PyCallable_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "watch_setup(watchdog, current: dict, armed: dict, alert, claimed)");
        return NULL;
    }
    if (cpex__watch_target == NULL) {
        cpex__watch_target = PyUnicode_InternFromString("_target");
        if (cpex__watch_target == NULL)
            return NULL;
    }
    /* Kept for the life of the process, as the module is. */
    Py_XSETREF(cpex__watch_self, Py_NewRef(args[0]));
    Py_XSETREF(cpex__watch_current, Py_NewRef(args[1]));
    Py_XSETREF(cpex__watch_alert, Py_NewRef(args[3]));
    Py_XSETREF(cpex__watch_claimed, Py_NewRef(args[4]));
    Py_XSETREF(cpex__watch_armed, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

/* watch_arm(deadline: float) -> None: Watchdog.arm. */
static PyObject *cpex__natives_watch_arm(PyObject *self, PyObject *arg)
{
    PyObject *key, *guard, *entry, *previous, *target;
    double deadline, next;
    (void)self;
    if (cpex__watch_armed == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "watch_arm: watch_setup was not called");
        return NULL;
    }
    deadline = PyFloat_AsDouble(arg);
    if (deadline == -1.0 && PyErr_Occurred())
        return NULL;
    /* Everything allocated first: an allocation may run the garbage collector (and
       so Python code), never between the table steps below. */
    key = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    guard = key == NULL ? NULL : PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    entry = guard == NULL ? NULL : PyTuple_Pack(2, arg, key);
    if (entry == NULL)
        goto fail;
    previous = PyDict_GetItemWithError(cpex__watch_current, key);
    if (previous == NULL && PyErr_Occurred())
        goto fail;
    if (previous != NULL) {
        /* Armed again before disarm: the previous guard replaced, unless it fired
           (claimed by the watchdog): then that exception stands for this call. */
        PyObject *found = PyDict_GetItemWithError(cpex__watch_armed, previous);
        if (found == NULL) {
            if (PyErr_Occurred())
                goto fail;
            Py_DECREF(entry);
            Py_DECREF(guard);
            Py_DECREF(key);
            Py_RETURN_NONE;
        }
        if (PyDict_DelItem(cpex__watch_armed, previous) != 0)
            goto fail;
    }
    if (PyDict_SetItem(cpex__watch_current, key, guard) != 0 || PyDict_SetItem(cpex__watch_armed, guard, entry) != 0)
        goto fail;
    Py_DECREF(entry);
    Py_DECREF(guard);
    Py_DECREF(key);
    target = PyObject_GetAttr(cpex__watch_self, cpex__watch_target);
    if (target == NULL)
        return NULL;
    next = PyFloat_AsDouble(target);
    Py_DECREF(target);
    if (next == -1.0 && PyErr_Occurred())
        return NULL;
    if (deadline < next)
        return PyObject_CallOneArg(cpex__watch_alert, arg);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(entry);
    Py_XDECREF(guard);
    Py_XDECREF(key);
    return NULL;
}

/* watch_disarm() -> bool: Watchdog.disarm (True when the deadline fired). */
static PyObject *cpex__natives_watch_disarm(PyObject *self, PyObject *unused)
{
    PyObject *key, *guard, *found, *out;
    (void)self;
    (void)unused;
    if (cpex__watch_armed == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "watch_disarm: watch_setup was not called");
        return NULL;
    }
    key = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (key == NULL)
        return NULL;
    guard = PyDict_GetItemWithError(cpex__watch_current, key);
    if (guard == NULL) {
        Py_DECREF(key);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE;
    }
    Py_INCREF(guard);
    if (PyDict_DelItem(cpex__watch_current, key) != 0)
        goto fail;
    found = PyDict_GetItemWithError(cpex__watch_armed, guard);
    if (found != NULL) {
        if (PyDict_DelItem(cpex__watch_armed, guard) != 0)
            goto fail;
        Py_DECREF(guard);
        Py_DECREF(key);
        Py_RETURN_FALSE;
    }
    if (PyErr_Occurred())
        goto fail;
    /* The watchdog claimed it: Watchdog._claimed waits for its mark and withdraws
       the exception if still pending. */
    out = PyObject_CallFunctionObjArgs(cpex__watch_claimed, key, guard, NULL);
    Py_DECREF(guard);
    Py_DECREF(key);
    return out;
fail:
    Py_DECREF(guard);
    Py_DECREF(key);
    return NULL;
}

/* The boundary's entry for the invokes (natives.set_invoke, once, as it loads): the
   generated shims of the functions marked native_entry call cpex__native_<name>, which
   calls it directly with the inputs as bytes, instead of going through the cffi
   extern "Python" cpexpy_<name> (whose per-call conversions, a cdata object per pointer
   and ffi.buffer / ffi.cast / pointer stores in Python, cost more than the rest of the
   boundary). entry(which, manager, hook, payload_type, payload, extensions | None,
   request | None, options | None, context, plain, max_entries) returns (result address, result length,
   context token, background token) or, when the call failed, (status, message bytes);
   it never raises. Set under the GIL and never cleared; read under the GIL. */
static PyObject *cpex__natives_invoke_entry;

/* cpex__native_call's "not here": 0, as 1 is its success (cpexpy_<name>'s contract). */
#define CPEX__NATIVE_DECLINED 0

static PyObject *cpex__natives_set_invoke(PyObject *self, PyObject *entry)
{
    (void)self;
    if (!PyCallable_Check(entry)) {
        PyErr_SetString(PyExc_TypeError, "set_invoke(entry: callable)");
        return NULL;
    }
    Py_INCREF(entry);
    Py_XSETREF(cpex__natives_invoke_entry, entry);
    Py_RETURN_NONE;
}

/* Whether the inputs are within the manager's published limits (ffi/fastpath.c's
   table): only then are they copied into Python here. A call over a limit, or of a
   manager the table does not know, goes through cpexpy_<name>, where Python refuses it
   before anything is copied, with its message. Python checks the limits again on the
   copies (a reload may have changed them meanwhile). */
static int cpex__native_within(uintptr_t manager, size_t payload_len, size_t extensions_len, size_t request_len,
                               size_t options_len, size_t *max_entries)
{
    size_t i;
    int within = 0;
    if (payload_len == 0)
        return 0;
    pthread_rwlock_rdlock(&cpex__quiet_lock);
    for (i = 0; i < cpex__quiet_n; i++)
        if (cpex__quiet[i].token == manager) {
            const cpex__quiet_entry *e = &cpex__quiet[i];
            within = payload_len <= e->max_payload && extensions_len <= e->max_extensions &&
                     request_len <= e->max_extensions && options_len <= e->max_extensions;
            *max_entries = e->max_entries;
            break;
        }
    pthread_rwlock_unlock(&cpex__quiet_lock);
    return within;
}

/* The C checker's verdicts (cpex__plain_map, ffi/fastpath.c) on the copies made for
   Python, with max_entries: bit 1 the payload is a plain map, 2 the extensions are one
   or absent, 4 the request is one, 8 the options are one (absent: 0). Computed on the
   copies, never on the caller's memory, which could change between a check and a
   copy. Without the GIL for inputs large enough for the walk to matter. */
static long cpex__native_plain(PyObject *payload, PyObject *extensions, PyObject *request, PyObject *options,
                               size_t max_entries)
{
    PyObject *in[4] = {payload, extensions, request, options};
    const uint8_t *data[4] = {NULL};
    size_t len[4] = {0}, total = 0;
    long plain = 0;
    int i;
    PyThreadState *save = NULL;
    for (i = 0; i < 4; i++)
        if (in[i] != Py_None) {
            data[i] = (const uint8_t *)PyBytes_AS_STRING(in[i]);
            len[i] = (size_t)PyBytes_GET_SIZE(in[i]);
            total += len[i];
        }
    /* The bytes objects are immutable, and this call's references keep them. */
    if (total > CPEX__NATIVES_NOGIL_ABOVE)
        save = PyEval_SaveThread();
    for (i = 0; i < 4; i++) {
        if (data[i] == NULL)
            plain |= i == 1 ? 2 : 0; /* no extensions count as plain ones */
        else if (cpex__plain_map(data[i], len[i], len[i], max_entries))
            plain |= 1L << i;
    }
    if (save != NULL)
        PyEval_RestoreThread(save);
    return plain;
}

static PyObject *cpex__native_bytes(const void *data, size_t len)
{
    if (len == 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
}

/* An invoke through the native entry: 1 with the outputs written, or a negative status
   with *err_msg set (cpexpy_<name>'s contract); CPEX__NATIVE_DECLINED when the entry is not
   installed or the inputs are not within the limits (the caller then calls
   cpexpy_<name>). */
static int cpex__native_call(int which, uintptr_t manager, const char *hook, size_t hook_len, uint8_t payload_type,
                             const uint8_t *payload, size_t payload_len, const uint8_t *extensions,
                             size_t extensions_len, const uint8_t *request, size_t request_len,
                             const uint8_t *options, size_t options_len, uintptr_t context, uint8_t **out_result,
                             size_t *out_result_len, uintptr_t *out_context, uintptr_t *out_background,
                             char **err_msg)
{
    PyGILState_STATE gil;
    PyObject *args[11] = {NULL};
    PyObject *entry, *out = NULL;
    size_t max_entries = 0;
    int rc = (int)CPEX_ERR_INTERNAL, saved_errno = errno, i;
    const char *problem = "internal error: the native invoke entry failed";
    if (!cpex__native_within(manager, payload_len, extensions_len, request_len, options_len, &max_entries))
        return CPEX__NATIVE_DECLINED;
    gil = PyGILState_Ensure();
    entry = cpex__natives_invoke_entry;
    if (entry == NULL) {
        PyGILState_Release(gil);
        errno = saved_errno;
        return CPEX__NATIVE_DECLINED;
    }
    args[0] = PyLong_FromLong(which);
    args[1] = PyLong_FromSize_t(manager);
    args[2] = PyBytes_FromStringAndSize(hook_len != 0 ? hook : "", (Py_ssize_t)hook_len);
    args[3] = PyLong_FromLong(payload_type);
    args[4] = PyBytes_FromStringAndSize((const char *)payload, (Py_ssize_t)payload_len);
    args[5] = cpex__native_bytes(extensions, extensions_len);
    args[6] = cpex__native_bytes(request, request_len);
    args[7] = cpex__native_bytes(options, options_len);
    args[8] = PyLong_FromSize_t(context);
    for (i = 0; i < 9 && args[i] != NULL; i++)
        ;
    if (i == 9) {
        args[9] = PyLong_FromLong(cpex__native_plain(args[4], args[5], args[6], args[7], max_entries));
        args[10] = PyLong_FromSize_t(max_entries);
    }
    if (args[9] != NULL && args[10] != NULL)
        out = PyObject_Vectorcall(entry, args, 11, NULL);
    else
        problem = "internal error: out of memory for the call's inputs";
    for (i = 0; i < 11; i++)
        Py_XDECREF(args[i]);
    if (out != NULL && PyTuple_CheckExact(out) && PyTuple_GET_SIZE(out) == 4) {
        void *result = PyLong_AsVoidPtr(PyTuple_GET_ITEM(out, 0));
        size_t len = PyLong_AsSize_t(PyTuple_GET_ITEM(out, 1));
        size_t ctx = PyLong_AsSize_t(PyTuple_GET_ITEM(out, 2));
        size_t bg = PyLong_AsSize_t(PyTuple_GET_ITEM(out, 3));
        if (!PyErr_Occurred() && result != NULL) {
            *out_result = (uint8_t *)result;
            *out_result_len = len;
            *out_context = (uintptr_t)ctx;
            *out_background = (uintptr_t)bg;
            rc = 1;
        }
    } else if (out != NULL && PyTuple_CheckExact(out) && PyTuple_GET_SIZE(out) == 2 &&
               PyBytes_Check(PyTuple_GET_ITEM(out, 1))) {
        long status = PyLong_AsLong(PyTuple_GET_ITEM(out, 0));
        if (!PyErr_Occurred() && status < 0) {
            PyObject *message = PyTuple_GET_ITEM(out, 1);
            rc = (int)status;
            if (err_msg != NULL)
                *err_msg = cpexrt_message(PyBytes_AS_STRING(message), (size_t)PyBytes_GET_SIZE(message));
            problem = NULL;
        }
    }
    if (rc != 1 && problem != NULL) {
        /* Only a bug (or no memory) gets here: the call fails, it never passes. */
        if (err_msg != NULL && *err_msg == NULL)
            *err_msg = cpexrt_message(problem, strlen(problem));
        rc = (int)CPEX_ERR_INTERNAL;
    }
    if (PyErr_Occurred())
        PyErr_Clear();
    Py_XDECREF(out);
    PyGILState_Release(gil);
    errno = saved_errno;
    return rc;
}

/* The shims' calls (native_entry in codegen/schema/abi.yaml), with cpexpy_<name>'s
   signatures: the native entry, or cpexpy_<name> when it declines. */
static int cpex__native_invoke(uintptr_t manager, const char *hook, size_t hook_len, uint8_t payload_type,
                               const uint8_t *payload, size_t payload_len, const uint8_t *extensions,
                               size_t extensions_len, uintptr_t context, uint8_t **out_result, size_t *out_result_len,
                               uintptr_t *out_context, uintptr_t *out_background, char **err_msg)
{
    int rc = cpex__native_call(0, manager, hook, hook_len, payload_type, payload, payload_len, extensions,
                               extensions_len, NULL, 0, NULL, 0, context, out_result, out_result_len, out_context,
                               out_background, err_msg);
    if (rc != CPEX__NATIVE_DECLINED)
        return rc;
    return cpexpy_invoke(manager, hook, hook_len, payload_type, payload, payload_len, extensions, extensions_len,
                         context, out_result, out_result_len, out_context, out_background, err_msg);
}

static int cpex__native_invoke_request(uintptr_t manager, const char *hook, size_t hook_len, uint8_t payload_type,
                                       const uint8_t *payload, size_t payload_len, const uint8_t *extensions,
                                       size_t extensions_len, const uint8_t *request, size_t request_len,
                                       uintptr_t context, uint8_t **out_result, size_t *out_result_len,
                                       uintptr_t *out_context, uintptr_t *out_background, char **err_msg)
{
    int rc = cpex__native_call(1, manager, hook, hook_len, payload_type, payload, payload_len, extensions,
                               extensions_len, request, request_len, NULL, 0, context, out_result, out_result_len,
                               out_context, out_background, err_msg);
    if (rc != CPEX__NATIVE_DECLINED)
        return rc;
    return cpexpy_invoke_request(manager, hook, hook_len, payload_type, payload, payload_len, extensions,
                                 extensions_len, request, request_len, context, out_result, out_result_len,
                                 out_context, out_background, err_msg);
}

static int cpex__native_invoke_with(uintptr_t manager, const char *hook, size_t hook_len, uint8_t payload_type,
                                    const uint8_t *payload, size_t payload_len, const uint8_t *extensions,
                                    size_t extensions_len, const uint8_t *request, size_t request_len,
                                    const uint8_t *options, size_t options_len, uintptr_t context,
                                    uint8_t **out_result, size_t *out_result_len, uintptr_t *out_context,
                                    uintptr_t *out_background, char **err_msg)
{
    int rc = cpex__native_call(2, manager, hook, hook_len, payload_type, payload, payload_len, extensions,
                               extensions_len, request, request_len, options, options_len, context, out_result,
                               out_result_len, out_context, out_background, err_msg);
    if (rc != CPEX__NATIVE_DECLINED)
        return rc;
    return cpexpy_invoke_with(manager, hook, hook_len, payload_type, payload, payload_len, extensions, extensions_len,
                              request, request_len, options, options_len, context, out_result, out_result_len,
                              out_context, out_background, err_msg);
}

/* The module's method table and definition live in memory that is never freed, not in
   this library's static data: a Python host may unload the library (cffi's dlclose at
   exit) before the interpreter's last garbage collection, which still reads the
   definitions of the builtin objects (only their code is never called again). */
typedef struct {
    PyMethodDef methods[17];
    PyModuleDef module;
    char names[17][16];
} cpex__natives_defs;

/* Called by the boundary once, as it loads: puts the module into sys.modules.
   0 on success, -1 (with nothing installed) otherwise. */
int cpexrt_install_natives(void)
{
    static const char *const names[17] = {"_cpex_natives", "plain_maps", "copy_out",    "drain",
                                          "clone",         "clone_setup", "set_invoke", "copy_plain",
                                          "watch_setup",   "watch_arm",   "watch_disarm", "parse",
                                          "parse_setup",   "decode_map",  "pack",
                                          "pack_setup",    "pack_wire"};
    cpex__natives_defs *defs = (cpex__natives_defs *)calloc(1, sizeof *defs);
    PyGILState_STATE gil;
    PyObject *module;
    int rc = -1, i;
    if (defs == NULL)
        return -1;
    for (i = 0; i < 17; i++)
        strcpy(defs->names[i], names[i]);
    defs->methods[0] = (PyMethodDef){defs->names[1], (PyCFunction)(void (*)(void))cpex__natives_plain_maps, METH_FASTCALL, NULL};
    defs->methods[1] = (PyMethodDef){defs->names[2], cpex__natives_copy_out, METH_O, NULL};
    defs->methods[2] = (PyMethodDef){defs->names[3], cpex__natives_drain, METH_NOARGS, NULL};
    defs->methods[3] = (PyMethodDef){defs->names[4], cpex__natives_clone, METH_O, NULL};
    defs->methods[4] = (PyMethodDef){defs->names[5], (PyCFunction)(void (*)(void))cpex__natives_clone_setup, METH_FASTCALL, NULL};
    defs->methods[5] = (PyMethodDef){defs->names[6], cpex__natives_set_invoke, METH_O, NULL};
    defs->methods[6] = (PyMethodDef){defs->names[7], cpex__natives_copy_plain, METH_O, NULL};
    defs->methods[7] = (PyMethodDef){defs->names[8], (PyCFunction)(void (*)(void))cpex__natives_watch_setup, METH_FASTCALL, NULL};
    defs->methods[8] = (PyMethodDef){defs->names[9], cpex__natives_watch_arm, METH_O, NULL};
    defs->methods[9] = (PyMethodDef){defs->names[10], cpex__natives_watch_disarm, METH_NOARGS, NULL};
    defs->methods[10] = (PyMethodDef){defs->names[11], (PyCFunction)(void (*)(void))cpex__natives_parse, METH_FASTCALL, NULL};
    defs->methods[11] = (PyMethodDef){defs->names[12], cpex__natives_parse_setup, METH_O, NULL};
    defs->methods[12] = (PyMethodDef){defs->names[13], cpex__natives_decode_map, METH_O, NULL};
    defs->methods[13] = (PyMethodDef){defs->names[14], cpex__natives_pack, METH_O, NULL};
    defs->methods[14] = (PyMethodDef){defs->names[15], cpex__natives_pack_setup, METH_O, NULL};
    defs->methods[15] = (PyMethodDef){defs->names[16], cpex__natives_pack_wire, METH_O, NULL};
    defs->module = (PyModuleDef){PyModuleDef_HEAD_INIT, defs->names[0], NULL, -1, defs->methods, NULL, NULL, NULL, NULL};
    gil = PyGILState_Ensure();
    module = PyModule_Create(&defs->module);
    if (module != NULL) {
        rc = PyDict_SetItemString(PyImport_GetModuleDict(), "_cpex_natives", module) == 0 ? 0 : -1;
        Py_DECREF(module);
    }
    if (rc != 0)
        PyErr_Clear();
    PyGILState_Release(gil);
    /* defs is never freed: the module and its builtins refer to it for their life. */
    return rc;
}
