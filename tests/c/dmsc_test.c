/*
 * The C API of dmsc, end to end: run as N ranks (tests/c/run.sh uses 4) under
 *   target/release/dmscrun -n 4 -- ./dmsc_test
 * Every collective in place and out of place over every data type (float16 and bfloat16 as
 * bit patterns) and every reduction operator, with counts not divisible by 4; the Async
 * variants with dmscTest/dmscWait/dmscRequestFree; groups (ring exchange, nesting, mixed
 * collectives and send/recv, two communicators); unique-id init; split; path metrics (none
 * with one path per peer); and every argument error, checking both the code and that
 * dmscGetLastError names the argument.
 * With the argument "paths" (run.sh's second run, under DMSC_PATHS=k > 1 and DMSC_CMA=0) it
 * checks only the path metrics of packet spraying: k paths to every peer, ordered, all up,
 * and acknowledged bytes on the paths to every peer after traffic.
 * Any failed check prints the reason and exits 1 (dmscrun then stops the other ranks).
 */
#define _POSIX_C_SOURCE 200809L
#include "dmsc.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int me = -1, nranks = 0;

#define FAIL(...)                                                          \
    do {                                                                   \
        fprintf(stderr, "rank %d: %s:%d: ", me, __FILE__, __LINE__);      \
        fprintf(stderr, __VA_ARGS__);                                      \
        fprintf(stderr, "\n");                                             \
        exit(1);                                                           \
    } while (0)

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", me,     \
                    __FILE__, __LINE__, #cond);                            \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

/* The call must succeed. */
#define OK(call)                                                           \
    do {                                                                   \
        dmscResult_t r_ = (call);                                          \
        if (r_ != dmscSuccess)                                             \
            FAIL("%s returned %d (%s): %s", #call, (int)r_,                \
                 dmscGetErrorString(r_), dmscGetLastError(NULL));          \
    } while (0)

/* The call must fail with `code`, and dmscGetLastError must contain `needle`. */
#define EXPECT(call, code, needle)                                         \
    do {                                                                   \
        dmscResult_t r_ = (call);                                          \
        const char *m_ = dmscGetLastError(NULL);                           \
        if (r_ != (code))                                                  \
            FAIL("%s returned %d (%s), expected %s; last error: %s", #call, \
                 (int)r_, dmscGetErrorString(r_), #code, m_);              \
        if (m_ == NULL || strstr(m_, needle) == NULL)                      \
            FAIL("%s: last error \"%s\" does not contain \"%s\"", #call,   \
                 m_ ? m_ : "(null)", needle);                              \
    } while (0)

/* ---------- element access for every data type ---------- */

static const dmscDataType_t TYPES[] = {dmscInt8,    dmscUint8,   dmscInt32,   dmscUint32,
                                       dmscInt64,   dmscUint64,  dmscFloat16, dmscFloat32,
                                       dmscFloat64, dmscBfloat16};
#define NTYPES ((int)(sizeof TYPES / sizeof TYPES[0]))
static const dmscRedOp_t OPS[] = {dmscSum, dmscProd, dmscMax, dmscMin, dmscAvg};
#define NOPS ((int)(sizeof OPS / sizeof OPS[0]))

static size_t tsize(dmscDataType_t t) {
    switch (t) {
    case dmscInt8: case dmscUint8: return 1;
    case dmscFloat16: case dmscBfloat16: return 2;
    case dmscInt32: case dmscUint32: case dmscFloat32: return 4;
    default: return 8;
    }
}

static int is_float(dmscDataType_t t) {
    return t == dmscFloat16 || t == dmscBfloat16 || t == dmscFloat32 || t == dmscFloat64;
}

/* IEEE binary16 from a double that it represents exactly (the test's values). */
static uint16_t to_f16(double v) {
    uint16_t s = 0;
    int e;
    double m;
    long mant;
    if (v < 0) { s = 0x8000; v = -v; }
    if (v == 0) return s;
    m = frexp(v, &e); /* v = m * 2^e, m in [0.5, 1) */
    mant = lround((m * 2.0 - 1.0) * 1024.0);
    return (uint16_t)(s | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)mant);
}

static double from_f16(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

static uint16_t to_bf16(double v) {
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static double from_bf16(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void put(dmscDataType_t t, void *buf, size_t i, double v) {
    switch (t) {
    case dmscInt8: ((int8_t *)buf)[i] = (int8_t)v; break;
    case dmscUint8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
    case dmscInt32: ((int32_t *)buf)[i] = (int32_t)v; break;
    case dmscUint32: ((uint32_t *)buf)[i] = (uint32_t)v; break;
    case dmscInt64: ((int64_t *)buf)[i] = (int64_t)v; break;
    case dmscUint64: ((uint64_t *)buf)[i] = (uint64_t)v; break;
    case dmscFloat16: ((uint16_t *)buf)[i] = to_f16(v); break;
    case dmscBfloat16: ((uint16_t *)buf)[i] = to_bf16(v); break;
    case dmscFloat32: ((float *)buf)[i] = (float)v; break;
    case dmscFloat64: ((double *)buf)[i] = v; break;
    }
}

static double get(dmscDataType_t t, const void *buf, size_t i) {
    switch (t) {
    case dmscInt8: return ((const int8_t *)buf)[i];
    case dmscUint8: return ((const uint8_t *)buf)[i];
    case dmscInt32: return ((const int32_t *)buf)[i];
    case dmscUint32: return ((const uint32_t *)buf)[i];
    case dmscInt64: return (double)((const int64_t *)buf)[i];
    case dmscUint64: return (double)((const uint64_t *)buf)[i];
    case dmscFloat16: return from_f16(((const uint16_t *)buf)[i]);
    case dmscBfloat16: return from_bf16(((const uint16_t *)buf)[i]);
    case dmscFloat32: return ((const float *)buf)[i];
    case dmscFloat64: return ((const double *)buf)[i];
    }
    return NAN;
}

/* Rank r's element i for operator op: small values, exact in every type, so that sums and
 * products of up to 4 ranks stay exact (products use 1 and 2 only). */
static double val(dmscRedOp_t op, int r, size_t i) {
    if (op == dmscProd) return 1 + (double)((r + i) % 2);
    return 1 + (double)((r + (int)i) % 3) + (double)(i % 5) * 3;
}

static double expect_reduced(dmscDataType_t t, dmscRedOp_t op, size_t i) {
    double acc = val(op, 0, i);
    int r;
    for (r = 1; r < nranks; r++) {
        double v = val(op, r, i);
        switch (op) {
        case dmscSum: case dmscAvg: acc += v; break;
        case dmscProd: acc *= v; break;
        case dmscMax: acc = v > acc ? v : acc; break;
        case dmscMin: acc = v < acc ? v : acc; break;
        }
    }
    if (op == dmscAvg) acc = is_float(t) ? acc / nranks : floor(acc / nranks);
    return acc;
}

static int close_enough(dmscDataType_t t, double got, double want) {
    double tol = (t == dmscFloat16 || t == dmscBfloat16) ? 0.02 * fabs(want) + 0.01
                 : t == dmscFloat32                       ? 1e-6 * fabs(want) + 1e-6
                                                          : 1e-12 * fabs(want) + 1e-12;
    return fabs(got - want) <= tol;
}

static const char *tname(dmscDataType_t t) {
    static const char *names[] = {"int8",   "uint8",   "int32",   "uint32",  "int64",
                                  "uint64", "float16", "float32", "float64", "bfloat16"};
    return names[t];
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    CHECK(p != NULL, "out of memory");
    return p;
}

/* ---------- collectives ---------- */

static void test_all_reduce(dmscComm_t comm) {
    const size_t count = 1003;
    int ti, oi, inplace;
    for (ti = 0; ti < NTYPES; ti++)
        for (oi = 0; oi < NOPS; oi++)
            for (inplace = 0; inplace < 2; inplace++) {
                dmscDataType_t t = TYPES[ti];
                dmscRedOp_t op = OPS[oi];
                size_t i, es = tsize(t);
                char *send = xmalloc(count * es), *recv = xmalloc(count * es);
                for (i = 0; i < count; i++) put(t, send, i, val(op, me, i));
                memset(recv, 0x5a, count * es);
                if (inplace) {
                    OK(dmscAllReduce(send, send, count, t, op, comm, NULL));
                    memcpy(recv, send, count * es);
                } else {
                    OK(dmscAllReduce(send, recv, count, t, op, comm, NULL));
                    for (i = 0; i < count; i++)
                        CHECK(get(t, send, i) == val(op, me, i), "sendbuff was modified");
                }
                for (i = 0; i < count; i++) {
                    double want = expect_reduced(t, op, i), got = get(t, recv, i);
                    CHECK(close_enough(t, got, want), "all_reduce %s op %d inplace %d [%zu]: %g != %g",
                          tname(t), (int)op, inplace, i, got, want);
                }
                free(send);
                free(recv);
            }
}

/* dmscRedOpCreatePreMulSum: each rank's input times its own scalar, summed, for both
 * residences, on all_reduce (in and out of place), reduce and reduce_scatter; the errors of
 * a wrong datatype, an unknown residence and a destroyed operator. */
static void test_premul_sum(dmscComm_t comm) {
    const size_t count = 257;
    size_t i;
    int r;
    double sum_f = 0; /* sum over ranks of (r + 1) * 0.5 */
    for (r = 0; r < nranks; r++) sum_f += (r + 1) * 0.5;
    {
        float scalar = (float)(me + 1) * 0.5f, *send = xmalloc(count * 4), *recv = xmalloc(count * nranks * 4);
        dmscRedOp_t op, op_dev;
        OK(dmscRedOpCreatePreMulSum(&op, &scalar, dmscFloat32, dmscScalarHostImmediate, comm));
        CHECK((int)op >= 5, "a created operator is numbered from dmscNumOps (5): %d", (int)op);
        for (i = 0; i < count; i++) send[i] = (float)(i % 13);
        OK(dmscAllReduce(send, recv, count, dmscFloat32, op, comm, NULL));
        for (i = 0; i < count; i++) {
            CHECK(send[i] == (float)(i % 13), "premul sendbuff was modified");
            CHECK(recv[i] == (float)(sum_f * (double)(i % 13)), "premul all_reduce [%zu]: %g", i, recv[i]);
        }
        /* Immediate: changing the scalar afterwards changes nothing. */
        scalar = 100.0f;
        OK(dmscAllReduce(send, send, count, dmscFloat32, op, comm, NULL));
        for (i = 0; i < count; i++)
            CHECK(send[i] == (float)(sum_f * (double)(i % 13)), "in-place premul [%zu]: %g", i, send[i]);
        /* Device residence: read at each call. */
        OK(dmscRedOpCreatePreMulSum(&op_dev, &scalar, dmscFloat32, dmscScalarDevice, comm));
        CHECK(op_dev != op, "two operators, two values");
        scalar = (float)(me + 1) * 0.5f;
        for (i = 0; i < count * nranks; i++) recv[i] = (float)(i % 5);
        OK(dmscReduceScatter(recv, send, count, dmscFloat32, op_dev, comm, NULL));
        for (i = 0; i < count; i++) {
            double want = sum_f * (double)(((size_t)me * count + i) % 5);
            CHECK(send[i] == (float)want, "premul reduce_scatter [%zu]: %g != %g", i, send[i], want);
        }
        scalar = 1.0f;
        for (i = 0; i < count; i++) send[i] = 2.0f;
        OK(dmscReduce(send, recv, count, dmscFloat32, op_dev, nranks - 1, comm, NULL));
        if (me == nranks - 1)
            for (i = 0; i < count; i++) CHECK(recv[i] == 2.0f * (float)nranks, "premul reduce [%zu]", i);
        EXPECT(dmscAllReduce(send, recv, count, dmscFloat64, op, comm, NULL), dmscInvalidArgument,
               "was created for dmscFloat32 but the call's datatype is dmscFloat64");
        /* No elements, no buffers. */
        OK(dmscAllReduce(NULL, NULL, 0, dmscFloat32, op, comm, NULL));
        /* Issue order: the premultiplication reads its input when its turn comes, after the
         * all_reduce queued before it has written that input. */
        {
            dmscRequest_t q[2];
            double total = nranks * (nranks + 1) / 2.0;
            scalar = 2.0f;
            for (i = 0; i < count; i++) send[i] = (float)(me + 1);
            OK(dmscAllReduceAsync(send, send, count, dmscFloat32, dmscSum, comm, NULL, &q[0]));
            OK(dmscAllReduceAsync(send, recv, count, dmscFloat32, op_dev, comm, NULL, &q[1]));
            OK(dmscWait(q[1]));
            OK(dmscWait(q[0]));
            OK(dmscRequestFree(q[0]));
            OK(dmscRequestFree(q[1]));
            for (i = 0; i < count; i++)
                CHECK(recv[i] == (float)(2.0 * nranks * total), "premul after async sum [%zu]: %g", i, recv[i]);
        }
        OK(dmscRedOpDestroy(op, comm));
        OK(dmscRedOpDestroy(op_dev, comm));
        EXPECT(dmscAllReduce(send, recv, count, dmscFloat32, op, comm, NULL), dmscInvalidArgument,
               "nor an operator created on this communicator");
        EXPECT(dmscRedOpDestroy(op, comm), dmscInvalidArgument, "was not created on this communicator");
        EXPECT(dmscRedOpCreatePreMulSum(&op, &scalar, dmscFloat32, (dmscScalarResidence_t)7, comm),
               dmscInvalidArgument, "residence 7 is not a dmscScalarResidence_t");
        EXPECT(dmscRedOpCreatePreMulSum(NULL, &scalar, dmscFloat32, dmscScalarHostImmediate, comm),
               dmscInvalidArgument, "op is NULL");
        free(send);
        free(recv);
    }
    {
        /* Integers multiply by whole scalars. */
        int64_t scalar = me + 1, x[3] = {1, -2, 3}, y[3];
        dmscRedOp_t op;
        long want = 0;
        for (r = 0; r < nranks; r++) want += r + 1;
        OK(dmscRedOpCreatePreMulSum(&op, &scalar, dmscInt64, dmscScalarHostImmediate, comm));
        OK(dmscAllReduce(x, y, 3, dmscInt64, op, comm, NULL));
        CHECK(y[0] == want && y[1] == -2 * want && y[2] == 3 * want, "premul int64: %lld %lld %lld",
              (long long)y[0], (long long)y[1], (long long)y[2]);
        OK(dmscRedOpDestroy(op, comm));
    }
}

static void test_broadcast_reduce(dmscComm_t comm) {
    const size_t count = 1001;
    int ti, oi, inplace, k = 0;
    for (ti = 0; ti < NTYPES; ti++)
        for (inplace = 0; inplace < 2; inplace++) {
            dmscDataType_t t = TYPES[ti];
            int root = (k++) % nranks;
            size_t i, es = tsize(t);
            char *send = xmalloc(count * es), *recv = xmalloc(count * es);
            for (i = 0; i < count; i++) put(t, send, i, me == root ? (double)(i % 100) : 7);
            memset(recv, 0, count * es);
            if (inplace) {
                OK(dmscBroadcast(send, send, count, t, root, comm, NULL));
                memcpy(recv, send, count * es);
            } else {
                /* Non-roots pass NULL: sendbuff is only read on the root. */
                OK(dmscBroadcast(me == root ? send : NULL, recv, count, t, root, comm, NULL));
            }
            for (i = 0; i < count; i++)
                CHECK(get(t, recv, i) == (double)(i % 100), "broadcast %s root %d [%zu]", tname(t),
                      root, i);
            free(send);
            free(recv);
        }
    for (ti = 0; ti < NTYPES; ti++)
        for (oi = 0; oi < NOPS; oi++)
            for (inplace = 0; inplace < 2; inplace++) {
                dmscDataType_t t = TYPES[ti];
                dmscRedOp_t op = OPS[oi];
                int root = (k++) % nranks;
                size_t i, es = tsize(t);
                char *send = xmalloc(count * es), *recv = xmalloc(count * es);
                for (i = 0; i < count; i++) put(t, send, i, val(op, me, i));
                if (inplace) {
                    OK(dmscReduce(send, send, count, t, op, root, comm, NULL));
                    memcpy(recv, send, count * es);
                } else {
                    /* Non-roots pass NULL: recvbuff is only written on the root. */
                    OK(dmscReduce(send, me == root ? recv : NULL, count, t, op, root, comm, NULL));
                }
                if (me == root)
                    for (i = 0; i < count; i++)
                        CHECK(close_enough(t, get(t, recv, i), expect_reduced(t, op, i)),
                              "reduce %s op %d root %d inplace %d [%zu]", tname(t), (int)op, root,
                              inplace, i);
                free(send);
                free(recv);
            }
}

static void test_gather_scatter(dmscComm_t comm) {
    const size_t count = 1001;
    int ti, oi, inplace;
    for (ti = 0; ti < NTYPES; ti++)
        for (inplace = 0; inplace < 2; inplace++) {
            dmscDataType_t t = TYPES[ti];
            size_t i, es = tsize(t), total = count * (size_t)nranks;
            char *send = xmalloc(count * es), *recv = xmalloc(total * es);
            int r;
            memset(recv, 0, total * es);
            if (inplace) {
                char *mine = recv + (size_t)me * count * es;
                for (i = 0; i < count; i++) put(t, mine, i, (double)(me * 10 + (int)(i % 7)));
                OK(dmscAllGather(mine, recv, count, t, comm, NULL));
            } else {
                for (i = 0; i < count; i++) put(t, send, i, (double)(me * 10 + (int)(i % 7)));
                OK(dmscAllGather(send, recv, count, t, comm, NULL));
            }
            for (r = 0; r < nranks; r++)
                for (i = 0; i < count; i++)
                    CHECK(get(t, recv, (size_t)r * count + i) == (double)(r * 10 + (int)(i % 7)),
                          "all_gather %s inplace %d block %d [%zu]", tname(t), inplace, r, i);
            free(send);
            free(recv);
        }
    for (ti = 0; ti < NTYPES; ti++)
        for (oi = 0; oi < NOPS; oi++)
            for (inplace = 0; inplace < 2; inplace++) {
                dmscDataType_t t = TYPES[ti];
                dmscRedOp_t op = OPS[oi];
                size_t i, es = tsize(t), total = count * (size_t)nranks;
                char *send = xmalloc(total * es), *recv = xmalloc(count * es);
                const char *out;
                for (i = 0; i < total; i++) put(t, send, i, val(op, me, i));
                if (inplace) {
                    out = send + (size_t)me * count * es;
                    OK(dmscReduceScatter(send, (void *)out, count, t, op, comm, NULL));
                } else {
                    out = recv;
                    OK(dmscReduceScatter(send, recv, count, t, op, comm, NULL));
                }
                for (i = 0; i < count; i++) {
                    size_t g = (size_t)me * count + i;
                    CHECK(close_enough(t, get(t, out, i), expect_reduced(t, op, g)),
                          "reduce_scatter %s op %d inplace %d [%zu]", tname(t), (int)op, inplace, i);
                }
                free(send);
                free(recv);
            }
}

static void test_all_to_all(dmscComm_t comm) {
    const size_t count = 251;
    const dmscDataType_t ts[] = {dmscInt8, dmscFloat16, dmscInt32, dmscFloat64};
    int ti, inplace, r;
    for (ti = 0; ti < 4; ti++)
        for (inplace = 0; inplace < 2; inplace++) {
            dmscDataType_t t = ts[ti];
            size_t i, es = tsize(t), total = count * (size_t)nranks;
            char *send = xmalloc(total * es), *recv = xmalloc(total * es);
            /* Block j goes to rank j: value 10 * me + j (+ i % 3). */
            for (r = 0; r < nranks; r++)
                for (i = 0; i < count; i++)
                    put(t, send, (size_t)r * count + i, (double)(10 * me + r + (int)(i % 3)));
            if (inplace) {
                OK(dmscAllToAll(send, send, count, t, comm, NULL));
                memcpy(recv, send, total * es);
            } else {
                OK(dmscAllToAll(send, recv, count, t, comm, NULL));
            }
            for (r = 0; r < nranks; r++)
                for (i = 0; i < count; i++)
                    CHECK(get(t, recv, (size_t)r * count + i) == (double)(10 * r + me + (int)(i % 3)),
                          "all_to_all %s inplace %d from %d [%zu]", tname(t), inplace, r, i);
            free(send);
            free(recv);
        }
}

/* Elements rank a sends to rank b in the all-to-all-v test (symmetric in a and b). */
static size_t a2av_count(int a, int b) { return (size_t)((a + b) % 3) + 1; }

static void test_all_to_all_v(dmscComm_t comm) {
    int inplace, r;
    size_t *sc = xmalloc(sizeof(size_t) * nranks), *sd = xmalloc(sizeof(size_t) * nranks);
    size_t *rc = xmalloc(sizeof(size_t) * nranks), *rd = xmalloc(sizeof(size_t) * nranks);
    size_t send_end = 0, recv_end = 0, k;
    for (r = 0; r < nranks; r++) {
        sc[r] = a2av_count(me, r);
        sd[r] = send_end + 1; /* a one-element gap before each block */
        send_end = sd[r] + sc[r];
        rc[r] = a2av_count(r, me);
        rd[r] = recv_end + 1;
        recv_end = rd[r] + rc[r];
    }
    for (inplace = 0; inplace < 2; inplace++) {
        size_t n = send_end > recv_end ? send_end : recv_end;
        int32_t *send = xmalloc(n * 4), *recv = xmalloc(n * 4);
        memset(recv, 0, n * 4);
        for (r = 0; r < nranks; r++)
            for (k = 0; k < sc[r]; k++) send[sd[r] + k] = me * 1000 + r * 100 + (int32_t)k;
        if (inplace) {
            /* In place: counts and displacements are symmetric here (MPI_IN_PLACE style). */
            OK(dmscAllToAllv(send, sc, sd, send, rc, rd, dmscInt32, comm, NULL));
            memcpy(recv, send, n * 4);
        } else {
            OK(dmscAllToAllv(send, sc, sd, recv, rc, rd, dmscInt32, comm, NULL));
        }
        for (r = 0; r < nranks; r++)
            for (k = 0; k < rc[r]; k++)
                CHECK(recv[rd[r] + k] == r * 1000 + me * 100 + (int32_t)k,
                      "all_to_all_v inplace %d from %d [%zu]: %d", inplace, r, k, recv[rd[r] + k]);
        free(send);
        free(recv);
    }
    free(sc);
    free(sd);
    free(rc);
    free(rd);
}

/* ---------- send/recv and groups ---------- */

static void fill_f32(float *b, size_t n, float base) {
    size_t i;
    for (i = 0; i < n; i++) b[i] = base + (float)i;
}

static void check_f32(const float *b, size_t n, float base, const char *what) {
    size_t i;
    for (i = 0; i < n; i++) CHECK(b[i] == base + (float)i, "%s [%zu]: %g", what, i, b[i]);
}

static void test_groups(dmscComm_t comm, dmscComm_t other) {
    const size_t count = 1003;
    int right = (me + 1) % nranks, left = (me + nranks - 1) % nranks;
    float *out = xmalloc(count * 4), *in = xmalloc(count * 4), *ar = xmalloc(count * 4);
    int32_t x[3], y[3];

    /* Ring: every rank sends first, then receives; the group makes them concurrent. */
    fill_f32(out, count, (float)me * 10000);
    OK(dmscGroupStart());
    OK(dmscSend(out, count, dmscFloat32, right, comm, NULL));
    OK(dmscRecv(in, count, dmscFloat32, left, comm, NULL));
    OK(dmscGroupEnd());
    check_f32(in, count, (float)left * 10000, "group ring");

    /* Nested groups: only the outermost end runs the operations. */
    memset(in, 0, count * 4);
    OK(dmscGroupStart());
    OK(dmscGroupStart());
    OK(dmscSend(out, count, dmscFloat32, right, comm, NULL));
    OK(dmscGroupEnd());
    OK(dmscRecv(in, count, dmscFloat32, left, comm, NULL));
    OK(dmscGroupEnd());
    check_f32(in, count, (float)left * 10000, "nested group ring");

    /* A collective and sends/receives in one group, over two communicators, plus a send to
     * this rank itself; element types mix (bytes must match). */
    fill_f32(ar, count, 1);
    x[0] = me; x[1] = me + 1; x[2] = me + 2;
    OK(dmscGroupStart());
    OK(dmscRecv(in, count, dmscFloat32, left, comm, NULL));
    OK(dmscAllReduce(ar, ar, count, dmscFloat32, dmscSum, comm, NULL));
    OK(dmscSend(out, count, dmscFloat32, right, comm, NULL));
    OK(dmscBarrier(other, NULL));
    OK(dmscSend(x, 3, dmscInt32, me, comm, NULL));
    OK(dmscRecv(y, 12, dmscUint8, me, comm, NULL));
    OK(dmscGroupEnd());
    check_f32(in, count, (float)left * 10000, "mixed group ring");
    {
        size_t i;
        for (i = 0; i < count; i++)
            CHECK(ar[i] == (float)nranks * (1 + (float)i), "group all_reduce [%zu]", i);
    }
    CHECK(y[0] == me && y[1] == me + 1 && y[2] == me + 2, "send to self");

    /* Plain blocking send/recv in pairs (0<->1, 2<->3): the lower rank sends first. */
    if ((me ^ 1) < nranks) {
        int peer = me ^ 1;
        if (me < peer) {
            OK(dmscSend(out, count, dmscFloat32, peer, comm, NULL));
            OK(dmscRecv(in, count, dmscFloat32, peer, comm, NULL));
        } else {
            OK(dmscRecv(in, count, dmscFloat32, peer, comm, NULL));
            OK(dmscSend(out, count, dmscFloat32, peer, comm, NULL));
        }
        check_f32(in, count, (float)peer * 10000, "pair send/recv");
    }
    free(out);
    free(in);
    free(ar);
}

/* ---------- non-blocking ---------- */

static void wait_all(dmscRequest_t *reqs, int n) {
    int i;
    for (i = n - 1; i >= 0; i--) { /* any order works */
        OK(dmscWait(reqs[i]));
        OK(dmscRequestFree(reqs[i]));
    }
}

static void test_async(dmscComm_t comm) {
    const size_t count = 1u << 16, small = 1001;
    size_t i, total = small * (size_t)nranks;
    float *a = xmalloc(count * 4), *b = xmalloc(count * 4), *c = xmalloc(count * 4);
    float *big = xmalloc(total * 4), *big2 = xmalloc(total * 4);
    dmscRequest_t req, reqs[8];
    int done = 0, polls = 0, r;
    size_t *cnt = xmalloc(sizeof(size_t) * nranks), *dsp = xmalloc(sizeof(size_t) * nranks);

    /* Test until done, then Wait and Test again give the same (successful) result. */
    fill_f32(a, count, (float)me);
    OK(dmscAllReduceAsync(a, b, count, dmscFloat32, dmscMax, comm, NULL, &req));
    CHECK(req != NULL, "request handle");
    while (!done) {
        OK(dmscTest(req, &done));
        polls++;
    }
    OK(dmscWait(req));
    OK(dmscTest(req, &done));
    CHECK(done == 1, "done stays 1");
    OK(dmscRequestFree(req));
    check_f32(b, count, (float)(nranks - 1), "all_reduce async");
    (void)polls;

    /* Several outstanding requests, waited in reverse order. */
    fill_f32(a, count, 1);
    fill_f32(c, count, 2);
    OK(dmscAllReduceAsync(a, a, count, dmscFloat32, dmscSum, comm, NULL, &reqs[0]));
    OK(dmscBroadcastAsync(c, c, count, dmscFloat32, nranks - 1, comm, NULL, &reqs[1]));
    OK(dmscBarrierAsync(comm, NULL, &reqs[2]));
    wait_all(reqs, 3);
    for (i = 0; i < count; i++) CHECK(a[i] == (float)nranks * (1 + (float)i), "async sum [%zu]", i);
    check_f32(c, count, 2, "async broadcast");

    /* Every other Async variant. */
    for (i = 0; i < small; i++) a[i] = (float)(me + 1);
    OK(dmscReduceAsync(a, b, small, dmscFloat32, dmscProd, 0, comm, NULL, &reqs[0]));
    OK(dmscAllGatherAsync(a, big, small, dmscFloat32, comm, NULL, &reqs[1]));
    for (i = 0; i < total; i++) big2[i] = 1;
    OK(dmscReduceScatterAsync(big2, c, small, dmscFloat32, dmscSum, comm, NULL, &reqs[2]));
    wait_all(reqs, 3);
    if (me == 0) {
        float f = 1;
        for (r = 1; r <= nranks; r++) f *= (float)r;
        for (i = 0; i < small; i++) CHECK(b[i] == f, "async reduce [%zu]", i);
    }
    for (i = 0; i < total; i++) CHECK(big[i] == (float)(i / small + 1), "async all_gather [%zu]", i);
    for (i = 0; i < small; i++) CHECK(c[i] == (float)nranks, "async reduce_scatter [%zu]", i);

    for (i = 0; i < total; i++) big[i] = (float)(me * 100 + (int)(i / small));
    OK(dmscAllToAllAsync(big, big2, small, dmscFloat32, comm, NULL, &reqs[0]));
    for (r = 0; r < nranks; r++) { cnt[r] = 2; dsp[r] = (size_t)r * 2; }
    for (i = 0; i < (size_t)nranks * 2; i++) a[i] = (float)(me * 100 + (int)(i / 2));
    OK(dmscAllToAllvAsync(a, cnt, dsp, b, cnt, dsp, dmscFloat32, comm, NULL, &reqs[1]));
    wait_all(reqs, 2);
    for (i = 0; i < total; i++)
        CHECK(big2[i] == (float)((int)(i / small) * 100 + me), "async all_to_all [%zu]", i);
    for (i = 0; i < (size_t)nranks * 2; i++)
        CHECK(b[i] == (float)((int)(i / 2) * 100 + me), "async all_to_all_v [%zu]", i);

    /* Send/recv requests run in call order per communicator: pair them up accordingly. */
    if ((me ^ 1) < nranks) {
        int peer = me ^ 1;
        fill_f32(a, small, (float)me * 7);
        if (me < peer) {
            OK(dmscSendAsync(a, small, dmscFloat32, peer, comm, NULL, &reqs[0]));
            OK(dmscRecvAsync(b, small, dmscFloat32, peer, comm, NULL, &reqs[1]));
        } else {
            OK(dmscRecvAsync(b, small, dmscFloat32, peer, comm, NULL, &reqs[0]));
            OK(dmscSendAsync(a, small, dmscFloat32, peer, comm, NULL, &reqs[1]));
        }
        wait_all(reqs, 2);
        check_f32(b, small, (float)peer * 7, "async send/recv");
    }

    /* Freeing an unfinished request waits for it: the buffer is complete afterwards. */
    fill_f32(a, count, 3);
    OK(dmscAllReduceAsync(a, a, count, dmscFloat32, dmscSum, comm, NULL, &req));
    OK(dmscRequestFree(req));
    for (i = 0; i < count; i++) CHECK(a[i] == (float)nranks * (3 + (float)i), "freed request [%zu]", i);
    EXPECT(dmscWait(req), dmscInvalidUsage, "dmscWait: request");
    EXPECT(dmscRequestFree(req), dmscInvalidUsage, "dmscRequestFree: request");
    EXPECT(dmscTest(req, &done), dmscInvalidUsage, "dmscTest: request");

    free(a); free(b); free(c); free(big); free(big2); free(cnt); free(dsp);
}

/* ---------- communicators ---------- */

static void test_unique_id(dmscComm_t world) {
    dmscUniqueId id;
    dmscComm_t c = NULL;
    dmscConfig_t cfg = DMSC_CONFIG_INITIALIZER;
    int n = -1, r = -1, k;
    float x = 1, sum = 0;

    /* Rank 0 makes the id; the world communicator carries it to the others. */
    for (k = 0; k < 2; k++) {
        memset(&id, 0, sizeof id);
        if (me == 0) OK(dmscGetUniqueId(&id));
        OK(dmscBroadcast(&id, &id, sizeof id, dmscUint8, 0, world, NULL));
        if (k == 0) {
            cfg.timeoutMs = 60000;
            cfg.nPaths = 1;
            cfg.chunkBytes = 4096;
            cfg.transport = "auto";
            OK(dmscCommInitRankConfig(&c, nranks, id, me, &cfg));
        } else {
            /* Ranks in reverse order: the rank comes from the caller, not the launcher. */
            OK(dmscCommInitRank(&c, nranks, id, nranks - 1 - me));
        }
        OK(dmscCommCount(c, &n));
        OK(dmscCommUserRank(c, &r));
        CHECK(n == nranks && r == (k == 0 ? me : nranks - 1 - me), "id comm %d: %d of %d", k, r, n);
        x = (float)(r + 1);
        OK(dmscAllReduce(&x, &sum, 1, dmscFloat32, dmscSum, c, NULL));
        CHECK(sum == (float)(nranks * (nranks + 1) / 2), "id comm all_reduce %g", sum);
        OK(dmscCommDestroy(c));
    }
}

static void test_split(dmscComm_t world) {
    dmscComm_t sub = NULL, rest = NULL;
    dmscConfig_t cfg = DMSC_CONFIG_INITIALIZER;
    int n, r, q, want_n = 0, want_r = 0;
    int32_t mine = me, sum = 0, want_sum = 0;

    /* Even and odd ranks, each ordered by descending parent rank (key = -rank). */
    OK(dmscCommSplit(world, me % 2, -me, &sub, NULL));
    CHECK(sub != NULL, "split comm");
    for (q = 0; q < nranks; q++)
        if (q % 2 == me % 2) {
            want_n++;
            want_sum += q;
            if (q > me) want_r++;
        }
    OK(dmscCommCount(sub, &n));
    OK(dmscCommUserRank(sub, &r));
    CHECK(n == want_n && r == want_r, "split: rank %d of %d, want %d of %d", r, n, want_r, want_n);
    OK(dmscAllReduce(&mine, &sum, 1, dmscInt32, dmscSum, sub, NULL));
    CHECK(sum == want_sum, "split all_reduce %d != %d", sum, want_sum);

    /* Groups over two communicators. */
    test_groups(world, sub);
    OK(dmscCommDestroy(sub));

    /* NOCOLOR: rank 0 joins nothing; the others form one communicator (with a config). */
    cfg.timeoutMs = 60000;
    OK(dmscCommSplit(world, me == 0 ? DMSC_SPLIT_NOCOLOR : 7, 0, &rest, &cfg));
    if (me == 0) {
        CHECK(rest == NULL, "NOCOLOR gives NULL");
    } else {
        OK(dmscCommCount(rest, &n));
        OK(dmscCommUserRank(rest, &r));
        CHECK(n == nranks - 1 && r == me - 1, "rest: %d of %d", r, n);
        OK(dmscBarrier(rest, NULL));
        OK(dmscCommDestroy(rest));
    }
}

/* Shrink: the last rank leaves (here alive; normally lost), the others go on without it. */
static void test_shrink(dmscComm_t world) {
    dmscComm_t small = NULL, sub = NULL;
    int last = nranks - 1, bad = nranks, n, r;
    int32_t mine = me, sum = 0;

    if (me != last) {
        EXPECT(dmscCommShrink(world, &bad, 1, &small, NULL, DMSC_SHRINK_DEFAULT), dmscInvalidArgument,
               "dmscCommShrink: excluded rank");
        EXPECT(dmscCommShrink(world, &me, 1, &small, NULL, DMSC_SHRINK_DEFAULT), dmscInvalidArgument,
               "own exclude list");
        EXPECT(dmscCommShrink(world, NULL, 1, &small, NULL, DMSC_SHRINK_DEFAULT), dmscInvalidArgument,
               "excludeRanksList is NULL");
        EXPECT(dmscCommShrink(world, &last, 1, &small, NULL, 7), dmscInvalidArgument, "flags 7");
        CHECK(small == NULL, "no communicator on error");
        OK(dmscCommShrink(world, &last, 1, &small, NULL, DMSC_SHRINK_DEFAULT));
        OK(dmscCommCount(small, &n));
        OK(dmscCommUserRank(small, &r));
        CHECK(n == nranks - 1 && r == me, "shrunk: rank %d of %d", r, n);
        OK(dmscAllReduce(&mine, &sum, 1, dmscInt32, dmscSum, small, NULL));
        CHECK(sum == (nranks - 1) * (nranks - 2) / 2, "shrunk all_reduce %d", sum);
        OK(dmscCommDestroy(small));
    }
    /* A split communicator has no store to shrink through. */
    OK(dmscCommSplit(world, 0, 0, &sub, NULL));
    if (me != last)
        EXPECT(dmscCommShrink(sub, &last, 1, &small, NULL, DMSC_SHRINK_DEFAULT), dmscInvalidUsage,
               "made by split");
    OK(dmscCommDestroy(sub));
    OK(dmscBarrier(world, NULL));
}

/* ---------- path metrics (packet spraying) ---------- */

/* The paths per peer this run asked for: DMSC_PATHS, else 1. */
static int env_paths(void) {
    const char *v = getenv("DMSC_PATHS");
    return v && *v ? atoi(v) : 1;
}

static void nap_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* Fetch every entry of `comm` into a fresh array (with `size` set), checking the count first
   reported with capacity 0. */
static dmscPathMetrics_t *get_path_metrics(dmscComm_t comm, int *count) {
    dmscPathMetrics_t *m;
    int n = -1, again = -1;
    OK(dmscCommGetPathMetrics(comm, NULL, 0, &n));
    CHECK(n >= 0, "count %d", n);
    m = xmalloc(((size_t)n + 1) * sizeof *m);
    memset(m, 0, ((size_t)n + 1) * sizeof *m);
    m[0].size = sizeof *m;
    m[n].peer = -7; /* sentinel: never written */
    OK(dmscCommGetPathMetrics(comm, m, n, &again));
    CHECK(again == n, "count changed from %d to %d", n, again);
    CHECK(m[n].peer == -7, "wrote past capacity");
    *count = n;
    return m;
}

/* The main run: with one path per peer (the default) there are no metrics; with
   DMSC_PATHS=k > 1 set by the caller, k per peer. */
static void test_path_metrics_count(dmscComm_t world) {
    dmscPathMetrics_t m[2];
    int n = -1, k = env_paths(), want = k > 1 ? (nranks - 1) * k : 0;
    memset(m, 0, sizeof m);
    OK(dmscCommGetPathMetrics(world, NULL, 0, &n));
    CHECK(n == want, "%d path entries with DMSC_PATHS=%d, expected %d", n, k, want);
    m[0].size = sizeof m[0];
    m[0].peer = -7;
    n = -1;
    OK(dmscCommGetPathMetrics(world, m, want > 0 ? 1 : 2, &n));
    CHECK(n == want, "count %d, expected %d", n, want);
    CHECK(want > 0 || m[0].peer == -7, "nothing written with one path per peer");
}

/* Run with DMSC_PATHS=k > 1 and DMSC_CMA=0: k paths to every peer, all up, and after bulk
   traffic to every peer each peer's paths have acknowledged bytes. */
static void test_path_metrics_spray(dmscComm_t world, int k) {
    const size_t count = (size_t)3 << 20; /* 12 MiB of float32 */
    float *a = xmalloc(count * 4), *b = xmalloc(count * 4);
    dmscPathMetrics_t *m, one[2];
    int n, i, r, tries;
    size_t j;

    /* The progress thread publishes the first snapshot within its idle period (50 ms) of
       init, or at the first operation. */
    OK(dmscBarrier(world, NULL));
    for (tries = 0;; tries++) {
        OK(dmscCommGetPathMetrics(world, NULL, 0, &n));
        if (n != 0 || tries == 500) break;
        nap_ms(10);
    }
    m = get_path_metrics(world, &n);
    CHECK(n == (nranks - 1) * k, "%d path entries, expected (%d - 1) * %d", n, nranks, k);
    for (i = 0; i < n; i++) {
        int peer = i / k + (i / k >= me), path = i % k;
        CHECK(m[i].peer == peer && m[i].path == path, "entry %d is peer %d path %d, expected %d/%d",
              i, m[i].peer, m[i].path, peer, path);
        CHECK(m[i].size == sizeof m[i], "entry %d size %zu", i, m[i].size);
        CHECK(m[i].state == DMSC_PATH_UP, "peer %d path %d is %d, not up (last failure: %s)",
              m[i].peer, m[i].path, m[i].state, m[i].lastFailure);
        CHECK(m[i].epoch >= 1, "epoch %u", m[i].epoch);
        CHECK(memchr(m[i].lastFailure, 0, sizeof m[i].lastFailure) != NULL, "lastFailure ends");
        CHECK(m[i].lastChangeSeconds >= 0, "lastChangeSeconds %g", m[i].lastChangeSeconds);
    }
    free(m);

    /* A capacity smaller than the count: that many written, the whole count reported. */
    memset(one, 0, sizeof one);
    one[0].size = sizeof one[0];
    one[1].peer = -7;
    OK(dmscCommGetPathMetrics(world, one, 1, &n));
    CHECK(n == (nranks - 1) * k && one[0].peer == (me == 0 ? 1 : 0) && one[1].peer == -7,
          "capacity 1: count %d, first peer %d", n, one[0].peer);

    /* Bulk traffic: all-reduces (ring neighbours) and an all-to-all (every peer). */
    for (r = 0; r < 3; r++) {
        fill_f32(a, count, (float)r);
        OK(dmscAllReduce(a, a, count, dmscFloat32, dmscSum, world, NULL));
        for (j = 0; j < count; j += 4093)
            CHECK(a[j] == (float)nranks * ((float)r + (float)j), "spray all_reduce [%zu]", j);
    }
    fill_f32(a, count, 0);
    OK(dmscAllToAll(a, b, count / (size_t)nranks, dmscFloat32, world, NULL));

    /* Acknowledgements reach the snapshot within a few milliseconds; allow 10 s. */
    for (tries = 0;; tries++) {
        int missing = -1;
        m = get_path_metrics(world, &n);
        CHECK(n == (nranks - 1) * k, "%d path entries after traffic", n);
        for (i = 0; i < n && missing < 0; i += k) {
            uint64_t acked = 0, sent = 0;
            int p;
            for (p = 0; p < k; p++) {
                acked += m[i + p].bytesAcked;
                sent += m[i + p].bytesSent;
                CHECK(m[i + p].bytesAcked <= m[i + p].bytesSent, "peer %d path %d acked %llu > sent %llu",
                      m[i + p].peer, p, (unsigned long long)m[i + p].bytesAcked,
                      (unsigned long long)m[i + p].bytesSent);
            }
            if (acked == 0 || sent == 0) missing = m[i].peer;
        }
        free(m);
        if (missing < 0) break;
        CHECK(tries < 1000, "no bytes acknowledged on the paths to peer %d after the traffic", missing);
        nap_ms(10);
    }
    OK(dmscBarrier(world, NULL));
    free(a);
    free(b);
}

/* Operation errors: a mismatch, a timeout, an abort from another thread. */

static void test_mismatch(dmscComm_t world) {
    dmscComm_t c;
    dmscResult_t async = dmscSuccess;
    float buf[128] = {0};
    OK(dmscCommSplit(world, 0, 0, &c, NULL));
    OK(dmscCommGetAsyncError(c, &async));
    CHECK(async == dmscSuccess, "healthy comm");
    EXPECT(dmscAllReduce(buf, buf, me == 0 ? 101 : 100, dmscFloat32, dmscSum, c, NULL), dmscMismatch,
           "count 10");
    OK(dmscCommGetAsyncError(c, &async));
    CHECK(async == dmscMismatch, "async error %d", (int)async);
    EXPECT(dmscBarrier(c, NULL), dmscMismatch, "dmscBarrier: mismatch");
    OK(dmscCommDestroy(c));
}

static void test_timeout(dmscComm_t world) {
    dmscComm_t c;
    dmscConfig_t cfg = DMSC_CONFIG_INITIALIZER;
    float x = 1;
    cfg.timeoutMs = 1000;
    OK(dmscCommSplit(world, 0, 0, &c, &cfg));
    if (me == 0)
        EXPECT(dmscAllReduce(&x, &x, 1, dmscFloat32, dmscSum, c, NULL), dmscTimeout,
               "dmscAllReduce: timeout");
    OK(dmscBarrier(world, NULL));
    OK(dmscCommDestroy(c));
}

struct abort_arg {
    dmscComm_t comm;
    dmscResult_t result;
};

static void *abort_later(void *p) {
    struct abort_arg *a = p;
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    a->result = dmscCommAbort(a->comm);
    return NULL;
}

static void test_abort(dmscComm_t world) {
    dmscComm_t c;
    float x = 1;
    OK(dmscCommSplit(world, 0, 0, &c, NULL));
    if (me == 0) {
        /* Blocked alone in an all-reduce; another thread aborts it. */
        struct abort_arg a;
        pthread_t th;
        a.comm = c;
        a.result = dmscInternalError;
        CHECK(pthread_create(&th, NULL, abort_later, &a) == 0, "pthread_create");
        EXPECT(dmscAllReduce(&x, &x, 1, dmscFloat32, dmscSum, c, NULL), dmscAborted, "dmscAllReduce: aborted");
        CHECK(pthread_join(th, NULL) == 0, "pthread_join");
        CHECK(a.result == dmscSuccess, "dmscCommAbort from another thread: %d", (int)a.result);
        OK(dmscBarrier(world, NULL));
    } else {
        OK(dmscBarrier(world, NULL));
        OK(dmscCommAbort(c));
    }
    EXPECT(dmscAllReduce(&x, &x, 1, dmscFloat32, dmscSum, c, NULL), dmscInvalidUsage,
           "dmscAllReduce: comm");
    EXPECT(dmscCommAbort(c), dmscInvalidUsage, "dmscCommAbort: comm");
}

static void test_destroy_with_pending_request(dmscComm_t world) {
    dmscComm_t c;
    dmscRequest_t req;
    const size_t count = 1u << 18;
    float *a = xmalloc(count * 4);
    size_t i;
    OK(dmscCommSplit(world, 0, 0, &c, NULL));
    fill_f32(a, count, 5);
    OK(dmscAllReduceAsync(a, a, count, dmscFloat32, dmscSum, c, NULL, &req));
    OK(dmscCommDestroy(c)); /* waits for the operation */
    OK(dmscWait(req));      /* the request outlives its communicator */
    OK(dmscRequestFree(req));
    for (i = 0; i < count; i++) CHECK(a[i] == (float)nranks * (5 + (float)i), "destroy waited [%zu]", i);
    free(a);
}

/* ---------- argument errors ---------- */

static void test_errors(dmscComm_t world) {
    float buf[64], buf2[64];
    int32_t ibuf[64];
    dmscComm_t dead = NULL, bogus = (dmscComm_t)(uintptr_t)0xdead0000u, nc = (dmscComm_t)1;
    dmscRequest_t req = (dmscRequest_t)1;
    dmscUniqueId zero_id;
    dmscConfig_t cfg = DMSC_CONFIG_INITIALIZER;
    int v, done;
    size_t cnt[64], dsp[64];
    memset(buf, 0, sizeof buf);
    memset(buf2, 0, sizeof buf2);
    memset(&zero_id, 0, sizeof zero_id);
    for (v = 0; v < 64; v++) { cnt[v] = 1; dsp[v] = (size_t)v; }

    /* NULL pointers. */
    EXPECT(dmscAllReduce(NULL, buf, 4, dmscFloat32, dmscSum, world, NULL), dmscInvalidArgument,
           "dmscAllReduce: sendbuff is NULL");
    EXPECT(dmscAllReduce(buf, NULL, 4, dmscFloat32, dmscSum, world, NULL), dmscInvalidArgument,
           "dmscAllReduce: recvbuff is NULL");
    EXPECT(dmscAllReduce(buf, buf2, 4, dmscFloat32, dmscSum, NULL, NULL), dmscInvalidArgument,
           "dmscAllReduce: comm is NULL");
    EXPECT(dmscBroadcast(buf, NULL, 4, dmscFloat32, 0, world, NULL), dmscInvalidArgument,
           "dmscBroadcast: recvbuff is NULL");
    EXPECT(dmscAllGather(NULL, buf2, 4, dmscFloat32, world, NULL), dmscInvalidArgument,
           "dmscAllGather: sendbuff is NULL");
    EXPECT(dmscSend(NULL, 4, dmscFloat32, 0, world, NULL), dmscInvalidArgument,
           "dmscSend: sendbuff is NULL");
    EXPECT(dmscAllToAllv(buf, NULL, dsp, buf2, cnt, dsp, dmscFloat32, world, NULL),
           dmscInvalidArgument, "dmscAllToAllv: sendcounts is NULL");
    EXPECT(dmscAllToAllv(buf, cnt, dsp, buf2, cnt, NULL, dmscFloat32, world, NULL),
           dmscInvalidArgument, "dmscAllToAllv: rdispls is NULL");
    EXPECT(dmscCommCount(world, NULL), dmscInvalidArgument, "dmscCommCount: count is NULL");
    EXPECT(dmscCommUserRank(world, NULL), dmscInvalidArgument, "dmscCommUserRank: rank is NULL");
    EXPECT(dmscCommGetAsyncError(world, NULL), dmscInvalidArgument,
           "dmscCommGetAsyncError: asyncError is NULL");
    EXPECT(dmscCommGetPathMetrics(world, NULL, 0, NULL), dmscInvalidArgument,
           "dmscCommGetPathMetrics: count is NULL");
    EXPECT(dmscCommGetPathMetrics(world, NULL, 1, &v), dmscInvalidArgument,
           "dmscCommGetPathMetrics: out is NULL");
    {
        /* Topology: every rank of this test runs on one host, whose links are not probed. */
        int hosts = -1, host = -1, size = 0;
        double lat = 0, gbs = 0;
        char name[256], tiny[1];
        OK(dmscCommCount(world, &size));
        OK(dmscCommHostCount(world, &hosts));
        CHECK(hosts == 1, "dmscCommHostCount: %d hosts, expected 1", hosts);
        OK(dmscCommHostOf(world, size - 1, &host));
        CHECK(host == 0, "dmscCommHostOf: rank %d on host %d", size - 1, host);
        OK(dmscCommHostName(world, 0, name, sizeof name));
        CHECK(name[0] != 0, "dmscCommHostName: empty name");
        OK(dmscCommLink(world, 0, 0, &lat, &gbs));
        CHECK(isnan(lat) && isnan(gbs), "dmscCommLink: one host, yet measured %g us %g GB/s",
              lat, gbs);
        EXPECT(dmscCommHostOf(world, size, &host), dmscInvalidArgument,
               "dmscCommHostOf: rank");
        EXPECT(dmscCommHostCount(world, NULL), dmscInvalidArgument,
               "dmscCommHostCount: count is NULL");
        EXPECT(dmscCommLink(world, 0, 1, &lat, &gbs), dmscInvalidArgument,
               "dmscCommLink: hostB 1 is not a host");
        EXPECT(dmscCommHostName(world, 0, tiny, sizeof tiny), dmscInvalidArgument,
               "dmscCommHostName: len 1 is too small");
    }
    EXPECT(dmscCommGetPathMetrics(NULL, NULL, 0, &v), dmscInvalidArgument,
           "dmscCommGetPathMetrics: comm is NULL");
    EXPECT(dmscGetVersion(NULL), dmscInvalidArgument, "dmscGetVersion: version is NULL");
    EXPECT(dmscGetUniqueId(NULL), dmscInvalidArgument, "dmscGetUniqueId: uniqueId is NULL");
    EXPECT(dmscCommInitFromEnv(NULL, NULL), dmscInvalidArgument, "dmscCommInitFromEnv: comm is NULL");
    EXPECT(dmscCommSplit(world, 0, 0, NULL, NULL), dmscInvalidArgument, "dmscCommSplit: newcomm is NULL");
    EXPECT(dmscAllReduceAsync(buf, buf, 4, dmscFloat32, dmscSum, world, NULL, NULL),
           dmscInvalidArgument, "dmscAllReduceAsync: request is NULL");
    EXPECT(dmscWait(NULL), dmscInvalidArgument, "dmscWait: request is NULL");
    EXPECT(dmscRequestFree(NULL), dmscInvalidArgument, "dmscRequestFree: request is NULL");
    EXPECT(dmscTest(req, NULL), dmscInvalidArgument, "dmscTest: done is NULL");
    /* NULL buffers with a count of 0 are fine (nothing to read or write). */
    OK(dmscAllReduce(NULL, NULL, 0, dmscFloat32, dmscSum, world, NULL));

    /* Unknown enum values. */
    EXPECT(dmscAllReduce(buf, buf2, 4, (dmscDataType_t)99, dmscSum, world, NULL),
           dmscInvalidArgument, "dmscAllReduce: datatype 99");
    EXPECT(dmscAllReduce(buf, buf2, 4, dmscFloat32, (dmscRedOp_t)99, world, NULL),
           dmscInvalidArgument, "dmscAllReduce: op 99");
    EXPECT(dmscReduceScatter(buf, buf2, 1, dmscFloat32, (dmscRedOp_t)-1, world, NULL),
           dmscInvalidArgument, "dmscReduceScatter: op -1");
    EXPECT(dmscSend(buf, 4, (dmscDataType_t)10, 0, world, NULL), dmscInvalidArgument,
           "dmscSend: datatype 10");

    /* Counts that overflow. */
    {
        dmscPathMetrics_t pm;
        memset(&pm, 0, sizeof pm);
        EXPECT(dmscCommGetPathMetrics(world, &pm, -1, &v), dmscInvalidArgument,
               "dmscCommGetPathMetrics: capacity -1 is negative");
        pm.size = 8; /* not this header's sizeof */
        EXPECT(dmscCommGetPathMetrics(world, &pm, 1, &v), dmscInvalidArgument,
               "dmscCommGetPathMetrics: out[0].size is 8");
    }
    EXPECT(dmscAllReduce(buf, buf2, SIZE_MAX, dmscFloat32, dmscSum, world, NULL),
           dmscInvalidArgument, "dmscAllReduce: count");
    EXPECT(dmscAllReduce(buf, buf2, SIZE_MAX, dmscInt8, dmscSum, world, NULL),
           dmscInvalidArgument, "dmscAllReduce: count");
    EXPECT(dmscAllGather(buf, buf2, SIZE_MAX / 2, dmscUint8, world, NULL), dmscInvalidArgument,
           "dmscAllGather: sendcount");
    EXPECT(dmscReduceScatter(buf, buf2, SIZE_MAX / 3, dmscInt8, dmscSum, world, NULL),
           dmscInvalidArgument, "dmscReduceScatter: recvcount");
    EXPECT(dmscAllToAll(buf, buf2, SIZE_MAX / (size_t)nranks + 1, dmscInt8, world, NULL),
           dmscInvalidArgument, "dmscAllToAll: count");
    EXPECT(dmscRecv(buf, SIZE_MAX, dmscFloat64, 0, world, NULL), dmscInvalidArgument,
           "dmscRecv: count");
    cnt[1] = SIZE_MAX;
    EXPECT(dmscAllToAllv(buf, cnt, dsp, buf2, cnt, dsp, dmscFloat32, world, NULL),
           dmscInvalidArgument, "sendcounts[1] + sdispls[1]");
    cnt[1] = 1;

    /* Ranks out of range. */
    EXPECT(dmscBroadcast(buf, buf, 4, dmscFloat32, nranks, world, NULL), dmscInvalidArgument,
           "dmscBroadcast: root");
    EXPECT(dmscBroadcast(buf, buf, 4, dmscFloat32, -1, world, NULL), dmscInvalidArgument,
           "dmscBroadcast: root -1");
    EXPECT(dmscReduce(buf, buf2, 4, dmscFloat32, dmscSum, nranks + 5, world, NULL),
           dmscInvalidArgument, "dmscReduce: root");
    EXPECT(dmscSend(buf, 4, dmscFloat32, nranks, world, NULL), dmscInvalidArgument,
           "dmscSend: peer");
    EXPECT(dmscRecv(buf, 4, dmscFloat32, -1, world, NULL), dmscInvalidArgument, "dmscRecv: peer -1");
    EXPECT(dmscSendAsync(buf, 4, dmscFloat32, nranks, world, NULL, &req), dmscInvalidArgument,
           "dmscSendAsync: peer");
    CHECK(req == NULL, "a failed Async call sets *request to NULL");

    /* Overlaps and alignment. */
    EXPECT(dmscAllReduce(buf, buf + 1, 8, dmscFloat32, dmscSum, world, NULL), dmscInvalidArgument,
           "overlap");
    EXPECT(dmscAllGather(buf + 1, buf, 8, dmscFloat32, world, NULL), dmscInvalidArgument,
           "dmscAllGather: sendbuff and recvbuff overlap");
    EXPECT(dmscAllReduce(buf, (char *)buf2 + 1, 4, dmscFloat32, dmscSum, world, NULL),
           dmscInvalidArgument, "dmscAllReduce: recvbuff");

    /* Streams: only NULL until the CUDA transport exists. */
    EXPECT(dmscAllReduce(buf, buf2, 4, dmscFloat32, dmscSum, world, (void *)buf), dmscInvalidArgument,
           "CUDA transport");
    EXPECT(dmscBarrier(world, (void *)buf), dmscInvalidArgument, "dmscBarrier: stream");
    EXPECT(dmscRecvAsync(buf, 1, dmscFloat32, 0, world, (void *)buf, &req), dmscInvalidArgument,
           "dmscRecvAsync: stream");

    /* Handles: destroyed, made up. */
    OK(dmscCommSplit(world, 0, 0, &dead, NULL));
    OK(dmscCommDestroy(dead));
    EXPECT(dmscAllReduce(buf, buf2, 4, dmscFloat32, dmscSum, dead, NULL), dmscInvalidUsage,
           "dmscAllReduce: comm");
    EXPECT(dmscAllReduce(buf, buf2, 4, dmscFloat32, dmscSum, dead, NULL), dmscInvalidUsage,
           "destroyed");
    EXPECT(dmscCommDestroy(dead), dmscInvalidUsage, "dmscCommDestroy: comm");
    EXPECT(dmscCommCount(dead, &v), dmscInvalidUsage, "dmscCommCount: comm");
    EXPECT(dmscCommGetPathMetrics(dead, NULL, 0, &v), dmscInvalidUsage,
           "dmscCommGetPathMetrics: comm");
    EXPECT(dmscBarrierAsync(dead, NULL, &req), dmscInvalidUsage, "dmscBarrierAsync: comm");
    EXPECT(dmscCommSplit(dead, 0, 0, &nc, NULL), dmscInvalidUsage, "dmscCommSplit: comm");
    CHECK(nc == NULL, "a failed split sets *newcomm to NULL");
    EXPECT(dmscSend(buf, 1, dmscFloat32, 0, bogus, NULL), dmscInvalidUsage, "dmscSend: comm");
    EXPECT(dmscCommUserRank(bogus, &v), dmscInvalidUsage, "dmscCommUserRank: comm");
    EXPECT(dmscWait((dmscRequest_t)(uintptr_t)0xdead0000u), dmscInvalidUsage, "dmscWait: request");
    EXPECT(dmscTest((dmscRequest_t)(uintptr_t)0xdead0000u, &done), dmscInvalidUsage, "dmscTest: request");

    /* Groups. */
    EXPECT(dmscGroupEnd(), dmscInvalidUsage, "dmscGroupEnd");
    OK(dmscGroupStart());
    EXPECT(dmscAllReduceAsync(buf, buf, 4, dmscFloat32, dmscSum, world, NULL, &req), dmscInvalidUsage,
           "dmscAllReduceAsync: non-blocking calls cannot be made between dmscGroupStart");
    EXPECT(dmscCommDestroy(world), dmscInvalidUsage, "dmscCommDestroy: cannot destroy");
    EXPECT(dmscCommSplit(world, 0, 0, &nc, NULL), dmscInvalidUsage, "dmscCommSplit: cannot split");
    EXPECT(dmscAllReduce(buf, NULL, 4, dmscFloat32, dmscSum, world, NULL), dmscInvalidArgument,
           "dmscAllReduce: recvbuff is NULL"); /* checked at once, not recorded */
    OK(dmscGroupEnd());

    /* Init and config. */
    EXPECT(dmscCommInitRank(&nc, 0, zero_id, 0), dmscInvalidArgument, "dmscCommInitRank: nranks 0");
    CHECK(nc == NULL, "a failed init sets *comm to NULL");
    EXPECT(dmscCommInitRank(&nc, 4, zero_id, 4), dmscInvalidArgument, "dmscCommInitRank: rank 4");
    EXPECT(dmscCommInitRank(&nc, 4, zero_id, 1), dmscInvalidArgument, "dmscCommInitRank: commId");
    EXPECT(dmscCommInitRank(NULL, 4, zero_id, 1), dmscInvalidArgument, "dmscCommInitRank: comm is NULL");
    EXPECT(dmscCommSplit(world, -5, 0, &nc, NULL), dmscInvalidArgument, "dmscCommSplit: color -5");
    cfg.magic = 0;
    EXPECT(dmscCommInitFromEnv(&nc, &cfg), dmscInvalidArgument, "dmscCommInitFromEnv: config->magic");
    cfg.magic = DMSC_CONFIG_MAGIC;
    cfg.size = 8;
    EXPECT(dmscCommInitRankConfig(&nc, 4, zero_id, 0, &cfg), dmscInvalidArgument, "commId");
    EXPECT(dmscCommInitFromEnv(&nc, &cfg), dmscInvalidArgument, "config->size");
    cfg.size = sizeof cfg;
    cfg.nPaths = 17;
    EXPECT(dmscCommInitFromEnv(&nc, &cfg), dmscInvalidArgument, "config->nPaths");
    EXPECT(dmscCommSplit(world, 0, 0, &nc, &cfg), dmscInvalidArgument, "dmscCommSplit: config->nPaths");
    cfg.nPaths = DMSC_CONFIG_UNDEF_INT;
    cfg.transport = "carrier-pigeon";
    EXPECT(dmscCommInitFromEnv(&nc, &cfg), dmscInvalidArgument, "config->transport");
    cfg.transport = NULL;
    cfg.socketIfname = "lo";
    EXPECT(dmscCommSplit(world, 0, 0, &nc, &cfg), dmscInvalidArgument, "config->socketIfname");
    cfg.socketIfname = NULL;
    cfg.timeoutMs = 0;
    EXPECT(dmscCommInitFromEnv(&nc, &cfg), dmscInvalidArgument, "config->timeoutMs");

    /* Error strings: every code has one, unknown ones too. */
    {
        const dmscResult_t codes[] = {dmscSuccess,     dmscSystemError, dmscInternalError,
                                      dmscInvalidArgument, dmscInvalidUsage, dmscRemoteError,
                                      dmscInProgress,  dmscTimeout,     dmscPeerLost,
                                      dmscMismatch,    dmscAborted,     dmscProtocolError};
        size_t i;
        for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
            CHECK(strlen(dmscGetErrorString(codes[i])) > 0, "error string of %d", (int)codes[i]);
        CHECK(strstr(dmscGetErrorString((dmscResult_t)1234), "unknown") != NULL, "unknown code");
        CHECK(dmscSuccess == 0 && dmscSystemError == 2 && dmscInternalError == 3 &&
                  dmscInvalidArgument == 4 && dmscInvalidUsage == 5 && dmscRemoteError == 6 &&
                  dmscInProgress == 7 && dmscTimeout >= 16,
              "NCCL's values");
    }
    /* The last error is per thread and comm may be anything. */
    CHECK(strlen(dmscGetLastError(world)) > 0, "last error via comm");

    /* None of this touched the world communicator. */
    {
        dmscResult_t async;
        OK(dmscCommGetAsyncError(world, &async));
        CHECK(async == dmscSuccess, "world is healthy");
        ibuf[0] = 1;
        OK(dmscAllReduce(ibuf, ibuf, 1, dmscInt32, dmscSum, world, NULL));
        CHECK(ibuf[0] == nranks, "world still works");
    }
}

int main(int argc, char **argv) {
    dmscComm_t world = NULL;
    int version = 0, n = 0, r = -1;
    const char *env_rank = getenv("RANK"), *env_size = getenv("WORLD_SIZE");

    OK(dmscGetVersion(&version));
    CHECK(version == DMSC_VERSION_CODE, "version %d", version);
    CHECK(strlen(dmscGetLastError(NULL)) == 0, "no error yet");

    OK(dmscCommInitFromEnv(&world, NULL));
    OK(dmscCommCount(world, &n));
    OK(dmscCommUserRank(world, &r));
    me = r;
    nranks = n;
    CHECK(env_rank && env_size && r == atoi(env_rank) && n == atoi(env_size),
          "rank %d of %d vs RANK=%s WORLD_SIZE=%s", r, n, env_rank, env_size);
    CHECK(nranks >= 2 && nranks <= 4, "run with 2 to 4 ranks (products must stay exact)");

    if (argc > 1 && strcmp(argv[1], "paths") == 0) {
        /* The packet-spraying run of tests/c/run.sh: path metrics only. */
        CHECK(env_paths() > 1, "'paths' needs DMSC_PATHS > 1");
        test_path_metrics_spray(world, env_paths());
        OK(dmscCommDestroy(world));
        printf("rank %d: path metrics checks passed (%d paths per peer)\n", me, env_paths());
        return 0;
    }
    test_errors(world);
    test_path_metrics_count(world);
    test_all_reduce(world);
    test_premul_sum(world);
    test_broadcast_reduce(world);
    test_gather_scatter(world);
    test_all_to_all(world);
    test_all_to_all_v(world);
    OK(dmscBarrier(world, NULL));
    test_async(world);
    test_unique_id(world);
    test_split(world);
    test_shrink(world);
    test_destroy_with_pending_request(world);
    test_mismatch(world);
    test_timeout(world);
    test_abort(world);

    OK(dmscBarrier(world, NULL));
    OK(dmscCommDestroy(world));
    EXPECT(dmscBarrier(world, NULL), dmscInvalidUsage, "dmscBarrier: comm");
    printf("rank %d: all C API checks passed\n", me);
    return 0;
}
