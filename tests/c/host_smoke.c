/* A minimal C host: creates a manager from the YAML in argv[1], initializes it, invokes
   tool_pre_invoke once and shuts down, printing each status (and message on failure).
   The environment tests run it under hostile environments and working directories. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cpex.h"

static int report(const char *step, cpex_status st, char *err)
{
    printf("%s %d%s%s\n", step, (int)st, err ? " " : "", err ? err : "");
    cpex_free_buffer(err);
    return st == CPEX_OK;
}

int main(int argc, char **argv)
{
    /* {"tool_name": "t"} */
    static const uint8_t payload[] = {0x81, 0xa9, 't', 'o', 'o', 'l', '_', 'n', 'a', 'm', 'e', 0xa1, 't'};
    cpex_manager *m = NULL;
    cpex_context *ctx = NULL;
    cpex_background *bg = NULL;
    uint8_t *result = NULL;
    size_t result_len = 0;
    char *err = NULL;
    cpex_status st;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG_YAML\n", argv[0]);
        return 2;
    }
    st = cpex_manager_new_from_yaml(argv[1], strlen(argv[1]), &m, &err);
    if (!report("new", st, err)) {
        /* A failed start-up must fail every later call the same way, not read as ok. */
        st = cpex_manager_new(&m, &err);
        report("again", st, err);
        return 0;
    }
    st = cpex_initialize(m, &err);
    report("init", st, err);
    st = cpex_invoke(m, "tool_pre_invoke", 15, CPEX_PAYLOAD_GENERIC, payload, sizeof payload, NULL, 0, NULL,
                     &result, &result_len, &ctx, &bg, &err);
    report("invoke", st, err);
    printf("result_bytes %zu\n", result_len);
    cpex_free_buffer(result);
    {
        /* The runtime must leave the host's Ctrl-C alone. */
        struct sigaction sa;
        sigaction(SIGINT, NULL, &sa);
        printf("sigint %s\n", sa.sa_handler == SIG_DFL ? "default" : "changed");
    }
    st = cpex_shutdown(m, &err);
    report("shutdown", st, err);
    return 0;
}
