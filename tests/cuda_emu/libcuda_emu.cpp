// A CUDA driver (libcuda.so.1) that runs the project's kernels on the CPU, for the tests only.
//
// PyCUDA loads it in place of NVIDIA's driver (LD_LIBRARY_PATH, tests/test_gpu_emulated_driver.py), so the
// whole PyCUDA path of the node (gpu/pycuda_backend.py, gpu/llm_cuda.py, the self-tests, the GPU-marked
// tests) runs on a machine without a GPU: contexts, device memory (host memory here), copies, modules and
// launches go through PyCUDA's real driver bindings. A module is the cubin that nvcc really built from the
// kernel source (SourceModule); cuModuleGetFunction finds an entry point when its name is in that image and
// it is one of the kernels compiled in below from gpu/kernels/*.cu on the emulation of tests/cuda_emu/emu.h
// (std::thread per CUDA thread; __CUDA_ARCH__ undefined, so the portable code paths). Launch arguments are
// unpacked from PyCUDA's packed buffer (CU_LAUNCH_PARAM_BUFFER_POINTER) or kernelParams by each kernel's
// own parameter types. What it cannot show: the GPU's own instructions (dp2a), timing, memory limits.
// Every other driver entry point PyCUDA 2026.1 links returns CUDA_ERROR_NOT_SUPPORTED.
#include "emu.h"
#include "counter.cu"
#include "gemm.cu"
#include "sha256.cu"
#include "llm.cu"

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
enum : int { OK = 0, E_INVALID_VALUE = 1, E_NOT_INITIALIZED = 3, E_INVALID_CONTEXT = 201, E_INVALID_IMAGE = 200,
             E_INVALID_DEVICE = 101, E_INVALID_HANDLE = 400, E_NOT_FOUND = 500, E_NOT_SUPPORTED = 801 };

namespace {
struct Ctx { CUdevice dev; };
struct Module { std::string image; };
struct Launcher { virtual void run(const char* buf, void** params, dim3 g, dim3 b) = 0; virtual ~Launcher() {} };

template <typename T> T load(const void* p) { T v; std::memcpy(&v, p, sizeof(T)); return v; }

template <typename... A> struct KernelLauncher : Launcher {
    void (*k)(A...);
    explicit KernelLauncher(void (*f)(A...)) : k(f) {}
    void run(const char* buf, void** params, dim3 g, dim3 b) override { call(buf, params, g, b, std::index_sequence_for<A...>{}); }
    template <size_t... I> void call(const char* buf, void** params, dim3 g, dim3 b, std::index_sequence<I...>) {
        constexpr size_t n = sizeof...(A);
        const size_t sizes[] = {sizeof(A)...}, aligns[] = {alignof(A)...};
        const void* src[n];
        size_t off = 0;  // PyCUDA's packed buffer: each argument at its natural alignment, in order
        for (size_t i = 0; i < n; ++i) {
            if (params) { src[i] = params[i]; continue; }
            off = (off + aligns[i] - 1) / aligns[i] * aligns[i];
            src[i] = buf + off;
            off += sizes[i];
        }
        std::tuple<A...> args{load<A>(src[I])...};
        launch(g, b, [&] { std::apply(k, args); });
    }
};
template <typename... A> Launcher* launcher(void (*f)(A...)) { return new KernelLauncher<A...>(f); }

std::map<std::string, Launcher*>& kernels() {
    static std::map<std::string, Launcher*> t = {
        {"gen_u32", launcher(gen_u32)}, {"gen_f32", launcher(gen_f32)},
        {"matmul_u32", launcher(matmul_u32)}, {"sgemm_bias_act", launcher(sgemm_bias_act)},
        {"hash_chain", launcher(hash_chain)},
        {"llm_quant_rows", launcher(llm_quant_rows)}, {"llm_matmul_q8", launcher(llm_matmul_q8)},
        {"llm_attention", launcher(llm_attention)}, {"llm_swiglu", launcher(llm_swiglu)},
    };
    return t;
}

std::mutex g_mu;  // one launch at a time (the emulation's grid state is global)
bool g_init = false;
thread_local std::vector<Ctx*> t_stack;
Ctx g_primary{0};
std::map<CUdeviceptr, size_t> g_allocs;
size_t g_used = 0;
const size_t TOTAL = size_t(4) << 30;
double now_ms() { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
CUresult need_ctx() { return !g_init ? E_NOT_INITIALIZED : (t_stack.empty() ? E_INVALID_CONTEXT : OK); }
}  // namespace

extern "C" {
CUresult cuInit(unsigned) { g_init = true; return OK; }
CUresult cuDriverGetVersion(int* v) { *v = 13000; return OK; }
CUresult cuDeviceGetCount(int* n) { if (!g_init) return E_NOT_INITIALIZED; *n = 1; return OK; }
CUresult cuDeviceGet(CUdevice* d, int i) { if (!g_init) return E_NOT_INITIALIZED; if (i != 0) return E_INVALID_DEVICE; *d = 0; return OK; }
CUresult cuDeviceGetName(char* s, int n, CUdevice) { std::snprintf(s, n, "AITBC CUDA CPU emulator"); return OK; }
CUresult cuDeviceGetPCIBusId(char* s, int n, CUdevice) { std::snprintf(s, n, "0000:00:00.0"); return OK; }
CUresult cuDeviceComputeCapability(int* ma, int* mi, CUdevice) { *ma = 9; *mi = 0; return OK; }
CUresult cuDeviceTotalMem_v2(size_t* b, CUdevice) { *b = TOTAL; return OK; }
CUresult cuDeviceGetAttribute(int* v, int a, CUdevice) {
    switch (a) {
        case 1: case 2: case 3: *v = 1024; break;           // threads per block, block x, y
        case 4: *v = 64; break;                             // block z
        case 5: *v = 2147483647; break;                     // grid x
        case 6: case 7: *v = 65535; break;                  // grid y, z
        case 8: *v = 49152; break;                          // shared memory per block
        case 9: *v = 65536; break;                          // constant memory
        case 10: *v = 32; break;                            // warp size
        case 12: *v = 65536; break;                         // registers per block
        case 13: *v = 1980000; break;                       // clock (kHz)
        case 16: *v = 2; break;                             // multiprocessors
        case 75: *v = 9; break; case 76: *v = 0; break;     // compute capability
        default: *v = 0;
    }
    return OK;
}
CUresult cuCtxCreate_v4(void** c, void*, unsigned, CUdevice d) {
    if (!g_init) return E_NOT_INITIALIZED;
    Ctx* x = new Ctx{d}; t_stack.push_back(x); *c = x; return OK;
}
CUresult cuCtxDetach(void* c) {
    for (size_t i = 0; i < t_stack.size(); ++i) if (t_stack[i] == c) { t_stack.erase(t_stack.begin() + i); break; }
    if (c != &g_primary) delete (Ctx*)c;
    return OK;
}
CUresult cuCtxAttach(void** c, unsigned) { if (t_stack.empty()) return E_INVALID_CONTEXT; *c = t_stack.back(); return OK; }
CUresult cuCtxPushCurrent_v2(void* c) { if (!c) return E_INVALID_CONTEXT; t_stack.push_back((Ctx*)c); return OK; }
CUresult cuCtxPopCurrent_v2(void** c) {
    if (t_stack.empty()) return E_INVALID_CONTEXT;
    if (c) *c = t_stack.back();
    t_stack.pop_back(); return OK;
}
CUresult cuCtxGetDevice(CUdevice* d) { if (t_stack.empty()) return E_INVALID_CONTEXT; *d = t_stack.back()->dev; return OK; }
CUresult cuCtxSynchronize() { return need_ctx(); }
CUresult cuCtxGetApiVersion(void*, unsigned* v) { *v = 13000; return OK; }
CUresult cuCtxGetLimit(size_t* v, int) { *v = 0; return OK; }
CUresult cuCtxSetLimit(int, size_t) { return OK; }
CUresult cuCtxGetCacheConfig(int* v) { *v = 0; return OK; }
CUresult cuCtxSetCacheConfig(int) { return OK; }
CUresult cuCtxGetSharedMemConfig(int* v) { *v = 0; return OK; }
CUresult cuCtxSetSharedMemConfig(int) { return OK; }
CUresult cuDevicePrimaryCtxRetain(void** c, CUdevice) { *c = &g_primary; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return OK; }

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
    if (CUresult r = need_ctx()) return r;
    if (n == 0) return E_INVALID_VALUE;
    std::lock_guard<std::mutex> l(g_mu);
    if (g_used + n > TOTAL) return 2;                       // CUDA_ERROR_OUT_OF_MEMORY
    void* m = std::aligned_alloc(256, (n + 255) / 256 * 256);
    if (!m) return 2;
    std::memset(m, 0xA5, n);                                // device memory starts undefined
    *p = (CUdeviceptr)m; g_allocs[*p] = n; g_used += n; return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    std::lock_guard<std::mutex> l(g_mu);
    auto it = g_allocs.find(p);
    if (it == g_allocs.end()) return E_INVALID_VALUE;
    g_used -= it->second; g_allocs.erase(it); std::free((void*)p); return OK;
}
CUresult cuMemGetInfo_v2(size_t* f, size_t* t) { if (CUresult r = need_ctx()) return r; *f = TOTAL - g_used; *t = TOTAL; return OK; }
CUresult cuMemGetAddressRange_v2(CUdeviceptr* base, size_t* size, CUdeviceptr p) {
    std::lock_guard<std::mutex> l(g_mu);
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return E_NOT_FOUND;
    --it;
    if (p >= it->first + it->second) return E_NOT_FOUND;
    if (base) *base = it->first;
    if (size) *size = it->second;
    return OK;
}
static CUresult in_alloc(CUdeviceptr p, size_t n) {  // a copy must stay inside one allocation
    CUdeviceptr base; size_t size;
    if (n == 0) return OK;
    if (cuMemGetAddressRange_v2(&base, &size, p) != OK || p + n > base + size) return E_INVALID_VALUE;
    return OK;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void* s, size_t n) { if (CUresult r = in_alloc(d, n)) return r; std::memcpy((void*)d, s, n); return OK; }
CUresult cuMemcpyDtoH_v2(void* d, CUdeviceptr s, size_t n) { if (CUresult r = in_alloc(s, n)) return r; std::memcpy(d, (void*)s, n); return OK; }
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) {
    if (CUresult r = in_alloc(d, n)) return r;
    if (CUresult r = in_alloc(s, n)) return r;
    std::memmove((void*)d, (void*)s, n); return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* s, size_t n, void*) { return cuMemcpyHtoD_v2(d, s, n); }
CUresult cuMemcpyDtoHAsync_v2(void* d, CUdeviceptr s, size_t n, void*) { return cuMemcpyDtoH_v2(d, s, n); }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void*) { return cuMemcpyDtoD_v2(d, s, n); }
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { if (CUresult r = in_alloc(d, n)) return r; std::memset((void*)d, v, n); return OK; }
CUresult cuMemsetD16_v2(CUdeviceptr d, unsigned short v, size_t n) {
    if (CUresult r = in_alloc(d, 2 * n)) return r;
    for (size_t i = 0; i < n; ++i) ((unsigned short*)d)[i] = v;
    return OK;
}
CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned v, size_t n) {
    if (CUresult r = in_alloc(d, 4 * n)) return r;
    for (size_t i = 0; i < n; ++i) ((unsigned*)d)[i] = v;
    return OK;
}
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void*) { return cuMemsetD8_v2(d, v, n); }
CUresult cuMemsetD16Async(CUdeviceptr d, unsigned short v, size_t n, void*) { return cuMemsetD16_v2(d, v, n); }
CUresult cuMemsetD32Async(CUdeviceptr d, unsigned v, size_t n, void*) { return cuMemsetD32_v2(d, v, n); }
CUresult cuMemHostAlloc(void** p, size_t n, unsigned) { *p = std::malloc(n ? n : 1); return *p ? OK : 2; }
CUresult cuMemFreeHost(void* p) { std::free(p); return OK; }
CUresult cuMemHostGetFlags(unsigned* f, void*) { *f = 0; return OK; }

CUresult cuModuleLoadData(void** m, const void* image) {
    if (CUresult r = need_ctx()) return r;
    // an ELF cubin (what SourceModule loads); its size is in its section headers, bounded here by a scan
    const unsigned char* p = (const unsigned char*)image;
    if (!p || std::memcmp(p, "\x7f" "ELF", 4) != 0) return E_INVALID_IMAGE;
    const uint64_t shoff = *(const uint64_t*)(p + 0x28);
    const uint16_t shentsize = *(const uint16_t*)(p + 0x3A), shnum = *(const uint16_t*)(p + 0x3C);
    size_t size = shoff + (size_t)shentsize * shnum;
    for (uint16_t i = 0; i < shnum; ++i) {  // the largest section end
        const unsigned char* sh = p + shoff + (size_t)i * shentsize;
        const uint64_t off = *(const uint64_t*)(sh + 0x18), sz = *(const uint64_t*)(sh + 0x20);
        const uint32_t type = *(const uint32_t*)(sh + 4);
        if (type != 8 && off + sz > size) size = off + sz;  // SHT_NOBITS takes no file space
    }
    *m = new Module{std::string((const char*)p, size)};
    return OK;
}
CUresult cuModuleLoadDataEx(void** m, const void* image, unsigned n, int* opts, void** vals) {
    for (unsigned i = 0; i < n; ++i) {  // JIT logs: empty (3/5 buffers, 4/6 their used sizes)
        if ((opts[i] == 3 || opts[i] == 5) && vals[i]) *(char*)vals[i] = 0;
        if (opts[i] == 4 || opts[i] == 6) vals[i] = (void*)0;
    }
    return cuModuleLoadData(m, image);
}
CUresult cuModuleUnload(void* m) { delete (Module*)m; return OK; }
CUresult cuModuleGetFunction(void** f, void* m, const char* name) {
    auto& t = kernels();
    auto it = t.find(name);
    const std::string& img = ((Module*)m)->image;
    if (it == t.end() || img.find(std::string(name) + '\0') == std::string::npos) return E_NOT_FOUND;
    *f = it->second; return OK;
}
CUresult cuModuleGetGlobal_v2(CUdeviceptr*, size_t*, void*, const char*) { return E_NOT_FOUND; }
CUresult cuFuncGetAttribute(int* v, int a, void*) {
    switch (a) { case 0: *v = 1024; break; case 4: *v = 32; break; case 5: case 6: *v = 90; break; default: *v = 0; }
    return OK;
}
CUresult cuFuncSetAttribute(void*, int, int) { return OK; }
CUresult cuFuncSetCacheConfig(void*, int) { return OK; }
CUresult cuFuncSetBlockShape(void*, int, int, int) { return OK; }  // deprecated, still called by PyCUDA's launches
CUresult cuFuncSetSharedSize(void*, unsigned) { return OK; }
CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shmem, void*, void** params, void** extra) {
    if (CUresult r = need_ctx()) return r;
    if (!f) return E_INVALID_HANDLE;
    if (gx == 0 || gy == 0 || gz != 1 || bx == 0 || by == 0 || bz == 0 || (size_t)bx * by * bz > 1024 || shmem != 0)
        return E_INVALID_VALUE;  // the project launches 1- and 2-D grids with static shared memory only
    const char* buf = nullptr;
    if (extra) {
        for (size_t i = 0; extra[i]; i += 2)
            if (extra[i] == (void*)1) buf = (const char*)extra[i + 1];
        if (!buf) return E_INVALID_VALUE;
    } else if (!params) {
        return E_INVALID_VALUE;
    }
    std::lock_guard<std::mutex> l(g_mu);
    ((Launcher*)f)->run(buf, extra ? nullptr : params, dim3{gx, gy, 1}, dim3{bx, by, bz});
    return OK;
}
CUresult cuStreamCreate(void** s, unsigned) { *s = new char; return OK; }
CUresult cuStreamDestroy_v2(void* s) { delete (char*)s; return OK; }
CUresult cuStreamSynchronize(void*) { return OK; }
CUresult cuStreamQuery(void*) { return OK; }
CUresult cuStreamWaitEvent(void*, void*, unsigned) { return OK; }
CUresult cuEventCreate(void** e, unsigned) { *e = new double(0); return OK; }
CUresult cuEventRecord(void* e, void*) { *(double*)e = now_ms(); return OK; }
CUresult cuEventSynchronize(void*) { return OK; }
CUresult cuEventQuery(void*) { return OK; }
CUresult cuEventElapsedTime_v2(float* ms, void* a, void* b) { *ms = (float)(*(double*)b - *(double*)a); return OK; }
CUresult cuEventDestroy_v2(void* e) { delete (double*)e; return OK; }
CUresult cuGetErrorString(CUresult, const char** s) { *s = "error from the AITBC CUDA CPU emulator"; return OK; }
CUresult cuProfilerStart() { return OK; }
CUresult cuProfilerStop() { return OK; }

#define UNSUPPORTED(X) \
    X(cuArray3DCreate_v2) X(cuArray3DGetDescriptor_v2) X(cuArrayCreate_v2) X(cuArrayDestroy) \
    X(cuArrayGetDescriptor_v2) X(cuCtxDisablePeerAccess) X(cuCtxEnablePeerAccess) X(cuDeviceCanAccessPeer) \
    X(cuDeviceGetByPCIBusId) X(cuIpcCloseMemHandle) \
    X(cuIpcGetEventHandle) X(cuIpcGetMemHandle) X(cuIpcOpenEventHandle) X(cuIpcOpenMemHandle_v2) X(cuLaunch) \
    X(cuLaunchGrid) X(cuLaunchGridAsync) X(cuLinkAddData_v2) X(cuLinkAddFile_v2) X(cuLinkComplete) \
    X(cuLinkCreate_v2) X(cuLinkDestroy) X(cuMemAllocManaged) X(cuMemAllocPitch_v2) X(cuMemHostGetDevicePointer_v2) \
    X(cuMemHostRegister_v2) X(cuMemHostUnregister) X(cuMemcpy2DAsync_v2) X(cuMemcpy2DUnaligned_v2) \
    X(cuMemcpy2D_v2) X(cuMemcpy3DAsync_v2) X(cuMemcpy3DPeer) X(cuMemcpy3DPeerAsync) X(cuMemcpy3D_v2) \
    X(cuMemcpyAtoA_v2) X(cuMemcpyAtoD_v2) X(cuMemcpyAtoH_v2) X(cuMemcpyDtoA_v2) X(cuMemcpyHtoA_v2) X(cuMemcpyPeer) \
    X(cuMemcpyPeerAsync) X(cuMemsetD2D16Async) X(cuMemsetD2D16_v2) X(cuMemsetD2D32Async) X(cuMemsetD2D32_v2) \
    X(cuMemsetD2D8Async) X(cuMemsetD2D8_v2) X(cuModuleGetSurfRef) X(cuModuleGetTexRef) X(cuModuleLoad) \
    X(cuParamSetSize) X(cuParamSetTexRef) X(cuParamSetf) X(cuParamSeti) X(cuParamSetv) X(cuProfilerInitialize) \
    X(cuStreamAttachMemAsync) X(cuSurfRefGetArray) X(cuSurfRefSetArray) X(cuTexRefCreate) X(cuTexRefDestroy) \
    X(cuTexRefGetAddressMode) X(cuTexRefGetAddress_v2) X(cuTexRefGetArray) X(cuTexRefGetFilterMode) \
    X(cuTexRefGetFlags) X(cuTexRefGetFormat) X(cuTexRefSetAddress2D_v3) X(cuTexRefSetAddressMode) \
    X(cuTexRefSetAddress_v2) X(cuTexRefSetArray) X(cuTexRefSetFilterMode) X(cuTexRefSetFlags) X(cuTexRefSetFormat)
#define X(name) CUresult name() { return E_NOT_SUPPORTED; }
UNSUPPORTED(X)
#undef X
}  // extern "C"
