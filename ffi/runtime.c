/* Hand-written C of libcpex: the functions that must work without Python (ABI version,
   build info, free), the start-up of the embedded runtime, and the small helpers the
   generated shims and the Python boundary share. Pasted into cffi's set_source after
   cpex.h and the CPEX_BUILD_* macros that ffi/build_lib.py pins at build time
   (CPEX_BUILD_RELOCATABLE: the package layout, which finds its interpreter at start-up). */

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t cpex__start_once = PTHREAD_ONCE_INIT;
static char cpex__start_error[2048];
/* Written once by the init code (under cffi's start-up lock) when the engine failed to
   load; read by every later call. */
static char cpex__init_error[4096];
/* The process that started the runtime; a forked child must not use it: its Python
   may hold a lock (the GIL) owned by a thread that does not exist in the child. */
static pid_t cpex__pid;
static volatile sig_atomic_t cpex__forked;
/* 1 when this library started the interpreter (a Go / C host), 0 in a Python host. */
static int cpex__embedded;
/* The host's SIGINT disposition: CPython installs its own KeyboardInterrupt handler
   when the signal module is first imported (asyncio does) if SIGINT was SIG_DFL,
   which would take Ctrl-C away from a C host. It is put back once the engine loaded. */
static struct sigaction cpex__host_sigint;
static pthread_once_t cpex__restore_once = PTHREAD_ONCE_INIT;
/* Each host thread keeps one Python thread state for its lifetime. Without it, every
   call's PyGILState_Ensure / Release (cffi's) would create and destroy a thread state,
   tens of microseconds per call from a Go or C thread. */
static pthread_key_t cpex__tstate_key;
static __thread int cpex__tstate_pinned;

uint32_t cpex_abi_version(void)
{
    return CPEX_ABI_VERSION;
}

const char *cpex_build_info(void)
{
    return CPEX_BUILD_INFO_JSON;
}

void cpex_free_buffer(void *ptr)
{
    free(ptr);
}

static char *cpex__strdup_n(const char *s, size_t n)
{
    char *out = (char *)malloc(n + 1);
    if (out == NULL)
        return NULL;
    if (n != 0)
        memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

static cpex_status cpex__fail(char **err_msg, cpex_status status, const char *fmt, ...)
{
    if (err_msg != NULL) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        *err_msg = cpex__strdup_n(buf, strlen(buf));
    }
    return status;
}

/* Called by the Python boundary: a caller-owned copy of a result buffer. A zero-length
   result still gets a (1-byte) allocation, so "no output" and "empty output" differ. */
void *cpexrt_copy_out(const void *data, size_t len)
{
    void *out = malloc(len == 0 ? 1 : len);
    if (out != NULL && len != 0)
        memcpy(out, data, len);
    return out;
}

/* Called by the Python boundary: a caller-owned, NUL-terminated error message. */
char *cpexrt_message(const char *utf8, size_t len)
{
    return cpex__strdup_n(utf8, len);
}

/* Called by the init code when the engine could not be loaded. */
void cpexrt_set_init_error(const char *utf8, size_t len)
{
    size_t n = len < sizeof cpex__init_error - 1 ? len : sizeof cpex__init_error - 1;
    memcpy(cpex__init_error, utf8, n);
    cpex__init_error[n] = '\0';
}

static int cpex__set_path(PyConfig *config, wchar_t **field, const wchar_t *value, const char *what)
{
    PyStatus st = PyConfig_SetString(config, field, value);
    if (PyStatus_Exception(st)) {
        snprintf(cpex__start_error, sizeof cpex__start_error, "setting %s: %s", what,
                 st.err_msg ? st.err_msg : "unknown error");
        return -1;
    }
    return 0;
}

/* Starts the interpreter the library was built for, unless the host already runs one
   (a Python host). Isolated: the host's PYTHONHOME / PYTHONPATH / venv / cwd change
   nothing, no signal handler is installed, and a failure is reported, never exit(). */
static void cpex__mark_forked(void)
{
    cpex__forked = 1;
}

/* The library's own file (realpath: an rpath such as cpex.pc's ends in "pkgconfig/..";
   as loaded when realpath fails), "" when dladdr cannot tell; found once. */
static char cpex__self_path[PATH_MAX];
static pthread_once_t cpex__self_once = PTHREAD_ONCE_INIT;

static void cpex__find_self(void)
{
    Dl_info info;
    if (dladdr((void *)cpex_abi_version, &info) == 0 || info.dli_fname == NULL)
        return;
    if (realpath(info.dli_fname, cpex__self_path) == NULL)
        snprintf(cpex__self_path, sizeof cpex__self_path, "%s", info.dli_fname);
}

/* Called by the init code (package layout): where this library is installed. */
const char *cpexrt_library_path(void)
{
    pthread_once(&cpex__self_once, cpex__find_self);
    return cpex__self_path;
}

#ifdef CPEX_BUILD_RELOCATABLE
/* The interpreter of the environment the library is installed in: the library is
   <prefix>/lib/pythonX.Y/site-packages/cpexrt/lib/libcpex.so.1, so <prefix>/bin/pythonX.Y
   (or python3, python) - a venv's, whose pyvenv.cfg then names its base installation to
   CPython's own path calculation. Writes the path into out; -1 when there is none. */
static int cpex__find_program(char *out, size_t size)
{
    static const char *const names[] = {"python" CPEX_BUILD_PY_MAJOR_MINOR, "python3", "python", NULL};
    char prefix[PATH_MAX];
    char *slash;
    int up, i;

    snprintf(prefix, sizeof prefix, "%s", cpexrt_library_path());
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

static void cpex__start_python(void)
{
#ifdef CPEX_BUILD_RELOCATABLE
    char program[PATH_MAX];
    wchar_t *found = NULL;
#else
    static const wchar_t *const search_path[] = CPEX_BUILD_SEARCH_PATH;
    size_t i;
#endif
    PyConfig config;
    PyStatus st;

    cpex__pid = getpid();
    pthread_atfork(NULL, NULL, cpex__mark_forked);
    if (Py_IsInitialized())
        return;
    cpex__embedded = 1;
    sigaction(SIGINT, NULL, &cpex__host_sigint);
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    config.write_bytecode = 0;
#ifdef CPEX_BUILD_RELOCATABLE
    /* The environment's interpreter, as `python -I` would start: CPython computes the
       stdlib from it (through a venv's pyvenv.cfg), and site adds the environment's
       site-packages with their .pth files. No interpreter beside the library (a --user
       install): the build's base interpreter, and the init code adds the library's
       site-packages. */
    if (cpex__find_program(program, sizeof program) == 0)
        found = Py_DecodeLocale(program, NULL);
    config.site_import = 1;
    if (cpex__set_path(&config, &config.program_name, found != NULL ? found : CPEX_BUILD_PROGRAM, "program_name") < 0) {
        PyMem_RawFree(found);
        goto done;
    }
    PyMem_RawFree(found);
    st = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(st)) {
        snprintf(cpex__start_error, sizeof cpex__start_error, "Python %s for %s: %s%s%s", CPEX_BUILD_PY_VERSION,
                 cpexrt_library_path(), st.func ? st.func : "", st.func ? ": " : "",
                 st.err_msg ? st.err_msg : "exit requested");
        goto done;
    }
#else
    config.site_import = 0;
    if (cpex__set_path(&config, &config.program_name, CPEX_BUILD_PROGRAM, "program_name") < 0 ||
        cpex__set_path(&config, &config.home, CPEX_BUILD_HOME, "home") < 0)
        goto done;
    config.module_search_paths_set = 1;
    for (i = 0; search_path[i] != NULL; i++) {
        st = PyWideStringList_Append(&config.module_search_paths, search_path[i]);
        if (PyStatus_Exception(st)) {
            snprintf(cpex__start_error, sizeof cpex__start_error, "module search path: %s",
                     st.err_msg ? st.err_msg : "unknown error");
            goto done;
        }
    }
    st = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(st)) {
        snprintf(cpex__start_error, sizeof cpex__start_error, "Python %s under %ls: %s%s%s",
                 CPEX_BUILD_PY_VERSION, CPEX_BUILD_HOME, st.func ? st.func : "",
                 st.func ? ": " : "", st.err_msg ? st.err_msg : "exit requested");
        goto done;
    }
#endif
    /* Release the GIL: every call takes it through cffi's PyGILState_Ensure. */
    PyEval_SaveThread();
done:
    PyConfig_Clear(&config);
}

static void cpex__drop_tstate(void *tstate)
{
    /* The host thread is exiting: delete its thread state (unless Python is gone). */
    if (tstate == NULL || !Py_IsInitialized() || _Py_IsFinalizing())
        return;
    PyEval_RestoreThread((PyThreadState *)tstate);
    PyThreadState_Clear((PyThreadState *)tstate);
    PyThreadState_DeleteCurrent();
}

static void cpex__restore_host_signals(void)
{
    if (cpex__embedded) {
        sigaction(SIGINT, &cpex__host_sigint, NULL);
        pthread_key_create(&cpex__tstate_key, cpex__drop_tstate);
    }
}

/* Gives the calling host thread its lasting thread state (embedded runtime only: a
   Python host's threads have theirs). */
static void cpex__pin_tstate(void)
{
    PyThreadState *tstate;
    cpex__tstate_pinned = 1;
    if (!cpex__embedded)
        return;
    PyGILState_Ensure();
    tstate = PyEval_SaveThread();
    pthread_setspecific(cpex__tstate_key, tstate);
}

/* Called by the boundary: whether signal handling belongs to a non-Python host. */
int cpexrt_embedded(void)
{
    return cpex__embedded;
}

static cpex_status cpex__runtime_ready(char **err_msg)
{
    pthread_once(&cpex__start_once, cpex__start_python);
    if (cpex__forked)
        return cpex__fail(err_msg, CPEX_ERR_RUNTIME_INIT,
                          "cpex runtime unusable in process %ld: it was started in process %ld, which forked; "
                          "start cpex after fork() (or exec) in the child",
                          (long)getpid(), (long)cpex__pid);
    if (cpex__start_error[0] != '\0')
        return cpex__fail(err_msg, CPEX_ERR_RUNTIME_INIT, "cpex runtime start-up failed: %s", cpex__start_error);
    if (cffi_start_python() != 0)
        return cpex__fail(err_msg, CPEX_ERR_RUNTIME_INIT,
                          "cpex runtime start-up failed: the cffi embedding could not initialise (details on stderr)");
    pthread_once(&cpex__restore_once, cpex__restore_host_signals);
    if (cpex__init_error[0] != '\0')
        return cpex__fail(err_msg, CPEX_ERR_RUNTIME_INIT, "cpex runtime start-up failed: the engine did not load: %s",
                          cpex__init_error);
    if (!cpex__tstate_pinned)
        cpex__pin_tstate();
    return CPEX_OK;
}

/* Maps a Python implementation's return (1 = ok, negative = status) to a status. */
static cpex_status cpex__status_of(int rc, const char *fn, char **err_msg)
{
    if (rc == 1)
        return CPEX_OK;
    if (rc < 0) {
        if (err_msg != NULL && *err_msg == NULL)
            return cpex__fail(err_msg, (cpex_status)rc, "%s failed with status %d", fn, rc);
        return (cpex_status)rc;
    }
    return cpex__fail(err_msg, CPEX_ERR_INTERNAL, "%s: the Python implementation is missing (returned %d)", fn, rc);
}
