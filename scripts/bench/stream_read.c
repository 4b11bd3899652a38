/* STREAM-like memory read bandwidth: T threads each sum their slice of one
 * large array (far bigger than the last-level cache), REPEATS times; the wall
 * time of each pass is taken between two barriers that all threads cross.
 * Prints one JSON object. Built by bandwidth.py with cc -O3 -march=native.
 *
 * Usage: stream_read MIB THREADS REPEATS
 *
 * Integer sums vectorize without -ffast-math (they are associative), so the
 * loop is bound by loads, not by a floating-point add chain. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t *data;
static size_t words;
static int threads, repeats;
static pthread_barrier_t barrier;
static double *pass_seconds;
static volatile uint64_t sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    size_t lo = words * id / threads, hi = words * (id + 1) / threads;
    /* First touch by the thread that reads the slice. */
    for (size_t i = lo; i < hi; i++) data[i] = i ^ (uint64_t)id;
    uint64_t acc = 0;
    for (int r = 0; r < repeats; r++) {
        pthread_barrier_wait(&barrier);
        double t0 = now();
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        size_t i = lo;
        for (; i + 4 <= hi; i += 4) {
            s0 += data[i];
            s1 += data[i + 1];
            s2 += data[i + 2];
            s3 += data[i + 3];
        }
        for (; i < hi; i++) s0 += data[i];
        acc += s0 + s1 + s2 + s3;
        pthread_barrier_wait(&barrier);
        if (id == 0) pass_seconds[r] = now() - t0;
    }
    __atomic_fetch_add(&sink, acc, __ATOMIC_RELAXED);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MIB THREADS REPEATS\n", argv[0]);
        return 2;
    }
    size_t mib = strtoull(argv[1], NULL, 10);
    threads = atoi(argv[2]);
    repeats = atoi(argv[3]);
    if (mib == 0 || threads <= 0 || repeats <= 0) {
        fprintf(stderr, "MIB, THREADS and REPEATS must be positive\n");
        return 2;
    }
    words = mib * 1024 * 1024 / sizeof(uint64_t);
    if (posix_memalign((void **)&data, 4096, words * sizeof(uint64_t)) != 0) {
        fprintf(stderr, "cannot allocate %zu MiB\n", mib);
        return 1;
    }
    pass_seconds = calloc(repeats, sizeof(double));
    pthread_barrier_init(&barrier, NULL, threads);
    pthread_t *tids = calloc(threads, sizeof(pthread_t));
    for (int t = 0; t < threads; t++)
        pthread_create(&tids[t], NULL, worker, (void *)(intptr_t)t);
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    /* The first pass also pays for page-table warm-up; best-of ignores it. */
    qsort(pass_seconds, repeats, sizeof(double), cmp);
    double bytes = (double)words * sizeof(uint64_t);
    printf("{\"threads\": %d, \"bytes\": %.0f, \"repeats\": %d, "
           "\"best_gbps\": %.3f, \"median_gbps\": %.3f, \"checksum\": %llu}\n",
           threads, bytes, repeats, bytes / pass_seconds[0] / 1e9,
           bytes / pass_seconds[repeats / 2] / 1e9, (unsigned long long)sink);
    return 0;
}
