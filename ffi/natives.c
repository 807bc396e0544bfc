/* Python builtins for the boundary's per-invoke C helpers (module _cpex_natives,
   installed by cpexrt_install_natives when the boundary loads). cffi releases and
   retakes the GIL around every call of a lib function: on an invoke's path each such
   call lets the runtime loop's thread (fire-and-forget tasks) take the GIL in the
   middle of the invoke, which then waits for it. These builtins run with the GIL held,
   and release it only for inputs large enough for the work to matter. Pasted into the
   cffi source after ffi/fastpath.c (cpexrt_plain_maps) and ffi/handles.c. */

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

/* The module's method table and definition live in memory that is never freed, not in
   this library's static data: a Python host may unload the library (cffi's dlclose at
   exit) before the interpreter's last garbage collection, which still reads the
   definitions of the builtin objects (only their code is never called again). */
typedef struct {
    PyMethodDef methods[4];
    PyModuleDef module;
    char names[4][16];
} cpex__natives_defs;

/* Called by the boundary once, as it loads: puts the module into sys.modules.
   0 on success, -1 (with nothing installed) otherwise. */
int cpexrt_install_natives(void)
{
    static const char *const names[4] = {"_cpex_natives", "plain_maps", "copy_out", "drain"};
    cpex__natives_defs *defs = (cpex__natives_defs *)calloc(1, sizeof *defs);
    PyGILState_STATE gil;
    PyObject *module;
    int rc = -1, i;
    if (defs == NULL)
        return -1;
    for (i = 0; i < 4; i++)
        strcpy(defs->names[i], names[i]);
    defs->methods[0] = (PyMethodDef){defs->names[1], (PyCFunction)(void (*)(void))cpex__natives_plain_maps, METH_FASTCALL, NULL};
    defs->methods[1] = (PyMethodDef){defs->names[2], cpex__natives_copy_out, METH_O, NULL};
    defs->methods[2] = (PyMethodDef){defs->names[3], cpex__natives_drain, METH_NOARGS, NULL};
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
