/* A stand-in for the CUDA driver (libcuda) that runs "kernels" on the host,
 * so the CUDA executor's own logic (module and function lookup, buffer
 * addresses, launch parameters, copies, scans, state kept between calls)
 * is tested on machines without a GPU.
 *
 * - "Device memory" is host memory; every copy and free is checked against
 *   the live allocations (an out-of-range copy is CUDA_ERROR_INVALID_VALUE),
 *   and every call that needs a context checks one is current on the
 *   calling thread (CUDA_ERROR_INVALID_CONTEXT otherwise).
 * - A "PTX module" is text with one line per kernel:
 *     <name> <address of a host function with the CPU ABI> <buffers> <sizes>
 *   cuLaunchKernel reads the parameters the GPU ABI way (buffer addresses,
 *   then i64 sizes, each through its pointer in kernelParams) and calls the
 *   host function on blocks 0..gridDim.x. A module whose text starts with
 *   "bad" fails to load with a JIT log.
 *
 * Only what kiln-runtime's CUDA executor calls is here.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

typedef int CUresult;
typedef void (*cpu_kernel)(void **args, const int64_t *sizes, int64_t b0, int64_t b1);

enum {
    OK = 0,
    INVALID_VALUE = 1,
    INVALID_CONTEXT = 201,
    INVALID_DEVICE = 101,
    INVALID_PTX = 218,
    NOT_FOUND = 500,
};

static __thread void *current;
static int ctx_token;

#define MAX_ALLOCS 4096
static uint64_t alloc_ptr[MAX_ALLOCS];
static size_t alloc_len[MAX_ALLOCS];
static long live_allocs;
static long launches;
static long syncs;

long fake_cuda_live_allocations(void) { return live_allocs; }
long fake_cuda_launches(void) { return launches; }
long fake_cuda_synchronizations(void) { return syncs; }

#define NEED_CTX() do { if (current != &ctx_token) return INVALID_CONTEXT; } while (0)

/* Whether [p, p+n) lies inside one live allocation. */
static int inside(uint64_t p, size_t n) {
    for (int i = 0; i < MAX_ALLOCS; i++) {
        if (alloc_len[i] && p >= alloc_ptr[i] && p + n <= alloc_ptr[i] + alloc_len[i])
            return 1;
    }
    return 0;
}

CUresult cuGetErrorName(CUresult e, const char **s) {
    static char buf[64];
    snprintf(buf, sizeof buf, "FAKE_CUDA_ERROR_%d", e);
    *s = buf;
    return OK;
}
CUresult cuGetErrorString(CUresult e, const char **s) {
    (void)e;
    *s = "reported by the fake driver";
    return OK;
}
CUresult cuInit(unsigned flags) { return flags == 0 ? OK : INVALID_VALUE; }
CUresult cuDriverGetVersion(int *v) { *v = 12090; return OK; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return OK; }
CUresult cuDeviceGet(int *dev, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *dev = 0;
    return OK;
}
CUresult cuDeviceGetName(char *name, int len, int dev) {
    if (dev != 0) return INVALID_DEVICE;
    snprintf(name, (size_t)len, "Fake CUDA device");
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) {
    if (dev != 0) return INVALID_DEVICE;
    *bytes = (size_t)1 << 30;
    return OK;
}
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
    if (dev != 0) return INVALID_DEVICE;
    switch (attr) {
    case 75: *v = 9; break;  /* compute capability major */
    case 76: *v = 0; break;  /* minor */
    case 16: *v = 4; break;  /* multiprocessors */
    default: *v = 0;
    }
    return OK;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) {
    if (dev != 0) return INVALID_DEVICE;
    *ctx = &ctx_token;
    return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(int dev) { return dev == 0 ? OK : INVALID_DEVICE; }
CUresult cuCtxSetCurrent(void *ctx) {
    if (ctx != &ctx_token && ctx != NULL) return INVALID_CONTEXT;
    current = ctx;
    return OK;
}
CUresult cuCtxSynchronize(void) { NEED_CTX(); syncs++; return OK; }

struct module { char *text; };
struct function { cpu_kernel fn; int bufs; int syms; };

CUresult cuModuleLoadDataEx(void **mod, const void *image, unsigned n, int *opts, void **vals) {
    NEED_CTX();
    const char *text = image;
    if (strncmp(text, "bad", 3) == 0) {
        for (unsigned i = 0; i < n; i++) {
            if (opts[i] == 5) { /* CU_JIT_ERROR_LOG_BUFFER */
                size_t cap = 0;
                for (unsigned j = 0; j < n; j++)
                    if (opts[j] == 6) cap = (size_t)(uintptr_t)vals[j];
                if (cap) snprintf((char *)vals[i], cap, "fake ptxas: syntax error at line 1");
            }
        }
        return INVALID_PTX;
    }
    struct module *m = malloc(sizeof *m);
    size_t len = strlen(text) + 1;
    m->text = malloc(len);
    memcpy(m->text, text, len);
    *mod = m;
    return OK;
}
CUresult cuModuleGetFunction(void **f, void *mod, const char *name) {
    NEED_CTX();
    struct module *m = mod;
    size_t len = strlen(name);
    for (const char *line = m->text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, name, len) == 0 && line[len] == ' ') {
            unsigned long long addr;
            int bufs, syms;
            if (sscanf(line + len, " %llx %d %d", &addr, &bufs, &syms) != 3) return INVALID_VALUE;
            struct function *fn = malloc(sizeof *fn);
            fn->fn = (cpu_kernel)(uintptr_t)addr;
            fn->bufs = bufs;
            fn->syms = syms;
            *f = fn;
            return OK;
        }
    }
    return NOT_FOUND;
}
CUresult cuModuleUnload(void *mod) {
    NEED_CTX();
    struct module *m = mod;
    free(m->text);
    free(m);
    return OK;
}
CUresult cuFuncGetAttribute(int *v, int attr, void *f) {
    (void)f;
    *v = attr == 0 ? 1024 : attr == 4 ? 32 : 0;
    return OK;
}

CUresult cuMemAlloc_v2(uint64_t *p, size_t n) {
    NEED_CTX();
    if (n == 0) return INVALID_VALUE;
    for (int i = 0; i < MAX_ALLOCS; i++) {
        if (!alloc_len[i]) {
            void *mem = aligned_alloc(256, (n + 255) / 256 * 256);
            if (!mem) return 2; /* out of memory */
            memset(mem, 0xAB, n); /* device memory is not zeroed */
            alloc_ptr[i] = (uint64_t)(uintptr_t)mem;
            alloc_len[i] = n;
            live_allocs++;
            *p = alloc_ptr[i];
            return OK;
        }
    }
    return 2;
}
CUresult cuMemFree_v2(uint64_t p) {
    NEED_CTX();
    for (int i = 0; i < MAX_ALLOCS; i++) {
        if (alloc_len[i] && alloc_ptr[i] == p) {
            free((void *)(uintptr_t)p);
            alloc_len[i] = 0;
            live_allocs--;
            return OK;
        }
    }
    return INVALID_VALUE;
}
CUresult cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t n) {
    NEED_CTX();
    if (!inside(dst, n)) return INVALID_VALUE;
    memcpy((void *)(uintptr_t)dst, src, n);
    return OK;
}
CUresult cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t n) {
    NEED_CTX();
    if (!inside(src, n)) return INVALID_VALUE;
    memcpy(dst, (const void *)(uintptr_t)src, n);
    return OK;
}
CUresult cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t n, void *stream) {
    NEED_CTX();
    if (stream != NULL || !inside(dst, n) || !inside(src, n)) return INVALID_VALUE;
    memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return OK;
}

/* The driver's CUDA_MEMCPY2D, field for field. */
typedef struct {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    uint64_t srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    uint64_t dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
} copy2d;

CUresult cuMemcpy2DAsync_v2(const copy2d *p, void *stream) {
    NEED_CTX();
    if (stream != NULL || p->srcMemoryType != 2 || p->dstMemoryType != 2) return INVALID_VALUE;
    if (p->srcPitch < p->WidthInBytes || p->dstPitch < p->WidthInBytes) return INVALID_VALUE;
    for (size_t r = 0; r < p->Height; r++) {
        uint64_t s = p->srcDevice + p->srcXInBytes + (p->srcY + r) * p->srcPitch;
        uint64_t d = p->dstDevice + p->dstXInBytes + (p->dstY + r) * p->dstPitch;
        if (!inside(s, p->WidthInBytes) || !inside(d, p->WidthInBytes)) return INVALID_VALUE;
        memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)s, p->WidthInBytes);
    }
    return OK;
}
CUresult cuMemsetD8Async(uint64_t dst, unsigned char v, size_t n, void *stream) {
    NEED_CTX();
    if (stream != NULL || !inside(dst, n)) return INVALID_VALUE;
    memset((void *)(uintptr_t)dst, v, n);
    return OK;
}

CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, void *stream, void **params, void **extra) {
    NEED_CTX();
    struct function *fn = f;
    if (gx == 0 || gy != 1 || gz != 1 || bx == 0 || bx > 1024 || by != 1 || bz != 1 || shared != 0
        || stream != NULL || extra != NULL || fn->bufs > 64 || fn->syms > 64)
        return INVALID_VALUE;
    void *args[64];
    int64_t sizes[64];
    for (int i = 0; i < fn->bufs; i++) {
        uint64_t a = *(const uint64_t *)params[i];
        if (!inside(a, 0)) return INVALID_VALUE; /* not a device address */
        args[i] = (void *)(uintptr_t)a;
    }
    for (int i = 0; i < fn->syms; i++) sizes[i] = *(const int64_t *)params[fn->bufs + i];
    fn->fn(args, sizes, 0, (int64_t)gx);
    launches++;
    return OK;
}
