/* Engine workers (plugin_settings.engine_workers; docs/architecture.md, "The engine in
   worker processes"). A manager whose config asks for N engine workers runs its engine
   in N processes (sdk-python/cpexrt/_boundary/engine_worker.py), started and watched by
   the Python boundary (cpexrt/_boundary/remote.py). Its invokes, background waits and
   handle frees never enter the host's Python: the functions below frame the call, hand
   it to an idle worker over its socket, wait for the answer and return it, so host
   threads calling at once run in parallel, one worker each.

   - A context or background handle of such a manager is issued here: a token tagged
     CPEX__RTAG (not the boundary's "CP"), kind and serial as in
     cpexrt/_boundary/handles.py, kept in a table that maps it to its worker, that
     worker's generation (a new process is a new generation) and the worker's own id
     for it. A freed token stays invalid; its id is sent to the worker with the next
     call it serves (frees cost no round trip).
   - A request's invokes go to the worker that holds its context table; a call without
     a context takes an idle worker, else the least busy one (up to CPEX__DEPTH calls
     per worker, answered in order), or waits for one.
   - A call waits for its answer until plugin_settings.invoke_timeout (a call's
     timeout_ms is only ever shorter: the worker enforces both) plus CPEX__GRACE: then the worker is killed and the call
     fails with CPEX_ERR_TIMEOUT. A worker that dies during a call fails that call
     (CPEX_ERR_INTERNAL, never an allow). Either way the boundary is told (death_fd),
     reaps the process and starts another.
   - Frames are native-endian (both ends run on this machine); see engine_worker.py.

   Pasted into the cffi source after ffi/fastpath.c. */

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>

#define CPEX__RTAG ((uint64_t)0x4352) /* "CR" */
#define CPEX__SERIAL_BITS 40
#define CPEX__KIND_CONTEXT 2
#define CPEX__KIND_BACKGROUND 3
#define CPEX__FREE_BACKGROUND ((uint64_t)1 << 63)

#define CPEX__OP_INVOKE 1
#define CPEX__OP_WAIT 2
#define CPEX__OP_CONTROL 3

#define CPEX__REQ_HEAD 40  /* u32 len, u8 op, u8 payload_type, u8 flags, u8 0, u64 id, 6 x u32 */
#define CPEX__REPLY_HEAD 28 /* u32 len, i32 status, u64 context id, u64 background id, u32 data len */
#define CPEX__GRACE 0.25   /* seconds past the call's own limit before its worker is killed */
#define CPEX__MAX_FRAME ((size_t)0xFFFFFFFFu)

/* Calls one worker holds at once: the one it is serving and the next, already in its
   socket, so a busy worker goes on to the next call without waiting for the host to
   read the answer and send another (no sleep and wake-up of the worker between calls).
   Answers come back in the order of the frames, read by each call in turn. */
#define CPEX__DEPTH 2

typedef struct {
    int fd;   /* -1: no process (not started yet, or closed after it was lost) */
    pid_t pid;
    int lost;      /* it died or was killed: its socket is shut down (waking every call on it)
                      and closed when the last call holding it leaves */
    int inflight;  /* calls holding it: sent, or about to be */
    int alone;     /* the call holding it holds it alone (a control call, a background wait) */
    int want_alone; /* such calls waiting for it: no call queues on it meanwhile */
    uint32_t generation;
    uint64_t sent, served; /* frames sent, answers read: a call reads when served is its ticket */
    uint64_t *frees; /* ids freed by the host, sent with the worker's next call */
    size_t nfrees, cap;
    pthread_mutex_t send_mu; /* one frame at a time on the socket, in ticket order */
    pthread_cond_t cond; /* calls waiting for this worker: a place on it, or their turn to read */
} cpex__worker;

#define CPEX__UP(w) ((w)->fd >= 0 && !(w)->lost)

typedef struct {
    uintptr_t token;
    int n;
    cpex__worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cond; /* calls waiting for any idle worker, and drains */
    int draining;        /* shutdown or a detach waits for calls in flight */
    int death_fd;  /* the boundary's pipe: a worker's index is written when it died */
    int closed;    /* shut down: no new call is taken */
    size_t max_entries, max_payload, max_extensions;
    double timeout; /* seconds an invoke may run (plugin_settings.invoke_timeout) */
} cpex__remote;

/* Managers running engine workers. A cpex__remote is never freed (a manager shut down
   is only marked closed), so a pointer read under the lock stays valid after it. */
static pthread_rwlock_t cpex__remotes_lock = PTHREAD_RWLOCK_INITIALIZER;
static cpex__remote **cpex__remotes;
static size_t cpex__remotes_n;

static cpex__remote *cpex__find_remote(uintptr_t token)
{
    cpex__remote *found = NULL;
    size_t i;
    pthread_rwlock_rdlock(&cpex__remotes_lock);
    for (i = 0; i < cpex__remotes_n; i++)
        if (cpex__remotes[i]->token == token) {
            found = cpex__remotes[i];
            break;
        }
    pthread_rwlock_unlock(&cpex__remotes_lock);
    return found;
}

/* -- the handles issued here -------------------------------------------------------- */

typedef struct cpex__rhandle {
    uint64_t token;
    cpex__remote *remote;
    int worker;
    uint32_t generation;
    uint64_t id;
    struct cpex__rhandle *next;
} cpex__rhandle;

#define CPEX__BUCKETS 4096
static pthread_mutex_t cpex__rtable_lock = PTHREAD_MUTEX_INITIALIZER;
static cpex__rhandle *cpex__rtable[CPEX__BUCKETS];
static uint64_t cpex__rserial;
static size_t cpex__rlive[4];

static uint64_t cpex__issue(int kind, cpex__remote *r, int worker, uint32_t generation, uint64_t id)
{
    cpex__rhandle *h = (cpex__rhandle *)malloc(sizeof *h);
    if (h == NULL)
        return 0;
    h->remote = r;
    h->worker = worker;
    h->generation = generation;
    h->id = id;
    pthread_mutex_lock(&cpex__rtable_lock);
    h->token = CPEX__RTAG << 48 | (uint64_t)kind << CPEX__SERIAL_BITS | ++cpex__rserial;
    h->next = cpex__rtable[h->token % CPEX__BUCKETS];
    cpex__rtable[h->token % CPEX__BUCKETS] = h;
    cpex__rlive[kind]++;
    pthread_mutex_unlock(&cpex__rtable_lock);
    return h->token;
}

/* Finds (take: and removes) the handle; 0 and an explanation in why if there is none. */
static int cpex__lookup(uint64_t token, int kind, int take, cpex__rhandle *out, char *why, size_t why_size)
{
    cpex__rhandle **link, *h;
    const char *name = kind == CPEX__KIND_CONTEXT ? "context" : "background";
    int actual = (int)((token >> CPEX__SERIAL_BITS) & 0xFF);
    if (actual != kind) {
        snprintf(why, why_size, "expected a %s handle, got a %s handle", name,
                 actual == CPEX__KIND_CONTEXT ? "context" : actual == CPEX__KIND_BACKGROUND ? "background" : "manager");
        return 0;
    }
    pthread_mutex_lock(&cpex__rtable_lock);
    for (link = &cpex__rtable[token % CPEX__BUCKETS]; (h = *link) != NULL; link = &h->next)
        if (h->token == token)
            break;
    if (h == NULL) {
        pthread_mutex_unlock(&cpex__rtable_lock);
        snprintf(why, why_size, "the %s handle %#llx was freed, consumed or shut down", name, (unsigned long long)token);
        return 0;
    }
    *out = *h;
    if (take) {
        *link = h->next;
        cpex__rlive[kind]--;
        free(h);
    }
    pthread_mutex_unlock(&cpex__rtable_lock);
    return 1;
}

static void cpex__drop_handles_of(cpex__remote *r)
{
    size_t b;
    pthread_mutex_lock(&cpex__rtable_lock);
    for (b = 0; b < CPEX__BUCKETS; b++) {
        cpex__rhandle **link = &cpex__rtable[b], *h;
        while ((h = *link) != NULL) {
            if (h->remote == r) {
                *link = h->next;
                cpex__rlive[(h->token >> CPEX__SERIAL_BITS) & 3]--;
                free(h);
            } else
                link = &h->next;
        }
    }
    pthread_mutex_unlock(&cpex__rtable_lock);
}

/* The live handles issued here, added to the boundary's own count (cpex_live_handles). */
void cpexrt_remote_counts(size_t *contexts, size_t *backgrounds)
{
    pthread_mutex_lock(&cpex__rtable_lock);
    *contexts = cpex__rlive[CPEX__KIND_CONTEXT];
    *backgrounds = cpex__rlive[CPEX__KIND_BACKGROUND];
    pthread_mutex_unlock(&cpex__rtable_lock);
}

/* -- workers ------------------------------------------------------------------------- */

static double cpex__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* How a call holds a worker: shared (an invoke: it may be queued behind another on
   the same worker, up to CPEX__DEPTH), or alone (a background wait, which may block,
   and the boundary's control calls, which also skip the generation and closed checks). */
#define CPEX__SHARED 0
#define CPEX__ALONE 1
#define CPEX__CONTROL 2

/* Takes a worker for a call: want < 0 the best one (an idle one, else the one with the
   fewest calls when none is idle), else that one, if it is still the process of that
   generation. Returns its index (its generation in *taken), or -1 with why set. The
   frees queued for it go with the call (*frees, *nfrees: the caller frees the array). */
static int cpex__acquire(cpex__remote *r, int want, uint32_t generation, int mode, uint32_t *taken,
                         uint64_t **frees, size_t *nfrees, const char **why)
{
    int k, found = -1, counted = 0;
    int control = mode == CPEX__CONTROL;
    cpex__worker *w;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        int alive = 0;
        if (r->closed && !control) {
            *why = "the manager was shut down";
            break;
        }
        if (want >= 0) {
            w = &r->workers[want];
            if (!CPEX__UP(w) || (!control && w->generation != generation)) {
                *why = control ? "its engine worker is not running"
                               : "the engine worker that held it stopped (its request state went with it)";
                break;
            }
            if (mode == CPEX__SHARED ? !w->alone && !w->want_alone && w->inflight < CPEX__DEPTH : w->inflight == 0) {
                found = want;
                break;
            }
            if (mode != CPEX__SHARED && !counted) {
                counted = 1;
                w->want_alone++;
            }
        } else {
            /* The lowest idle one: under a light load the same worker serves call after
               call, warm (its caches, its CPU), while the others sleep; a rotation
               would wake each in turn after a longer sleep, cold. */
            for (k = 0; k < r->n; k++) {
                w = &r->workers[k];
                if (!CPEX__UP(w))
                    continue;
                alive = 1;
                if (w->inflight == 0) {
                    found = k;
                    break;
                }
                if (!w->alone && !w->want_alone && w->inflight < CPEX__DEPTH &&
                    (found < 0 || w->inflight < r->workers[found].inflight))
                    found = k;
            }
            if (found >= 0)
                break;
            if (!alive) {
                *why = "no engine worker is running (they are being restarted)";
                break;
            }
        }
        /* One waiter per released place wakes (no herd of all of them). */
        pthread_cond_wait(want >= 0 ? &r->workers[want].cond : &r->cond, &r->mu);
    }
    if (counted)
        r->workers[want].want_alone--;
    if (found >= 0) {
        w = &r->workers[found];
        w->inflight++;
        w->alone = mode != CPEX__SHARED;
        *taken = w->generation;
        *frees = w->frees;
        *nfrees = w->nfrees;
        w->frees = NULL;
        w->nfrees = w->cap = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return found;
}

/* The call leaves the worker it took; a lost worker's socket is closed by the last.
   answered: its round trip read its answer (cpex__round_trip returned 0), so the next
   call on the worker may read its own (served, counted here: one lock for both). */
static void cpex__release(cpex__remote *r, int index, int answered)
{
    cpex__worker *w = &r->workers[index];
    pthread_mutex_lock(&r->mu);
    if (answered)
        w->served++;
    w->inflight--;
    if (w->inflight == 0) {
        w->alone = 0;
        if (w->lost && w->fd >= 0) {
            close(w->fd);
            w->fd = -1;
        }
    }
    pthread_cond_broadcast(&w->cond);
    if (r->draining)
        pthread_cond_broadcast(&r->cond);
    else
        pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

/* Everyone waiting re-checks (a worker died or came, the manager closed). */
static void cpex__wake_all(cpex__remote *r)
{
    int k;
    pthread_cond_broadcast(&r->cond);
    for (k = 0; k < r->n; k++)
        pthread_cond_broadcast(&r->workers[k].cond);
}

/* The worker a call holds failed it: killed (kill_it: after a timeout), its socket shut
   down (every call on it wakes and fails; the last one closes it), the boundary told.
   Its contexts are gone with it. */
static void cpex__lose(cpex__remote *r, int index, int kill_it)
{
    cpex__worker *w = &r->workers[index];
    int32_t which = index;
    pthread_mutex_lock(&r->mu);
    if (CPEX__UP(w)) {
        if (kill_it && w->pid > 0)
            kill(w->pid, SIGKILL);
        shutdown(w->fd, SHUT_RDWR);
        w->lost = 1;
        free(w->frees);
        w->frees = NULL;
        w->nfrees = w->cap = 0;
        cpex__wake_all(r);
        if (r->death_fd >= 0 && write(r->death_fd, &which, sizeof which) < 0) {
            /* the boundary stopped listening: nothing to restart */
        }
    }
    pthread_mutex_unlock(&r->mu);
}

static int cpex__send(int fd, struct iovec *iov, int count)
{
    struct msghdr msg;
    while (count > 0) {
        ssize_t sent;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)count;
        sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        while (count > 0 && (size_t)sent >= iov->iov_len) {
            sent -= (ssize_t)iov->iov_len;
            iov++;
            count--;
        }
        if (count > 0) {
            iov->iov_base = (char *)iov->iov_base + sent;
            iov->iov_len -= (size_t)sent;
        }
    }
    return 0;
}

/* 0: read; -1: end of file or an error; -2: the deadline passed (deadline 0: none;
   CPEX__TIMED: the socket's own receive timeout, set to the call limit at attach, one
   system call instead of poll and recv). */
#define CPEX__TIMED (-1.0)
static int cpex__recv(int fd, uint8_t *buf, size_t n, double deadline)
{
    while (n > 0) {
        ssize_t got;
        if (deadline == CPEX__TIMED) {
            got = recv(fd, buf, n, MSG_WAITALL);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return -2;
            if (got <= 0)
                return -1;
            buf += got;
            n -= (size_t)got;
            continue;
        }
        if (deadline > 0) {
            struct pollfd p;
            double left = deadline - cpex__now();
            int rc;
            if (left <= 0)
                return -2;
            p.fd = fd;
            p.events = POLLIN;
            p.revents = 0;
            rc = poll(&p, 1, (int)(left * 1000) + 1);
            if (rc < 0 && errno == EINTR)
                continue;
            if (rc < 0)
                return -1;
            if (rc == 0)
                continue; /* re-checks the deadline */
        }
        got = recv(fd, buf, n, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue; /* the socket's receive timeout is for CPEX__TIMED reads; this one has its own */
        if (got <= 0)
            return -1;
        buf += got;
        n -= (size_t)got;
    }
    return 0;
}

static void cpex__put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void cpex__put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

typedef struct {
    int32_t status;
    uint64_t context_id, background_id;
    uint8_t *data; /* malloc'd, NUL-terminated past len */
    size_t len;
} cpex__reply;

/* One round trip with worker index, taken by the caller at generation. 0 (then the
   caller's cpex__release(..., 1) counts the answer read); -1: the worker died during
   the call; -2: it did not answer in time and was killed; -3: it was lost before this
   call's turn (the call never ran, or waited behind another call that ended the
   worker). The worker is lost after any of them. */
static int cpex__round_trip(cpex__remote *r, int index, uint32_t generation, struct iovec *iov, int count,
                            double deadline, cpex__reply *reply)
{
    cpex__worker *w = &r->workers[index];
    uint8_t head[CPEX__REPLY_HEAD];
    uint32_t len, data_len;
    uint64_t ticket;
    int fd, rc, up, head_of_line;
    pthread_mutex_lock(&w->send_mu);
    pthread_mutex_lock(&r->mu);
    up = CPEX__UP(w) && w->generation == generation;
    ticket = up ? w->sent++ : 0;
    /* No call before this one still to read its answer: its turn needs no wait (served
       only grows, and only up to this ticket until this call's release). */
    head_of_line = up && w->served == ticket;
    fd = w->fd;
    pthread_mutex_unlock(&r->mu);
    rc = up ? cpex__send(fd, iov, count) : 0;
    pthread_mutex_unlock(&w->send_mu);
    if (!up)
        return -3;
    if (rc != 0) {
        cpex__lose(r, index, 0);
        return -1;
    }
    /* Answers come in the order of the frames: wait for the calls sent before this one. */
    if (!head_of_line) {
        pthread_mutex_lock(&r->mu);
        while (CPEX__UP(w) && w->served != ticket)
            pthread_cond_wait(&w->cond, &r->mu);
        up = CPEX__UP(w);
        pthread_mutex_unlock(&r->mu);
        if (!up)
            return -3;
    }
    rc = cpex__recv(fd, head, sizeof head, deadline);
    if (rc == 0) {
        memcpy(&len, head, 4);
        memcpy(&reply->status, head + 4, 4);
        memcpy(&reply->context_id, head + 8, 8);
        memcpy(&reply->background_id, head + 16, 8);
        memcpy(&data_len, head + 24, 4);
        if (len != CPEX__REPLY_HEAD - 4 + (size_t)data_len)
            rc = -1; /* not the protocol: the worker is no longer trusted */
    }
    if (rc == 0) {
        reply->data = (uint8_t *)malloc((size_t)data_len + 1);
        if (reply->data == NULL)
            rc = -1;
        else {
            rc = cpex__recv(fd, reply->data, data_len, deadline);
            reply->data[data_len] = 0;
            reply->len = data_len;
            if (rc != 0) {
                free(reply->data);
                reply->data = NULL;
            }
        }
    }
    if (rc != 0) {
        cpex__lose(r, index, 1);
        return rc;
    }
    return 0;
}

static cpex_status cpex__fail_lost(char **err_msg, const char *fn, cpex__remote *r, int index, int rc)
{
    double timeout;
    int pid;
    pthread_mutex_lock(&r->mu); /* both set by a reload or a restart meanwhile */
    timeout = r->timeout;
    pid = (int)r->workers[index].pid;
    pthread_mutex_unlock(&r->mu);
    if (rc == -3)
        return cpex__fail(err_msg, CPEX_ERR_INTERNAL,
                          "%s: the engine worker (pid %d) stopped before this call ran (it was serving another "
                          "call, which ended it); the call failed (nothing was allowed) and the worker is being "
                          "replaced",
                          fn, pid);
    if (rc == -2)
        return cpex__fail(err_msg, CPEX_ERR_TIMEOUT,
                          "%s: the engine worker (pid %d) did not answer within the call's time limit (%.3f s); it "
                          "was killed and is being replaced",
                          fn, pid, timeout);
    return cpex__fail(err_msg, CPEX_ERR_INTERNAL,
                      "%s: the engine worker (pid %d) stopped during the call; the call failed (nothing was "
                      "allowed) and the worker is being replaced",
                      fn, pid);
}

/* A worker's error: its status and message, prefixed with the function's name. */
static cpex_status cpex__worker_error(char **err_msg, const char *fn, cpex__reply *reply)
{
    cpex_status status = reply->status < 0 ? (cpex_status)reply->status : CPEX_ERR_INTERNAL;
    if (err_msg != NULL) {
        size_t n = strlen(fn);
        char *msg = (char *)malloc(n + 2 + reply->len + 1);
        if (msg != NULL) {
            memcpy(msg, fn, n);
            memcpy(msg + n, ": ", 2);
            memcpy(msg + n + 2, reply->data, reply->len);
            msg[n + 2 + reply->len] = 0;
        }
        *err_msg = msg;
    }
    free(reply->data);
    return status;
}

static int cpex__is_remote_token(const void *handle)
{
    return ((uint64_t)(uintptr_t)handle >> 48) == CPEX__RTAG;
}

/* An input over its limit: the boundary's words (exports._check_size). */
static cpex_status cpex__over(char **err_msg, const char *fn, const char *what, size_t len, size_t limit,
                              const char *setting)
{
    return cpex__fail(err_msg, CPEX_ERR_INVALID_INPUT,
                      "%s: %s: %zu bytes, over the limit of %zu (plugin_settings.%s); refused before decoding", fn,
                      what, len, limit, setting);
}

static cpex_status cpex__remote_call(const char *fn, cpex_manager *manager, const char *hook, size_t hook_len,
                                     uint8_t payload_type, const uint8_t *payload, size_t payload_len,
                                     const uint8_t *extensions, size_t extensions_len, const uint8_t *request,
                                     size_t request_len, const uint8_t *options, size_t options_len,
                                     cpex_context *context, uint8_t **out_result, size_t *out_result_len,
                                     cpex_context **out_context, cpex_background **out_background, char **err_msg)
{
    cpex__remote *r = cpex__find_remote((uintptr_t)manager);
    cpex__rhandle ctx;
    uint8_t head[CPEX__REQ_HEAD];
    struct iovec iov[7];
    uint64_t *frees = NULL;
    size_t nfrees = 0, total, max_payload, max_extensions, max_entries;
    const char *why = NULL;
    char reason[160];
    int index, rc, want = -1, flags = 0;
    uint32_t generation = 0;
    cpex__reply reply;
    if (r == NULL) {
        if (context != NULL && cpex__is_remote_token(context))
            return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE,
                              "%s: the context handle %#llx belongs to a manager running engine workers, not to this one",
                              fn, (unsigned long long)(uintptr_t)context);
        return CPEX__DECLINED;
    }
    if (context != NULL) {
        if (!cpex__is_remote_token(context))
            return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE,
                              "%s: the context handle %#llx was not issued by this manager's engine workers", fn,
                              (unsigned long long)(uintptr_t)context);
        if (!cpex__lookup((uint64_t)(uintptr_t)context, CPEX__KIND_CONTEXT, 0, &ctx, reason, sizeof reason))
            return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE, "%s: %s", fn, reason);
        if (ctx.remote != r)
            return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE, "%s: the context handle %#llx belongs to another manager",
                              fn, (unsigned long long)(uintptr_t)context);
        want = ctx.worker;
        generation = ctx.generation;
    }
    /* The limits the boundary checks before decoding, here before anything is sent (read
       once: a reload may set them meanwhile, cpexrt_remote_limits). */
    max_payload = __atomic_load_n(&r->max_payload, __ATOMIC_RELAXED);
    max_extensions = __atomic_load_n(&r->max_extensions, __ATOMIC_RELAXED);
    max_entries = __atomic_load_n(&r->max_entries, __ATOMIC_RELAXED);
    if (payload_len > max_payload)
        return cpex__over(err_msg, fn, "payload", payload_len, max_payload, "max_payload_bytes");
    if (extensions_len > max_extensions)
        return cpex__over(err_msg, fn, "extensions", extensions_len, max_extensions, "max_extensions_bytes");
    if (request_len > max_extensions)
        return cpex__over(err_msg, fn, "request", request_len, max_extensions, "max_extensions_bytes");
    if (options_len > max_extensions)
        return cpex__over(err_msg, fn, "options", options_len, max_extensions, "max_extensions_bytes");
    total = CPEX__REQ_HEAD - 4 + hook_len + payload_len + extensions_len + request_len + options_len;
    if (hook_len > 4096 || total > CPEX__MAX_FRAME / 2)
        return cpex__fail(err_msg, CPEX_ERR_INVALID_INPUT, "%s: the call is too large for an engine worker", fn);
    /* What the boundary's C checker takes (ffi/fastpath.c) is decoded as is; the rest
       gets the checks that name the problem, in the worker. */
    if (payload_len != 0 && cpex__plain_map(payload, payload_len, payload_len, max_entries))
        flags |= 1;
    if (extensions_len == 0 || cpex__plain_map(extensions, extensions_len, extensions_len, max_entries))
        flags |= 2;
    if (request_len != 0 && cpex__plain_map(request, request_len, request_len, max_entries))
        flags |= 4;
    if (options_len != 0 && cpex__plain_map(options, options_len, options_len, max_entries))
        flags |= 8;

    index = cpex__acquire(r, want, generation, CPEX__SHARED, &generation, &frees, &nfrees, &why);
    if (index < 0)
        return cpex__fail(err_msg, context != NULL ? CPEX_ERR_INVALID_HANDLE : CPEX_ERR_INTERNAL, "%s: %s", fn, why);
    if (nfrees > 0xFFFFFFu)
        nfrees = 0xFFFFFFu; /* never reached: ids past it stay in the worker until it ends */
    total += nfrees * 8;
    cpex__put32(head, (uint32_t)total);
    head[4] = CPEX__OP_INVOKE;
    head[5] = payload_type;
    head[6] = (uint8_t)flags;
    head[7] = 0;
    cpex__put64(head + 8, context != NULL ? ctx.id : 0);
    cpex__put32(head + 16, (uint32_t)hook_len);
    cpex__put32(head + 20, (uint32_t)payload_len);
    cpex__put32(head + 24, (uint32_t)extensions_len);
    cpex__put32(head + 28, (uint32_t)request_len);
    cpex__put32(head + 32, (uint32_t)options_len);
    cpex__put32(head + 36, (uint32_t)nfrees);
    iov[0].iov_base = head;
    iov[0].iov_len = sizeof head;
    iov[1].iov_base = frees;
    iov[1].iov_len = nfrees * 8;
    iov[2].iov_base = (void *)hook;
    iov[2].iov_len = hook_len;
    iov[3].iov_base = (void *)payload;
    iov[3].iov_len = payload_len;
    iov[4].iov_base = (void *)extensions;
    iov[4].iov_len = extensions_len;
    iov[5].iov_base = (void *)request;
    iov[5].iov_len = request_len;
    iov[6].iov_base = (void *)options;
    iov[6].iov_len = options_len;
    memset(&reply, 0, sizeof reply);
    rc = cpex__round_trip(r, index, generation, iov, 7, CPEX__TIMED, &reply);
    free(frees);
    if (rc != 0) {
        cpex_status st = cpex__fail_lost(err_msg, fn, r, index, rc);
        cpex__release(r, index, 0);
        return st;
    }
    cpex__release(r, index, 1);
    if (reply.status != 1)
        return cpex__worker_error(err_msg, fn, &reply);
    if (context != NULL)
        (void)cpex__lookup((uint64_t)(uintptr_t)context, CPEX__KIND_CONTEXT, 1, &ctx, reason, sizeof reason);
    if (reply.context_id != 0) {
        uint64_t token = cpex__issue(CPEX__KIND_CONTEXT, r, index, generation, reply.context_id);
        if (token == 0) {
            free(reply.data);
            return cpex__fail(err_msg, CPEX_ERR_INTERNAL, "%s: out of memory for a context handle", fn);
        }
        *out_context = (cpex_context *)(uintptr_t)token;
    }
    if (reply.background_id != 0) {
        uint64_t token = cpex__issue(CPEX__KIND_BACKGROUND, r, index, generation, reply.background_id);
        if (token == 0) {
            free(reply.data);
            return cpex__fail(err_msg, CPEX_ERR_INTERNAL, "%s: out of memory for a background handle", fn);
        }
        *out_background = (cpex_background *)(uintptr_t)token;
    }
    *out_result = reply.data;
    *out_result_len = reply.len;
    return CPEX_OK;
}

static cpex_status cpex__remote_invoke(cpex_manager *manager, const char *hook, size_t hook_len, uint8_t payload_type,
                                       const uint8_t *payload, size_t payload_len, const uint8_t *extensions,
                                       size_t extensions_len, cpex_context *context, uint8_t **out_result,
                                       size_t *out_result_len, cpex_context **out_context,
                                       cpex_background **out_background, char **err_msg)
{
    return cpex__remote_call("cpex_invoke", manager, hook, hook_len, payload_type, payload, payload_len, extensions,
                             extensions_len, NULL, 0, NULL, 0, context, out_result, out_result_len, out_context,
                             out_background, err_msg);
}

static cpex_status cpex__remote_invoke_request(cpex_manager *manager, const char *hook, size_t hook_len,
                                               uint8_t payload_type, const uint8_t *payload, size_t payload_len,
                                               const uint8_t *extensions, size_t extensions_len,
                                               const uint8_t *request, size_t request_len, cpex_context *context,
                                               uint8_t **out_result, size_t *out_result_len,
                                               cpex_context **out_context, cpex_background **out_background,
                                               char **err_msg)
{
    return cpex__remote_call("cpex_invoke_request", manager, hook, hook_len, payload_type, payload, payload_len,
                             extensions, extensions_len, request, request_len, NULL, 0, context, out_result,
                             out_result_len, out_context, out_background, err_msg);
}

static cpex_status cpex__remote_invoke_with(cpex_manager *manager, const char *hook, size_t hook_len,
                                            uint8_t payload_type, const uint8_t *payload, size_t payload_len,
                                            const uint8_t *extensions, size_t extensions_len, const uint8_t *request,
                                            size_t request_len, const uint8_t *options, size_t options_len,
                                            cpex_context *context, uint8_t **out_result, size_t *out_result_len,
                                            cpex_context **out_context, cpex_background **out_background,
                                            char **err_msg)
{
    return cpex__remote_call("cpex_invoke_with", manager, hook, hook_len, payload_type, payload, payload_len,
                             extensions, extensions_len, request, request_len, options, options_len, context,
                             out_result, out_result_len, out_context, out_background, err_msg);
}

static cpex_status cpex__remote_wait_background(cpex_background *background, uint8_t **out_errors,
                                                size_t *out_errors_len, char **err_msg)
{
    static const char fn[] = "cpex_wait_background";
    cpex__rhandle bg;
    uint8_t head[CPEX__REQ_HEAD];
    struct iovec iov[2];
    uint64_t *frees = NULL;
    size_t nfrees = 0;
    const char *why = NULL;
    char reason[160];
    int index, rc;
    uint32_t generation;
    cpex__reply reply;
    if (!cpex__is_remote_token(background))
        return CPEX__DECLINED;
    if (!cpex__lookup((uint64_t)(uintptr_t)background, CPEX__KIND_BACKGROUND, 0, &bg, reason, sizeof reason))
        return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE, "%s: %s", fn, reason);
    /* Alone on its worker: the wait may block, and no invoke should queue behind it. */
    index = cpex__acquire(bg.remote, bg.worker, bg.generation, CPEX__ALONE, &generation, &frees, &nfrees, &why);
    if (index < 0)
        return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE, "%s: %s", fn, why);
    memset(head, 0, sizeof head);
    cpex__put32(head, (uint32_t)(CPEX__REQ_HEAD - 4 + nfrees * 8));
    head[4] = CPEX__OP_WAIT;
    cpex__put64(head + 8, bg.id);
    cpex__put32(head + 36, (uint32_t)nfrees);
    iov[0].iov_base = head;
    iov[0].iov_len = sizeof head;
    iov[1].iov_base = frees;
    iov[1].iov_len = nfrees * 8;
    memset(&reply, 0, sizeof reply);
    rc = cpex__round_trip(bg.remote, index, generation, iov, 2, CPEX__TIMED, &reply);
    free(frees);
    if (rc != 0) {
        cpex_status st = cpex__fail_lost(err_msg, fn, bg.remote, index, rc);
        cpex__release(bg.remote, index, 0);
        return st;
    }
    cpex__release(bg.remote, index, 1);
    if (reply.status != 1)
        return cpex__worker_error(err_msg, fn, &reply);
    *out_errors = reply.data;
    *out_errors_len = reply.len;
    return CPEX_OK;
}

static cpex_status cpex__remote_free(const char *fn, void *handle, int kind, char **err_msg)
{
    cpex__rhandle h;
    char reason[160];
    cpex__worker *w;
    if (!cpex__is_remote_token(handle))
        return CPEX__DECLINED;
    if (!cpex__lookup((uint64_t)(uintptr_t)handle, kind, 1, &h, reason, sizeof reason))
        return cpex__fail(err_msg, CPEX_ERR_INVALID_HANDLE, "%s: %s", fn, reason);
    pthread_mutex_lock(&h.remote->mu);
    w = &h.remote->workers[h.worker];
    if (CPEX__UP(w) && w->generation == h.generation) {
        if (w->nfrees == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 16;
            uint64_t *grown = (uint64_t *)realloc(w->frees, cap * sizeof *grown);
            if (grown != NULL) {
                w->frees = grown;
                w->cap = cap;
            }
        }
        if (w->nfrees < w->cap)
            w->frees[w->nfrees++] = h.id | (kind == CPEX__KIND_BACKGROUND ? CPEX__FREE_BACKGROUND : 0);
    }
    pthread_mutex_unlock(&h.remote->mu);
    return CPEX_OK;
}

static cpex_status cpex__remote_free_context(cpex_context *context, char **err_msg)
{
    return cpex__remote_free("cpex_free_context", context, CPEX__KIND_CONTEXT, err_msg);
}

static cpex_status cpex__remote_free_background(cpex_background *background, char **err_msg)
{
    return cpex__remote_free("cpex_free_background", background, CPEX__KIND_BACKGROUND, err_msg);
}

/* The call limit as the socket's receive timeout (CPEX__TIMED reads). */
static void cpex__set_timeout(int fd, double seconds)
{
    struct timeval tv;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* -- what the boundary calls (cpexrt/_boundary/remote.py) ----------------------------- */

/* A manager's engine workers, none attached yet, not published (calls still reach
   Python until cpexrt_remote_publish). NULL when out of memory. */
void *cpexrt_remote_new(uintptr_t token, int n, int death_fd, size_t max_payload, size_t max_extensions,
                        size_t max_entries, double timeout)
{
    cpex__remote *r = (cpex__remote *)calloc(1, sizeof *r);
    int i;
    if (r == NULL)
        return NULL;
    r->workers = (cpex__worker *)calloc((size_t)n, sizeof *r->workers);
    if (r->workers == NULL) {
        free(r);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        r->workers[i].fd = -1;
        pthread_mutex_init(&r->workers[i].send_mu, NULL);
        pthread_cond_init(&r->workers[i].cond, NULL);
    }
    r->token = token;
    r->n = n;
    r->death_fd = death_fd;
    r->max_payload = max_payload;
    r->max_extensions = max_extensions;
    r->max_entries = max_entries;
    r->timeout = timeout;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    return r;
}

/* The limits of a config taken into use by a reload. */
void cpexrt_remote_limits(void *remote, size_t max_payload, size_t max_extensions, size_t max_entries, double timeout)
{
    cpex__remote *r = (cpex__remote *)remote;
    int i;
    pthread_mutex_lock(&r->mu);
    /* Read without the lock by calls (atomic; the timeout only under the lock). */
    __atomic_store_n(&r->max_payload, max_payload, __ATOMIC_RELAXED);
    __atomic_store_n(&r->max_extensions, max_extensions, __ATOMIC_RELAXED);
    __atomic_store_n(&r->max_entries, max_entries, __ATOMIC_RELAXED);
    r->timeout = timeout;
    for (i = 0; i < r->n; i++)
        if (CPEX__UP(&r->workers[i]))
            cpex__set_timeout(r->workers[i].fd, timeout + CPEX__GRACE);
    pthread_mutex_unlock(&r->mu);
}

/* Worker index is now the process pid on socket fd (owned here from now on). */
void cpexrt_remote_attach(void *remote, int index, int fd, int pid)
{
    cpex__remote *r = (cpex__remote *)remote;
    cpex__worker *w = &r->workers[index];
    pthread_mutex_lock(&r->mu);
    while (w->inflight) /* the calls of the process it replaces leave first */
        pthread_cond_wait(&w->cond, &r->mu);
    if (w->fd >= 0)
        close(w->fd);
    w->fd = fd;
    w->lost = 0;
    w->sent = w->served = 0;
    cpex__set_timeout(fd, r->timeout + CPEX__GRACE);
    w->pid = (pid_t)pid;
    w->generation++;
    free(w->frees);
    w->frees = NULL;
    w->nfrees = w->cap = 0;
    cpex__wake_all(r);
    pthread_mutex_unlock(&r->mu);
}

/* Closes worker index's socket (shutdown, after its last control call): no death is
   reported for it. */
void cpexrt_remote_detach(void *remote, int index)
{
    cpex__remote *r = (cpex__remote *)remote;
    cpex__worker *w = &r->workers[index];
    pthread_mutex_lock(&r->mu);
    r->draining++;
    while (w->inflight)
        pthread_cond_wait(&r->cond, &r->mu);
    r->draining--;
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    w->lost = 0;
    cpex__wake_all(r);
    pthread_mutex_unlock(&r->mu);
}

/* Publishes the manager (its calls are answered here from now on), or closes it: no
   new call is taken, the calls in flight finish, its handles die. */
int cpexrt_remote_publish(void *remote, int on)
{
    cpex__remote *r = (cpex__remote *)remote;
    size_t i;
    pthread_rwlock_wrlock(&cpex__remotes_lock);
    for (i = 0; i < cpex__remotes_n && cpex__remotes[i] != r; i++)
        ;
    if (on && i == cpex__remotes_n) {
        cpex__remote **grown = (cpex__remote **)realloc(cpex__remotes, (cpex__remotes_n + 1) * sizeof *grown);
        if (grown == NULL) {
            pthread_rwlock_unlock(&cpex__remotes_lock);
            return 0;
        }
        cpex__remotes = grown;
        cpex__remotes[cpex__remotes_n++] = r;
    } else if (!on && i < cpex__remotes_n)
        cpex__remotes[i] = cpex__remotes[--cpex__remotes_n];
    pthread_rwlock_unlock(&cpex__remotes_lock);
    if (!on) {
        int busy;
        pthread_mutex_lock(&r->mu);
        r->closed = 1;
        r->draining++;
        cpex__wake_all(r);
        do {
            int k;
            busy = 0;
            for (k = 0; k < r->n; k++)
                busy |= r->workers[k].inflight;
            if (busy)
                pthread_cond_wait(&r->cond, &r->mu);
        } while (busy);
        r->draining--;
        pthread_mutex_unlock(&r->mu);
        cpex__drop_handles_of(r);
    }
    return 1;
}

/* A control call from the boundary to worker index (waiting for it to be idle):
   request is the MessagePack body. Returns 0 with *out_status and *out (malloc'd, free
   with free()) set; -1: the worker is not running or stopped during the call; -2: it
   did not answer within timeout seconds and was killed. */
int cpexrt_remote_control(void *remote, int index, const uint8_t *request, size_t len, double timeout,
                          int *out_status, uint8_t **out, size_t *out_len)
{
    cpex__remote *r = (cpex__remote *)remote;
    uint8_t head[CPEX__REQ_HEAD];
    struct iovec iov[3];
    uint64_t *frees = NULL;
    size_t nfrees = 0;
    const char *why = NULL;
    cpex__reply reply;
    uint32_t generation;
    int rc;
    if (cpex__acquire(r, index, 0, CPEX__CONTROL, &generation, &frees, &nfrees, &why) < 0)
        return -1;
    memset(head, 0, sizeof head);
    cpex__put32(head, (uint32_t)(CPEX__REQ_HEAD - 4 + nfrees * 8 + len));
    head[4] = CPEX__OP_CONTROL;
    cpex__put32(head + 20, (uint32_t)len);
    cpex__put32(head + 36, (uint32_t)nfrees);
    iov[0].iov_base = head;
    iov[0].iov_len = sizeof head;
    iov[1].iov_base = frees;
    iov[1].iov_len = nfrees * 8;
    iov[2].iov_base = (void *)request;
    iov[2].iov_len = len;
    memset(&reply, 0, sizeof reply);
    rc = cpex__round_trip(r, index, generation, iov, 3, timeout > 0 ? cpex__now() + timeout : 0, &reply);
    free(frees);
    cpex__release(r, index, rc == 0);
    if (rc == -3)
        rc = -1;
    if (rc != 0)
        return rc;
    *out_status = reply.status;
    *out = reply.data;
    *out_len = reply.len;
    return 0;
}

/* Frees what cpexrt_remote_control returned. */
void cpexrt_remote_free(void *data)
{
    free(data);
}
