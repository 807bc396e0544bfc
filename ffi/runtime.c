/* The runtime glue every library made by cpex_codegen shares: the functions that must
   work without Python (ABI version, build info, free), the start-up of the embedded
   runtime, and the small helpers the generated shims and the Python boundary share.

   Prefix-neutral: cpex_codegen.build pastes it into cffi's set_source after the
   library's header and the RT_* macros it defines for that library (build.py,
   glue_defines), so for the prefix `kv`:
     RT_PUBLIC(abi_version)  -> kv_abi_version     exported, declared in the header
     RT_EXPORT(copy_out)     -> kvrt_copy_out      called by the library's Python side
     RT_PRIVATE(fail)        -> kv__fail           static, called by the generated shims
     RT_STATUS(ERR_INTERNAL) -> KV_ERR_INTERNAL    rt_status -> kv_status
   and RT_NAME ("kv"), RT_ABI_VERSION and the RT_BUILD_* values pinned at build time
   (RT_BUILD_RELOCATABLE: the package layout, which finds its interpreter at start-up).
   Names used only in this file are static and start with rt__. */

#include <dlfcn.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t rt__start_once = PTHREAD_ONCE_INIT;
static char rt__start_error[2048];
/* Written once by the init code (under cffi's start-up lock) when the engine failed to
   load; read by every later call. */
static char rt__init_error[4096];
/* The process that started the runtime; a forked child must not use it: its Python
   may hold a lock (the GIL) owned by a thread that does not exist in the child. */
static pid_t rt__pid;
static volatile sig_atomic_t rt__forked;
/* 1 when this library started the interpreter (a Go / C host), 0 in a Python host. */
static int rt__embedded;
/* The host's SIGINT disposition: CPython installs its own KeyboardInterrupt handler
   when the signal module is first imported (asyncio does) if SIGINT was SIG_DFL,
   which would take Ctrl-C away from a C host. It is put back once the engine loaded. */
static struct sigaction rt__host_sigint;
static pthread_once_t rt__restore_once = PTHREAD_ONCE_INIT;
/* Each host thread keeps one Python thread state for its lifetime. Without it, every
   call's PyGILState_Ensure / Release (cffi's) would create and destroy a thread state,
   tens of microseconds per call from a Go or C thread. */
static pthread_key_t rt__tstate_key;
static __thread int rt__tstate_pinned;

uint32_t RT_PUBLIC(abi_version)(void)
{
    return RT_ABI_VERSION;
}

const char *RT_PUBLIC(build_info)(void)
{
    return RT_BUILD_INFO_JSON;
}

void RT_PUBLIC(free_buffer)(void *ptr)
{
    free(ptr);
}

static char *rt__strdup_n(const char *s, size_t n)
{
    char *out = (char *)malloc(n + 1);
    if (out == NULL)
        return NULL;
    if (n != 0)
        memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

static rt_status RT_PRIVATE(fail)(char **err_msg, rt_status status, const char *fmt, ...)
{
    if (err_msg != NULL) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        *err_msg = rt__strdup_n(buf, strlen(buf));
    }
    return status;
}

/* Called by the Python boundary: a caller-owned copy of a result buffer. A zero-length
   result still gets a (1-byte) allocation, so "no output" and "empty output" differ. */
void *RT_EXPORT(copy_out)(const void *data, size_t len)
{
    void *out = malloc(len == 0 ? 1 : len);
    if (out != NULL && len != 0)
        memcpy(out, data, len);
    return out;
}

/* Called by the Python boundary: a caller-owned, NUL-terminated error message. */
char *RT_EXPORT(message)(const char *utf8, size_t len)
{
    return rt__strdup_n(utf8, len);
}

/* Called by the init code when the engine could not be loaded. */
void RT_EXPORT(set_init_error)(const char *utf8, size_t len)
{
    size_t n = len < sizeof rt__init_error - 1 ? len : sizeof rt__init_error - 1;
    memcpy(rt__init_error, utf8, n);
    rt__init_error[n] = '\0';
}

static int rt__set_path(PyConfig *config, wchar_t **field, const wchar_t *value, const char *what)
{
    PyStatus st = PyConfig_SetString(config, field, value);
    if (PyStatus_Exception(st)) {
        snprintf(rt__start_error, sizeof rt__start_error, "setting %s: %s", what,
                 st.err_msg ? st.err_msg : "unknown error");
        return -1;
    }
    return 0;
}

/* Starts the interpreter the library was built for, unless the host already runs one
   (a Python host). Isolated: the host's PYTHONHOME / PYTHONPATH / venv / cwd change
   nothing, no signal handler is installed, and a failure is reported, never exit(). */
static void rt__mark_forked(void)
{
    rt__forked = 1;
}

/* The library's own file (realpath: an rpath such as a .pc file's ends in
   "pkgconfig/.."; as loaded when realpath fails), "" when dladdr cannot tell; found once. */
static char rt__self_path[PATH_MAX];
static pthread_once_t rt__self_once = PTHREAD_ONCE_INIT;

static void rt__find_self(void)
{
    Dl_info info;
    if (dladdr((void *)RT_PUBLIC(abi_version), &info) == 0 || info.dli_fname == NULL)
        return;
    if (realpath(info.dli_fname, rt__self_path) == NULL)
        snprintf(rt__self_path, sizeof rt__self_path, "%s", info.dli_fname);
}

/* Called by the init code (package layout): where this library is installed. */
const char *RT_EXPORT(library_path)(void)
{
    pthread_once(&rt__self_once, rt__find_self);
    return rt__self_path;
}

#ifdef RT_BUILD_RELOCATABLE
/* The interpreter of the environment the library is installed in: the library is
   <prefix>/lib/pythonX.Y/site-packages/<package>/lib/<soname>, so <prefix>/bin/pythonX.Y
   (or python3, python) - a venv's, whose pyvenv.cfg then names its base installation to
   CPython's own path calculation. Writes the path into out; -1 when there is none. */
static int rt__find_program(char *out, size_t size)
{
    static const char *const names[] = {"python" RT_BUILD_PY_MAJOR_MINOR, "python3", "python", NULL};
    char prefix[PATH_MAX];
    char *slash;
    int up, i;

    snprintf(prefix, sizeof prefix, "%s", RT_EXPORT(library_path)());
    for (up = 0; up < 6; up++) {
        slash = strrchr(prefix, '/');
        if (slash == NULL || slash == prefix)
            return -1;
        *slash = '\0';
    }
    for (i = 0; names[i] != NULL; i++) {
        if ((size_t)snprintf(out, size, "%s/bin/%s", prefix, names[i]) < size && access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}
#endif

/* The embedded interpreter allocates under the GIL, one thread at a time, but from
   whichever host thread calls (a Go host moves goroutines between threads): glibc
   gives each such thread its own malloc arena, and each arena keeps its own free
   memory, so the resident size grew by megabytes over the first hundreds of thousands
   of calls. One arena keeps it flat. Set only when this library starts the
   interpreter (a Go or C host: no interpreter when the library is loaded), at load,
   before the host's threads take arenas of their own, and not when the environment
   chose (MALLOC_ARENA_MAX, or GLIBC_TUNABLES naming arena_max). */
__attribute__((constructor)) static void rt__limit_malloc_arenas(void)
{
    if (Py_IsInitialized())
        return; /* a Python host loaded the library */
#if defined(__GLIBC__) && defined(M_ARENA_MAX)
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (getenv("MALLOC_ARENA_MAX") == NULL && (tunables == NULL || strstr(tunables, "arena_max") == NULL))
        mallopt(M_ARENA_MAX, 1);
#endif
}

static void rt__start_python(void)
{
#ifdef RT_BUILD_RELOCATABLE
    char program[PATH_MAX];
    wchar_t *found = NULL;
#else
    static const wchar_t *const search_path[] = RT_BUILD_SEARCH_PATH;
    size_t i;
#endif
    PyConfig config;
    PyStatus st;

    rt__pid = getpid();
    pthread_atfork(NULL, NULL, rt__mark_forked);
    if (Py_IsInitialized())
        return;
    rt__embedded = 1;
    sigaction(SIGINT, NULL, &rt__host_sigint);
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    config.write_bytecode = 0;
#ifdef RT_BUILD_RELOCATABLE
    /* The environment's interpreter, as `python -I` would start: CPython computes the
       stdlib from it (through a venv's pyvenv.cfg), and site adds the environment's
       site-packages with their .pth files. No interpreter beside the library (a --user
       install): the build's base interpreter, and the init code adds the library's
       site-packages. */
    if (rt__find_program(program, sizeof program) == 0)
        found = Py_DecodeLocale(program, NULL);
    config.site_import = 1;
    if (rt__set_path(&config, &config.program_name, found != NULL ? found : RT_BUILD_PROGRAM, "program_name") < 0) {
        PyMem_RawFree(found);
        goto done;
    }
    PyMem_RawFree(found);
    st = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(st)) {
        snprintf(rt__start_error, sizeof rt__start_error, "Python %s for %s: %s%s%s", RT_BUILD_PY_VERSION,
                 RT_EXPORT(library_path)(), st.func ? st.func : "", st.func ? ": " : "",
                 st.err_msg ? st.err_msg : "exit requested");
        goto done;
    }
#else
    config.site_import = 0;
    if (rt__set_path(&config, &config.program_name, RT_BUILD_PROGRAM, "program_name") < 0 ||
        rt__set_path(&config, &config.home, RT_BUILD_HOME, "home") < 0)
        goto done;
    config.module_search_paths_set = 1;
    for (i = 0; search_path[i] != NULL; i++) {
        st = PyWideStringList_Append(&config.module_search_paths, search_path[i]);
        if (PyStatus_Exception(st)) {
            snprintf(rt__start_error, sizeof rt__start_error, "module search path: %s",
                     st.err_msg ? st.err_msg : "unknown error");
            goto done;
        }
    }
    st = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(st)) {
        snprintf(rt__start_error, sizeof rt__start_error, "Python %s under %ls: %s%s%s",
                 RT_BUILD_PY_VERSION, RT_BUILD_HOME, st.func ? st.func : "",
                 st.func ? ": " : "", st.err_msg ? st.err_msg : "exit requested");
        goto done;
    }
#endif
    /* Release the GIL: every call takes it through cffi's PyGILState_Ensure. */
    PyEval_SaveThread();
done:
    PyConfig_Clear(&config);
}

static void rt__drop_tstate(void *tstate)
{
    /* The host thread is exiting: delete its thread state (unless Python is gone). */
    if (tstate == NULL || !Py_IsInitialized() || _Py_IsFinalizing())
        return;
    PyEval_RestoreThread((PyThreadState *)tstate);
    PyThreadState_Clear((PyThreadState *)tstate);
    PyThreadState_DeleteCurrent();
}

static void rt__restore_host_signals(void)
{
    if (rt__embedded) {
        sigaction(SIGINT, &rt__host_sigint, NULL);
        pthread_key_create(&rt__tstate_key, rt__drop_tstate);
    }
}

/* Gives the calling host thread its lasting thread state (embedded runtime only: a
   Python host's threads have theirs). */
static void rt__pin_tstate(void)
{
    PyThreadState *tstate;
    rt__tstate_pinned = 1;
    if (!rt__embedded)
        return;
    PyGILState_Ensure();
    tstate = PyEval_SaveThread();
    pthread_setspecific(rt__tstate_key, tstate);
}

/* Called by the boundary: whether signal handling belongs to a non-Python host. */
int RT_EXPORT(embedded)(void)
{
    return rt__embedded;
}

static rt_status RT_PRIVATE(runtime_ready)(char **err_msg)
{
    pthread_once(&rt__start_once, rt__start_python);
    if (rt__forked)
        return RT_PRIVATE(fail)(err_msg, RT_STATUS(ERR_RUNTIME_INIT),
                          RT_NAME " runtime unusable in process %ld: it was started in process %ld, which forked; "
                          "start " RT_NAME " after fork() (or exec) in the child",
                          (long)getpid(), (long)rt__pid);
    if (rt__start_error[0] != '\0')
        return RT_PRIVATE(fail)(err_msg, RT_STATUS(ERR_RUNTIME_INIT), RT_NAME " runtime start-up failed: %s", rt__start_error);
    if (cffi_start_python() != 0)
        return RT_PRIVATE(fail)(err_msg, RT_STATUS(ERR_RUNTIME_INIT),
                          RT_NAME " runtime start-up failed: the cffi embedding could not initialise (details on stderr)");
    pthread_once(&rt__restore_once, rt__restore_host_signals);
    if (rt__init_error[0] != '\0')
        return RT_PRIVATE(fail)(err_msg, RT_STATUS(ERR_RUNTIME_INIT), RT_NAME " runtime start-up failed: the engine did not load: %s",
                          rt__init_error);
    if (!rt__tstate_pinned)
        rt__pin_tstate();
    return RT_STATUS(OK);
}

/* Maps a Python implementation's return (1 = ok, negative = status) to a status. */
static rt_status RT_PRIVATE(status_of)(int rc, const char *fn, char **err_msg)
{
    if (rc == 1)
        return RT_STATUS(OK);
    if (rc < 0) {
        if (err_msg != NULL && *err_msg == NULL)
            return RT_PRIVATE(fail)(err_msg, (rt_status)rc, "%s failed with status %d", fn, rc);
        return (rt_status)rc;
    }
    return RT_PRIVATE(fail)(err_msg, RT_STATUS(ERR_INTERNAL), "%s: the Python implementation is missing (returned %d)", fn, rc);
}
