/* A C host that forks after the runtime started: the child's calls must fail with a
   status naming the fork (not hang on a GIL owned by a thread the child does not
   have); the parent goes on working. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cpex.h"

int main(void)
{
    cpex_manager *m = NULL;
    char *err = NULL;
    int status = 0;
    pid_t child;
    size_t n = 0;

    if (cpex_manager_new(&m, &err) != CPEX_OK) {
        printf("parent new failed: %s\n", err ? err : "");
        return 1;
    }
    fflush(stdout);
    child = fork();
    if (child == 0) {
        cpex_manager *c = NULL;
        cpex_status st = cpex_manager_new(&c, &err);
        printf("child %d %s\n", (int)st, err ? err : "");
        fflush(stdout);
        _exit(st == CPEX_ERR_RUNTIME_INIT ? 0 : 3);
    }
    waitpid(child, &status, 0);
    printf("child exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    printf("parent count %d\n", (int)cpex_plugin_count(m, &n, &err));
    cpex_shutdown(m, &err);
    return 0;
}
