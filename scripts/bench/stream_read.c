/* STREAM-like memory read bandwidth: T threads each sum their slice of one
 * large array (far bigger than the last-level cache), REPEATS times; a pass
 * lasts from the first thread's start to the last thread's end.
 * Every byte of the array is read in every pass. Prints one JSON object.
 * Built by bandwidth.py with cc -O3 -march=native.
 *
 * Usage: stream_read MIB THREADS REPEATS [KERNEL] [PAGES]
 *        stream_read MIB THREADS serve [KERNEL] [PAGES]
 *        stream_read kernels      (prints the kernels this build has)
 *   serve   a probe for a driver: prints "ready" after one warm-up pass, then
 *           for each line read on stdin runs one pass and prints its GB/s on
 *           a line (flushed); exits at end of input. The benchmark runs one
 *           pass between decode steps, so each step has the bandwidth of the
 *           moments before and after it.
 *   KERNEL  c4       plain C, four 64-bit accumulators (the compiler vectorizes it)
 *           avx512   explicit 512-bit loads, eight vector accumulators, 512 B a step
 *           avx512pf avx512 plus a software prefetch (NTA) of every line 2 KiB ahead
 *           (default: avx512 where the compiler targets AVX-512, else c4)
 *   PAGES   huge     madvise(MADV_HUGEPAGE) on the array (default; transparent
 *                    huge pages cut TLB misses when THP is in "madvise" mode)
 *           small    4 KiB pages only
 *
 * Integer sums vectorize without -ffast-math (they are associative), so the
 * loop is bound by loads, not by a floating-point add chain. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

typedef uint64_t (*kernel_fn)(const uint64_t *p, size_t n);

static uint64_t *data;
static size_t words;
static int threads, repeats;
static kernel_fn kernel;
static pthread_barrier_t barrier;
static double *pass_seconds;
static double *t_start, *t_end; /* [repeat * threads + thread] */
static volatile uint64_t sink;
static int serving;          /* serve mode: passes on demand until stopping */
static volatile int stopping;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t sum_c4(const uint64_t *p, size_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

#ifdef __AVX512F__
/* Eight independent accumulators: eight loads in flight per step and no add
 * dependency between them. PF is the prefetch distance in bytes (0: none). */
static inline uint64_t sum_avx512_pf(const uint64_t *p, size_t n, size_t pf) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
            a7 = a0;
    size_t i = 0;
    /* Scalar head up to a 64-byte boundary. */
    uint64_t head = 0;
    while (i < n && ((uintptr_t)(p + i) & 63)) head += p[i++];
    for (; i + 64 <= n; i += 64) {
        const uint64_t *q = p + i;
        if (pf) /* every line of the step, non-temporal hint */
            for (int l = 0; l < 8; l++) _mm_prefetch((const char *)q + pf + 64 * l, _MM_HINT_NTA);
        a0 = _mm512_add_epi64(a0, _mm512_load_si512(q));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512(q + 8));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512(q + 16));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512(q + 24));
        a4 = _mm512_add_epi64(a4, _mm512_load_si512(q + 32));
        a5 = _mm512_add_epi64(a5, _mm512_load_si512(q + 40));
        a6 = _mm512_add_epi64(a6, _mm512_load_si512(q + 48));
        a7 = _mm512_add_epi64(a7, _mm512_load_si512(q + 56));
    }
    uint64_t tail = 0;
    for (; i < n; i++) tail += p[i];
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)),
                                 _mm512_add_epi64(_mm512_add_epi64(a4, a5), _mm512_add_epi64(a6, a7)));
    return _mm512_reduce_add_epi64(s) + head + tail;
}

static uint64_t sum_avx512(const uint64_t *p, size_t n) { return sum_avx512_pf(p, n, 0); }
static uint64_t sum_avx512pf(const uint64_t *p, size_t n) { return sum_avx512_pf(p, n, 2048); }
#endif

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    size_t lo = words * id / threads, hi = words * (id + 1) / threads;
    /* First touch by the thread that reads the slice. */
    for (size_t i = lo; i < hi; i++) data[i] = i ^ (uint64_t)id;
    uint64_t acc = 0;
    if (serving) {
        /* The main thread joins both barriers: it releases a pass and waits for its end. */
        for (;;) {
            pthread_barrier_wait(&barrier);
            if (stopping) break;
            t_start[id] = now();
            acc += kernel(data + lo, hi - lo);
            t_end[id] = now();
            pthread_barrier_wait(&barrier);
        }
        __atomic_fetch_add(&sink, acc, __ATOMIC_RELAXED);
        return NULL;
    }
    for (int r = 0; r < repeats; r++) {
        pthread_barrier_wait(&barrier);
        /* Every thread clocks its own start and end; a pass lasts from the
         * earliest start to the latest end. (Thread 0 alone timing between the
         * barriers overstates bandwidth when it is descheduled just after the
         * first barrier: the other thread's reads then start before its clock.) */
        t_start[r * threads + id] = now();
        acc += kernel(data + lo, hi - lo);
        t_end[r * threads + id] = now();
        pthread_barrier_wait(&barrier);
    }
    __atomic_fetch_add(&sink, acc, __ATOMIC_RELAXED);
    return NULL;
}

/* One pass released by the main thread (serve mode): its seconds, from the
 * earliest thread start to the latest end, as the repeat passes are timed. */
static double serve_pass(void) {
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    double lo = t_start[0], hi = t_end[0];
    for (int t = 1; t < threads; t++) {
        if (t_start[t] < lo) lo = t_start[t];
        if (t_end[t] > hi) hi = t_end[t];
    }
    return hi - lo;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "kernels") == 0) {
#ifdef __AVX512F__
        puts("c4 avx512 avx512pf");
#else
        puts("c4");
#endif
        return 0;
    }
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s MIB THREADS REPEATS|serve [c4|avx512|avx512pf] [huge|small]\n", argv[0]);
        return 2;
    }
    size_t mib = strtoull(argv[1], NULL, 10);
    threads = atoi(argv[2]);
    serving = strcmp(argv[3], "serve") == 0;
    repeats = serving ? 1 : atoi(argv[3]);
    if (mib == 0 || threads <= 0 || repeats <= 0) {
        fprintf(stderr, "MIB, THREADS and REPEATS must be positive\n");
        return 2;
    }
#ifdef __AVX512F__
    const char *name = argc > 4 ? argv[4] : "avx512";
#else
    const char *name = argc > 4 ? argv[4] : "c4";
#endif
    if (strcmp(name, "c4") == 0) {
        kernel = sum_c4;
#ifdef __AVX512F__
    } else if (strcmp(name, "avx512") == 0) {
        kernel = sum_avx512;
    } else if (strcmp(name, "avx512pf") == 0) {
        kernel = sum_avx512pf;
#endif
    } else {
        fprintf(stderr, "kernel %s is unknown or not built for this CPU\n", name);
        return 2;
    }
    const char *pages = argc > 5 ? argv[5] : "huge";
    if (strcmp(pages, "huge") != 0 && strcmp(pages, "small") != 0) {
        fprintf(stderr, "PAGES must be huge or small, not %s\n", pages);
        return 2;
    }
    words = mib * 1024 * 1024 / sizeof(uint64_t);
    /* 2 MiB alignment so that huge pages can back the whole array. */
    if (posix_memalign((void **)&data, 2 << 20, words * sizeof(uint64_t)) != 0) {
        fprintf(stderr, "cannot allocate %zu MiB\n", mib);
        return 1;
    }
    /* Advisory: without THP support the array simply keeps 4 KiB pages. */
    int huge = strcmp(pages, "huge") == 0 && madvise(data, words * sizeof(uint64_t), MADV_HUGEPAGE) == 0;
    pass_seconds = calloc(repeats, sizeof(double));
    t_start = calloc((size_t)repeats * threads, sizeof(double));
    t_end = calloc((size_t)repeats * threads, sizeof(double));
    pthread_barrier_init(&barrier, NULL, threads + serving);
    pthread_t *tids = calloc(threads, sizeof(pthread_t));
    for (int t = 0; t < threads; t++)
        pthread_create(&tids[t], NULL, worker, (void *)(intptr_t)t);
    if (serving) {
        double bytes = (double)words * sizeof(uint64_t);
        serve_pass(); /* warm-up: page tables, huge-page faults */
        printf("ready\n");
        fflush(stdout);
        char line[256];
        while (fgets(line, sizeof line, stdin)) {
            printf("%.3f\n", bytes / serve_pass() / 1e9);
            fflush(stdout);
        }
        stopping = 1;
        pthread_barrier_wait(&barrier);
        for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
        return 0;
    }
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    for (int r = 0; r < repeats; r++) {
        double lo = t_start[r * threads], hi = t_end[r * threads];
        for (int t = 1; t < threads; t++) {
            if (t_start[r * threads + t] < lo) lo = t_start[r * threads + t];
            if (t_end[r * threads + t] > hi) hi = t_end[r * threads + t];
        }
        pass_seconds[r] = hi - lo;
    }
    /* The first pass also pays for page-table warm-up; best-of ignores it. */
    qsort(pass_seconds, repeats, sizeof(double), cmp);
    double bytes = (double)words * sizeof(uint64_t);
    printf("{\"threads\": %d, \"kernel\": \"%s\", \"huge_pages\": %s, \"bytes\": %.0f, "
           "\"repeats\": %d, \"best_gbps\": %.3f, \"median_gbps\": %.3f, \"checksum\": %llu}\n",
           threads, name, huge ? "true" : "false", bytes, repeats, bytes / pass_seconds[0] / 1e9,
           bytes / pass_seconds[repeats / 2] / 1e9, (unsigned long long)sink);
    return 0;
}
