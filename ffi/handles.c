/* The live context and background handles, kept in C (abi.yaml: their handles are
   `tracked`), so that freeing one never enters Python. Pasted into the cffi source
   after ffi/fastpath.c; the generated shims (codegen/templates/shims.c.j2) call:

   - cpex__handles_check: before Python is entered with a context or background
     handle: a handle not in the set is refused here, with the message Python's table
     gives (sdk-python/cpexrt/_boundary/handles.py, HandleTable._why; a test compares
     the two);
   - cpex__handles_reserve / cpex__handles_settle: around an invoke: room for the
     handles it may return is made before Python is entered (a failure to grow the set
     fails the call before anything is issued); when the call succeeds, the handles it
     returned join the set and the context it consumed leaves it;
   - cpex__handles_release: cpex_free_context / cpex_free_background: the handle
     leaves the set (it is dead from then on, to every thread) and its token is queued
     for Python, whose table drops the object at its next drain (the next invoke's,
     and Exports.drain_freed: when the queue is full, in cpex_live_handles). A full
     queue declines: the free then enters Python, which drains and frees there.

   Tokens are TAG << 48 | kind << 40 | serial (handles.py), never 0 or 1: those mark
   empty and removed slots. The set is an open-addressing hash table under one mutex,
   at most half full. */

#include <inttypes.h>

#define CPEX__HANDLE_TAG ((uintptr_t)0x4350)
#define CPEX__HANDLE_SERIAL_BITS 40
#define CPEX__LIVE_EMPTY ((uintptr_t)0)
#define CPEX__LIVE_GONE ((uintptr_t)1)
#define CPEX__FREED_MAX 256

static pthread_mutex_t cpex__live_lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t *cpex__live;     /* cpex__live_cap slots, a power of two (or none) */
static size_t cpex__live_cap;
static size_t cpex__live_n;       /* live tokens */
static size_t cpex__live_used;    /* live tokens and removed slots */
static size_t cpex__live_reserved;
static uintptr_t cpex__freed[CPEX__FREED_MAX];
/* Written under the mutex, atomically: ffi/natives.c's drain reads it without the
   mutex to skip an empty queue. */
static size_t cpex__freed_n;

/* Handle kinds in abi.yaml's order (handles.py's Kind), for the messages. */
static const char *const cpex__handle_names[] = {NULL, "manager", "context", "background"};

static size_t cpex__live_home(uintptr_t token, size_t cap)
{
    return (size_t)(((uint64_t)token * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

/* The slot of token, or cpex__live_cap when it is not in the set (lock held). */
static size_t cpex__live_find(uintptr_t token)
{
    size_t i, mask = cpex__live_cap - 1;
    if (cpex__live_cap == 0)
        return 0;
    for (i = cpex__live_home(token, cpex__live_cap);; i = (i + 1) & mask) {
        if (cpex__live[i] == token)
            return i;
        if (cpex__live[i] == CPEX__LIVE_EMPTY)
            return cpex__live_cap;
    }
}

/* Adds token, whose room was reserved (lock held). */
static void cpex__live_insert(uintptr_t token)
{
    size_t i, mask = cpex__live_cap - 1;
    for (i = cpex__live_home(token, cpex__live_cap); cpex__live[i] > CPEX__LIVE_GONE; i = (i + 1) & mask)
        ;
    if (cpex__live[i] == CPEX__LIVE_EMPTY)
        cpex__live_used++;
    cpex__live[i] = token;
    cpex__live_n++;
}

/* The boundary's message for a token of the wrong kind, or one not in the set. */
static cpex_status cpex__handles_refuse(int kind, uintptr_t token, const char *what, char **err_msg)
{
    unsigned actual = (unsigned)((token >> CPEX__HANDLE_SERIAL_BITS) & 0xFF);
    if (token >> 48 != CPEX__HANDLE_TAG)
        return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE, "%s: %#" PRIxPTR " is not a cpex handle", what, token);
    if (actual != (unsigned)kind) {
        if (actual >= 1 && actual <= 3)
            return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE, "%s: expected a %s handle, got a %s handle", what,
                              cpex__handle_names[kind], cpex__handle_names[actual]);
        return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE, "%s: expected a %s handle, got a kind %u handle", what,
                          cpex__handle_names[kind], actual);
    }
    return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE, "%s: the %s handle %#" PRIxPTR " was freed, consumed or shut down",
                      what, cpex__handle_names[kind], token);
}

static int cpex__handles_typed(int kind, uintptr_t token)
{
    return token >> 48 == CPEX__HANDLE_TAG && ((token >> CPEX__HANDLE_SERIAL_BITS) & 0xFF) == (uintptr_t)kind;
}

static cpex_status cpex__handles_check(int kind, uintptr_t token, const char *what, char **err_msg)
{
    int live;
    if (cpex__is_remote_token((const void *)token))
        return CPEX_OK; /* issued and checked by ffi/remote.c */
    if (!cpex__handles_typed(kind, token))
        return cpex__handles_refuse(kind, token, what, err_msg);
    pthread_mutex_lock(&cpex__live_lock);
    live = cpex__live_find(token) < cpex__live_cap;
    pthread_mutex_unlock(&cpex__live_lock);
    return live ? CPEX_OK : cpex__handles_refuse(kind, token, what, err_msg);
}

static cpex_status cpex__handles_release(int kind, uintptr_t token, const char *what, char **err_msg)
{
    size_t i;
    int queued;
    if (cpex__is_remote_token((const void *)token))
        return CPEX__DECLINED; /* ffi/remote.c frees it */
    if (!cpex__handles_typed(kind, token))
        return cpex__handles_refuse(kind, token, what, err_msg);
    pthread_mutex_lock(&cpex__live_lock);
    i = cpex__live_find(token);
    if (i == cpex__live_cap) {
        pthread_mutex_unlock(&cpex__live_lock);
        return cpex__handles_refuse(kind, token, what, err_msg);
    }
    cpex__live[i] = CPEX__LIVE_GONE;
    cpex__live_n--;
    queued = cpex__freed_n < CPEX__FREED_MAX;
    if (queued) {
        cpex__freed[cpex__freed_n] = token;
        __atomic_store_n(&cpex__freed_n, cpex__freed_n + 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&cpex__live_lock);
    /* Not queued: dead here already; Python takes it from its table. */
    return queued ? CPEX_OK : CPEX__DECLINED;
}

static cpex_status cpex__handles_reserve(size_t n, const char *fn, char **err_msg)
{
    pthread_mutex_lock(&cpex__live_lock);
    if ((cpex__live_used + cpex__live_reserved + n) * 2 > cpex__live_cap) {
        size_t cap = 64, i, want = (cpex__live_n + cpex__live_reserved + n) * 4;
        uintptr_t *old = cpex__live, *grown;
        size_t old_cap = cpex__live_cap;
        while (cap < want)
            cap <<= 1;
        grown = (uintptr_t *)calloc(cap, sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&cpex__live_lock);
            return cpex__fail(err_msg, CPEX_ERR_INTERNAL, "%s: out of memory for the set of live handles", fn);
        }
        cpex__live = grown;
        cpex__live_cap = cap;
        cpex__live_n = cpex__live_used = 0;
        for (i = 0; i < old_cap; i++)
            if (old[i] > CPEX__LIVE_GONE)
                cpex__live_insert(old[i]);
        free(old);
    }
    cpex__live_reserved += n;
    pthread_mutex_unlock(&cpex__live_lock);
    return CPEX_OK;
}

/* After the Python call of an invoke: its n reserved slots are given back; when it
   succeeded, spent (its context, or 0) leaves the set and the issued tokens that are
   not 0 join it. */
static void cpex__handles_settle(int ok, uintptr_t spent, const uintptr_t *issued, size_t n)
{
    size_t i;
    pthread_mutex_lock(&cpex__live_lock);
    cpex__live_reserved -= n;
    if (ok) {
        if (spent != 0 && (i = cpex__live_find(spent)) < cpex__live_cap) {
            cpex__live[i] = CPEX__LIVE_GONE;
            cpex__live_n--;
        }
        for (i = 0; i < n; i++)
            if (issued[i] != 0)
                cpex__live_insert(issued[i]);
    }
    pthread_mutex_unlock(&cpex__live_lock);
}

/* Called by the boundary: moves up to cap freed tokens into out; returns how many. */
size_t cpexrt_handles_drain(uintptr_t *out, size_t cap)
{
    size_t n;
    pthread_mutex_lock(&cpex__live_lock);
    n = cpex__freed_n < cap ? cpex__freed_n : cap;
    __atomic_store_n(&cpex__freed_n, cpex__freed_n - n, __ATOMIC_RELAXED);
    memcpy(out, cpex__freed + cpex__freed_n, n * sizeof *out);
    pthread_mutex_unlock(&cpex__live_lock);
    return n;
}

/* Called by the boundary when a manager shuts down: its handles leave the set. */
void cpexrt_handles_forget(const uintptr_t *tokens, size_t n)
{
    size_t i, at;
    pthread_mutex_lock(&cpex__live_lock);
    for (i = 0; i < n; i++)
        if ((at = cpex__live_find(tokens[i])) < cpex__live_cap) {
            cpex__live[at] = CPEX__LIVE_GONE;
            cpex__live_n--;
        }
    pthread_mutex_unlock(&cpex__live_lock);
}

/* The number of handles in the set (the tests compare it with Python's table). */
size_t cpexrt_handles_live(void)
{
    size_t n;
    pthread_mutex_lock(&cpex__live_lock);
    n = cpex__live_n;
    pthread_mutex_unlock(&cpex__live_lock);
    return n;
}
