/* The fast path of hooks nobody handles: cpex_invoke answers them in C, without
   entering Python, when the call is plainly valid, with the generic payload type's
   unchanged result (ffi/generated/unchanged_result.c). Anything unusual (a context,
   a payload type other than generic, a manager not initialized, bytes the strict
   checker below does not accept) declines, and the Python boundary answers with its
   full checks and messages. Pasted into the cffi source after runtime.c and
   ffi/generated/unchanged_result.c. */

#define CPEX__DECLINED ((cpex_status)1)
#define CPEX__MAX_DEPTH 64

typedef struct {
    uintptr_t token;
    int initialized;
    char *hooks;        /* NUL-separated hook names that have plugins */
    size_t hooks_len;
    size_t max_payload;   /* plugin_settings' limits: a call over them declines, */
    size_t max_extensions; /* and Python refuses it with its message */
    size_t max_entries;
} cpex__quiet_entry;

static pthread_rwlock_t cpex__quiet_lock = PTHREAD_RWLOCK_INITIALIZER;
static cpex__quiet_entry *cpex__quiet;
static size_t cpex__quiet_n;

/* Called by the boundary whenever a manager's hooks, limits or initialized state
   change, under the engine's lock that orders those changes; initialized < 0 forgets
   the manager (shutdown), 0 makes every call of it decline (not initialized, or a
   reload swapping its plugins: Python answers meanwhile). create: 1 when the manager
   is new (its entry is added), else 0: only an entry still present is updated, so a
   change racing the shutdown never brings a forgotten manager back. The write lock
   orders the change with every fast-path answer: a call that reads the table after
   it sees the new hooks. */
void cpexrt_publish_hooks(uintptr_t token, int initialized, int create, const char *hooks, size_t len,
                          size_t max_payload, size_t max_extensions, size_t max_entries)
{
    size_t i;
    char *copy = NULL;
    if (initialized >= 0) {
        copy = (char *)malloc(len + 1);
        if (copy == NULL)
            initialized = -1; /* out of memory: no fast path for it */
        else {
            memcpy(copy, hooks, len);
            copy[len] = '\0';
        }
    }
    pthread_rwlock_wrlock(&cpex__quiet_lock);
    for (i = 0; i < cpex__quiet_n && cpex__quiet[i].token != token; i++)
        ;
    if (i < cpex__quiet_n) {
        free(cpex__quiet[i].hooks);
        if (initialized < 0) {
            cpex__quiet[i] = cpex__quiet[--cpex__quiet_n];
            pthread_rwlock_unlock(&cpex__quiet_lock);
            return;
        }
    } else if (initialized >= 0 && create) {
        cpex__quiet_entry *grown = (cpex__quiet_entry *)realloc(cpex__quiet, (cpex__quiet_n + 1) * sizeof *grown);
        if (grown == NULL) {
            free(copy);
            pthread_rwlock_unlock(&cpex__quiet_lock);
            return;
        }
        cpex__quiet = grown;
        i = cpex__quiet_n++;
    } else {
        free(copy);
        pthread_rwlock_unlock(&cpex__quiet_lock);
        return;
    }
    cpex__quiet[i].token = token;
    cpex__quiet[i].initialized = initialized;
    cpex__quiet[i].hooks = copy;
    cpex__quiet[i].hooks_len = len;
    cpex__quiet[i].max_payload = max_payload;
    cpex__quiet[i].max_extensions = max_extensions;
    cpex__quiet[i].max_entries = max_entries;
    pthread_rwlock_unlock(&cpex__quiet_lock);
}

static int cpex__has_hook(const cpex__quiet_entry *e, const char *hook, size_t hook_len)
{
    const char *p = e->hooks, *end = e->hooks + e->hooks_len;
    while (p < end) {
        size_t n = strlen(p);
        if (n == hook_len && memcmp(p, hook, n) == 0)
            return 1;
        p += n + 1;
    }
    return 0;
}

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. ASCII, the
   common case, is skipped eight bytes at a time. */
static int cpex__utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c;
        size_t len, k;
        uint32_t cp;
        uint64_t word;
        while (n - i >= 8) {
            memcpy(&word, s + i, 8);
            if (word & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i >= n)
            break;
        c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n)
            return 0;
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += len;
    }
    return 1;
}

static size_t cpex__be(const uint8_t *p, size_t n)
{
    size_t v = 0, i;
    for (i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Skips one MessagePack value at *pos if it is one the engine accepts as is (maps
   keyed by strings, valid UTF-8, no extension types, no map or array of more than
   max_entries entries); 0 otherwise. */
static int cpex__skip(const uint8_t *b, size_t n, size_t *pos, int depth, int want_map, int as_key, size_t max_entries)
{
    size_t p = *pos, len = 0, count = 0, i;
    int is_str = 0, is_map = 0, is_array = 0;
    uint8_t t;
    if (p >= n || depth > CPEX__MAX_DEPTH)
        return 0;
    t = b[p++];
    if (t <= 0x7F || t >= 0xE0 || t == 0xC0 || t == 0xC2 || t == 0xC3) {
        /* fixint, nil, bool */
    } else if (t >= 0xA0 && t <= 0xBF) { is_str = 1; len = t & 0x1F; }
    else if (t >= 0x80 && t <= 0x8F) { is_map = 1; count = t & 0x0F; }
    else if (t >= 0x90 && t <= 0x9F) { is_array = 1; count = t & 0x0F; }
    else {
        static const uint8_t fixed[] = {
            /* 0xca..0xd3: float32, float64, uint8..uint64, int8..int64 */
            4, 8, 1, 2, 4, 8, 1, 2, 4, 8};
        if (t >= 0xCA && t <= 0xD3) {
            if (p + fixed[t - 0xCA] > n)
                return 0;
            p += fixed[t - 0xCA];
        } else if (t >= 0xD9 && t <= 0xDB) { /* str 8/16/32 */
            size_t w = (size_t)1 << (t - 0xD9);
            if (p + w > n)
                return 0;
            len = cpex__be(b + p, w);
            p += w;
            is_str = 1;
        } else if (t >= 0xC4 && t <= 0xC6) { /* bin 8/16/32 */
            size_t w = (size_t)1 << (t - 0xC4);
            if (as_key || p + w > n)
                return 0;
            len = cpex__be(b + p, w);
            p += w;
            if (len > n - p)
                return 0;
            p += len;
        } else if (t >= 0xDC && t <= 0xDF) { /* array 16/32, map 16/32 */
            size_t w = (t & 1) ? 4 : 2;
            if (p + w > n)
                return 0;
            count = cpex__be(b + p, w);
            p += w;
            is_array = t <= 0xDD;
            is_map = !is_array;
        } else {
            return 0; /* extension types, the reserved 0xc1 */
        }
    }
    if ((want_map && !is_map) || (as_key && !is_str) || count > max_entries)
        return 0;
    if (is_str) {
        if (len > n - p || !cpex__utf8(b + p, len))
            return 0;
        p += len;
    }
    if (is_array)
        for (i = 0; i < count; i++)
            if (!cpex__skip(b, n, &p, depth + 1, 0, 0, max_entries))
                return 0;
    if (is_map)
        for (i = 0; i < count; i++)
            if (!cpex__skip(b, n, &p, depth + 1, 0, 1, max_entries) || !cpex__skip(b, n, &p, depth + 1, 0, 0, max_entries))
                return 0;
    *pos = p;
    return 1;
}

static int cpex__plain_map(const uint8_t *b, size_t n, size_t max_bytes, size_t max_entries)
{
    size_t pos = 0;
    return n <= max_bytes && cpex__skip(b, n, &pos, 0, 1, 0, max_entries) && pos == n;
}

/* Called by the boundary on every payload, extensions and request it decodes: 1 when
   the bytes are one map the engine takes as is (the checks above: string keys, valid
   UTF-8, no extension types, nesting at most CPEX__MAX_DEPTH, at most max_entries
   entries per map or array); 0 sends Python to find and name the problem. */
int cpexrt_plain_map(const uint8_t *bytes, size_t len, size_t max_entries)
{
    return cpex__plain_map(bytes, len, len, max_entries);
}

/* cpexrt_plain_map of an invoke's payload and extensions in one call (every call from
   Python releases and retakes the GIL: one hand-off instead of two). Bit 1: the
   payload is a plain map; bit 2: the extensions are one, or absent (len 0). */
int cpexrt_plain_maps(const uint8_t *payload, size_t payload_len, const uint8_t *extensions, size_t extensions_len,
                      size_t max_entries)
{
    int plain = cpex__plain_map(payload, payload_len, payload_len, max_entries) ? 1 : 0;
    if (extensions_len == 0 || cpex__plain_map(extensions, extensions_len, extensions_len, max_entries))
        plain |= 2;
    return plain;
}

static cpex_status cpex__fast_invoke(cpex_manager *manager, const char *hook, size_t hook_len, uint8_t payload_type,
                                     const uint8_t *payload, size_t payload_len, const uint8_t *extensions,
                                     size_t extensions_len, cpex_context *context, uint8_t **out_result,
                                     size_t *out_result_len, cpex_context **out_context,
                                     cpex_background **out_background, char **err_msg)
{
    size_t i, unchanged_len;
    int quiet = 0;
    const cpex__quiet_entry *entry = NULL;
    const uint8_t *unchanged;
    uint8_t *answer;
    (void)out_context;
    (void)out_background;
    (void)err_msg;
    /* Only generic payloads: a CMF payload needs Python's checks of the message. */
    if (context != NULL || payload_len == 0 || hook_len == 0 || payload_type != CPEX_PAYLOAD_GENERIC)
        return CPEX__DECLINED;
    unchanged = cpex__unchanged_result(payload_type, &unchanged_len);
    pthread_rwlock_rdlock(&cpex__quiet_lock);
    for (i = 0; i < cpex__quiet_n; i++)
        if (cpex__quiet[i].token == (uintptr_t)manager) {
            entry = &cpex__quiet[i];
            quiet = entry->initialized > 0 && !cpex__has_hook(entry, hook, hook_len);
            break;
        }
    if (!quiet || !cpex__utf8((const uint8_t *)hook, hook_len) ||
        !cpex__plain_map(payload, payload_len, entry->max_payload, entry->max_entries) ||
        (extensions_len != 0 && !cpex__plain_map(extensions, extensions_len, entry->max_extensions, entry->max_entries))) {
        pthread_rwlock_unlock(&cpex__quiet_lock);
        return CPEX__DECLINED;
    }
    pthread_rwlock_unlock(&cpex__quiet_lock);
    answer = (uint8_t *)cpexrt_copy_out(unchanged, unchanged_len);
    if (answer == NULL)
        return CPEX__DECLINED;
    *out_result = answer;
    *out_result_len = unchanged_len;
    return CPEX_OK;
}

/* cpex_invoke_request: the request context changes nothing for a hook nobody handles. */
static cpex_status cpex__fast_invoke_request(cpex_manager *manager, const char *hook, size_t hook_len,
                                             uint8_t payload_type, const uint8_t *payload, size_t payload_len,
                                             const uint8_t *extensions, size_t extensions_len, const uint8_t *request,
                                             size_t request_len, cpex_context *context, uint8_t **out_result,
                                             size_t *out_result_len, cpex_context **out_context,
                                             cpex_background **out_background, char **err_msg)
{
    (void)request;
    (void)request_len;
    return cpex__fast_invoke(manager, hook, hook_len, payload_type, payload, payload_len, extensions, extensions_len,
                             context, out_result, out_result_len, out_context, out_background, err_msg);
}
