/* dmscCommInitAll, dmscBcast and dmscCommFinalize: three communicators of one job made in
 * this one process, each driven by its own thread; then the error paths. Built against an
 * installed prefix with `pkg-config --cflags --libs dmsc` (tests/c/run.sh). Prints
 * INIT-ALL-OK and exits 0 when every check holds. */
#include <dmsc.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define N 3
#define COUNT 1003 /* not a multiple of N */

static dmscComm_t comms[N];
static int failures;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(int rank, const char *what, dmscComm_t c) {
    pthread_mutex_lock(&lock);
    fprintf(stderr, "rank %d: %s: %s\n", rank, what, dmscGetLastError(c));
    failures++;
    pthread_mutex_unlock(&lock);
}

static void *run(void *arg) {
    int rank = (int)(size_t)arg, r = -1, n = -1;
    dmscComm_t c = comms[rank];
    if (dmscCommUserRank(c, &r) != dmscSuccess || dmscCommCount(c, &n) != dmscSuccess ||
        r != rank || n != N) {
        fail(rank, "rank or count", c);
        return NULL;
    }
    /* dmscBcast: in place from root 1. */
    static double b[N][COUNT];
    for (int i = 0; i < COUNT; i++) b[rank][i] = rank == 1 ? i * 0.5 : -1.0;
    if (dmscBcast(b[rank], COUNT, dmscFloat64, 1, c, NULL) != dmscSuccess) fail(rank, "dmscBcast", c);
    for (int i = 0; i < COUNT; i++)
        if (b[rank][i] != i * 0.5) {
            fail(rank, "dmscBcast delivered a wrong element", c);
            break;
        }
    /* An all-reduce through the same communicator. */
    int x[COUNT];
    for (int i = 0; i < COUNT; i++) x[i] = rank + i;
    if (dmscAllReduce(x, x, COUNT, dmscInt32, dmscSum, c, NULL) != dmscSuccess) fail(rank, "dmscAllReduce", c);
    for (int i = 0; i < COUNT; i++)
        if (x[i] != 3 * i + 3) {
            fail(rank, "dmscAllReduce gave a wrong element", c);
            break;
        }
    /* A request still in flight when finalizing: finalize completes it first. */
    dmscRequest_t req = NULL;
    int y[COUNT];
    for (int i = 0; i < COUNT; i++) y[i] = 1;
    if (dmscAllReduceAsync(y, y, COUNT, dmscInt32, dmscSum, c, NULL, &req) != dmscSuccess)
        fail(rank, "dmscAllReduceAsync", c);
    if (dmscCommFinalize(c) != dmscSuccess) fail(rank, "dmscCommFinalize", c);
    int done = 0;
    if (dmscTest(req, &done) != dmscSuccess || !done) fail(rank, "request not complete after finalize", c);
    if (y[0] != N || y[COUNT - 1] != N) fail(rank, "the request's result", c);
    dmscRequestFree(req);
    /* A finalized communicator takes no operation, but answers queries. */
    if (dmscBcast(b[rank], COUNT, dmscFloat64, 0, c, NULL) != dmscInvalidUsage ||
        !strstr(dmscGetLastError(NULL), "finalized"))
        fail(rank, "an operation after dmscCommFinalize was not refused", c);
    dmscComm_t sub = NULL;
    if (dmscCommSplit(c, 0, rank, &sub, NULL) != dmscInvalidUsage || sub != NULL ||
        !strstr(dmscGetLastError(NULL), "finalized"))
        fail(rank, "dmscCommSplit after dmscCommFinalize was not refused", c);
    if (dmscCommCount(c, &n) != dmscSuccess) fail(rank, "dmscCommCount after finalize", c);
    if (dmscCommFinalize(c) != dmscInvalidUsage) fail(rank, "a second dmscCommFinalize was accepted", c);
    return NULL;
}

int main(void) {
    /* Bad arguments: clear errors, and no communicator handed out. */
    dmscComm_t bad[2] = {(dmscComm_t)1, (dmscComm_t)1};
    int dup[2] = {4, 4};
    if (dmscCommInitAll(bad, 0, NULL) != dmscInvalidArgument) { fprintf(stderr, "ndev 0 accepted\n"); return 1; }
    if (dmscCommInitAll(NULL, 2, NULL) != dmscInvalidArgument) { fprintf(stderr, "NULL comms accepted\n"); return 1; }
    if (dmscCommInitAll(bad, 100000, NULL) != dmscInvalidArgument || !strstr(dmscGetLastError(NULL), "1..=1024")) {
        fprintf(stderr, "ndev 100000 was not refused: %s\n", dmscGetLastError(NULL));
        return 1;
    }
    if (dmscCommInitAll(bad, 2, dup) != dmscInvalidArgument || bad[0] != NULL || bad[1] != NULL ||
        !strstr(dmscGetLastError(NULL), "devlist[1]")) {
        fprintf(stderr, "a repeated device was not refused by name: %s\n", dmscGetLastError(NULL));
        return 1;
    }
    if (dmscBcast(NULL, 1, dmscFloat32, 0, NULL, NULL) != dmscInvalidArgument) {
        fprintf(stderr, "dmscBcast with a NULL comm accepted\n");
        return 1;
    }
    int devs[N] = {0, 1, 2};
    if (dmscCommInitAll(comms, N, devs) != dmscSuccess) {
        fprintf(stderr, "dmscCommInitAll: %s\n", dmscGetLastError(NULL));
        return 1;
    }
    pthread_t t[N];
    for (int i = 0; i < N; i++) pthread_create(&t[i], NULL, run, (void *)(size_t)i);
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++)
        if (dmscCommDestroy(comms[i]) != dmscSuccess) fail(i, "dmscCommDestroy", NULL);
    if (failures) return 1;
    printf("INIT-ALL-OK\n");
    return 0;
}
