/* The README's C example, built exactly as the README says (against an installed prefix,
 * with -I$PREFIX/include -L$PREFIX/lib -ldmsc and the prefix on the loader's path), run as
 * several ranks: it must start (the loader finds libdmsc.so.0) and sum correctly. */
#include <dmsc.h>
#include <stdio.h>

int main(void) {
    dmscComm_t comm;
    if (dmscCommInitFromEnv(&comm, NULL) != dmscSuccess) {
        fprintf(stderr, "init failed: %s\n", dmscGetLastError(NULL));
        return 1;
    }
    int rank = 0, n = 0;
    dmscCommUserRank(comm, &rank);
    dmscCommCount(comm, &n);
    float buf[5] = {1, 2, 3, 4, 5};
    dmscResult_t r = dmscAllReduce(buf, buf, 5, dmscFloat32, dmscSum, comm, NULL);
    if (r != dmscSuccess) {
        fprintf(stderr, "%s\n", dmscGetLastError(comm));
        return 1;
    }
    for (int i = 0; i < 5; i++) {
        if (buf[i] != (float)((i + 1) * n)) {
            fprintf(stderr, "rank %d: element %d is %g, expected %d\n", rank, i, buf[i], (i + 1) * n);
            return 1;
        }
    }
    const char *t = NULL;
    if (n > 1 && dmscCommPeerTransport(comm, (rank + 1) % n, &t) == dmscSuccess)
        printf("README-EXAMPLE-OK rank %d (peer %d over %s)\n", rank, (rank + 1) % n, t);
    else
        printf("README-EXAMPLE-OK rank %d\n", rank);
    dmscCommDestroy(comm);
    return 0;
}
