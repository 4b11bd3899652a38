//! The one place the CUDA executor calls the driver, through cudarc's thin
//! `sys` layer (the driver API, loaded at run time): the driver and device
//! query, the primary context, the PTX module and its functions, device
//! memory, copies and launches. Every call's result is checked and turned
//! into a [`RuntimeError`] that names the call and what it was for.
//!
//! All work goes to the context's legacy default stream, so launches and
//! copies run in the order they are issued; the executor synchronizes once
//! per call before reading results back.
//!
//! cudarc panics where a library or symbol is missing (its loader unwraps);
//! [`driver`] therefore checks the library and every symbol used here
//! before the first call, under `catch_unwind`, and reports a missing
//! driver as [`RuntimeError::NoCudaDevice`].

use crate::error::RuntimeError;
use cudarc::driver::result::DriverError;
use cudarc::driver::sys;
use std::ffi::{c_int, c_uint, c_void, CString};
use std::sync::{Arc, OnceLock};

/// What the driver reports about a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The ordinal it was asked for (`cuda:N`).
    pub ordinal: usize,
    pub name: String,
    /// Compute capability (major, minor): (9, 0) is `sm_90`.
    pub compute_capability: (u32, u32),
    /// Device memory in bytes.
    pub total_memory: usize,
    pub multiprocessors: u32,
    /// The driver's CUDA version as (major, minor), e.g. (13, 0).
    pub driver_version: (u32, u32),
}

impl DeviceInfo {
    /// The PTX target name of the compute capability (`sm_90`).
    pub fn sm(&self) -> String {
        format!(
            "sm_{}{}",
            self.compute_capability.0, self.compute_capability.1
        )
    }
}

/// The driver entry points used below, by the names cudarc loads them
/// under; checked present before the first call.
const SYMBOLS: &[&str] = &[
    "cuGetErrorName",
    "cuGetErrorString",
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetName",
    "cuDeviceTotalMem_v2",
    "cuDeviceGetAttribute",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxSetCurrent",
    "cuCtxSynchronize",
    "cuModuleLoadDataEx",
    "cuModuleGetFunction",
    "cuModuleUnload",
    "cuFuncGetAttribute",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemcpyHtoD_v2",
    "cuMemcpyDtoH_v2",
    "cuMemcpyDtoDAsync_v2",
    "cuMemcpy2DAsync_v2",
    "cuMemsetD8Async",
    "cuLaunchKernel",
];

/// The driver's name and description of an error.
fn describe(e: DriverError) -> String {
    let name = e
        .error_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("CUresult {}", e.0 as i32));
    match e.error_string() {
        Ok(s) => format!("{name}: {}", s.to_string_lossy()),
        Err(_) => name,
    }
}

fn check(r: sys::CUresult, call: &str, what: impl FnOnce() -> String) -> Result<(), RuntimeError> {
    r.result().map_err(|e| RuntimeError::Cuda {
        call: call.to_string(),
        what: what(),
        message: describe(e),
    })
}

/// Loads the driver and initializes it, once per process; the driver's
/// CUDA version (`13000` for 13.0) or why there is none.
pub(crate) fn driver() -> Result<i32, RuntimeError> {
    static DRIVER: OnceLock<Result<i32, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            std::panic::catch_unwind(load_driver).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("loading the CUDA driver failed: {msg}"))
            })
        })
        .clone()
        .map_err(RuntimeError::NoCudaDevice)
}

fn load_driver() -> Result<i32, String> {
    // SAFETY: only tries to open the driver library (libcuda) by its usual
    // names; runs no code from it beyond its initializers.
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda could not be loaded)".into());
    }
    // SAFETY: the library is present (checked above), so cudarc's loader
    // opens it rather than panicking; it stays loaded for the process.
    let lib = unsafe { sys::culib() };
    let missing: Vec<&str> = SYMBOLS
        .iter()
        .copied()
        // SAFETY: looks a symbol up without calling it; the type is never used.
        .filter(|s| unsafe { lib.get::<unsafe extern "C" fn()>(*s) }.is_err())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the CUDA driver lacks {} (too old?)",
            missing.join(", ")
        ));
    }
    // SAFETY: cuInit takes flags (must be 0) and may be called repeatedly.
    unsafe { sys::cuInit(0) }
        .result()
        .map_err(|e| format!("cuInit failed: {}", describe(e)))?;
    let mut version: c_int = 0;
    // SAFETY: writes one int through a valid pointer.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| format!("cuDriverGetVersion failed: {}", describe(e)))?;
    Ok(version)
}

/// The device handle of `ordinal`, or why there is none.
fn device(ordinal: usize) -> Result<sys::CUdevice, RuntimeError> {
    driver()?;
    let mut count: c_int = 0;
    // SAFETY: the driver is initialized; writes one int.
    check(
        unsafe { sys::cuDeviceGetCount(&mut count) },
        "cuDeviceGetCount",
        || "counting devices".into(),
    )?;
    if count <= 0 {
        return Err(RuntimeError::NoCudaDevice(
            "the CUDA driver reports no device".into(),
        ));
    }
    if ordinal >= count as usize {
        return Err(RuntimeError::NoCudaDevice(format!(
            "device {ordinal} was asked for; the driver reports {count} (0..{})",
            count - 1
        )));
    }
    let mut dev: sys::CUdevice = 0;
    // SAFETY: the ordinal is in range; writes one device handle.
    check(
        unsafe { sys::cuDeviceGet(&mut dev, ordinal as c_int) },
        "cuDeviceGet",
        || format!("device {ordinal}"),
    )?;
    Ok(dev)
}

fn attribute(
    dev: sys::CUdevice,
    attr: sys::CUdevice_attribute,
    ordinal: usize,
) -> Result<u32, RuntimeError> {
    let mut v: c_int = 0;
    // SAFETY: `dev` came from cuDeviceGet; writes one int.
    check(
        unsafe { sys::cuDeviceGetAttribute(&mut v, attr, dev) },
        "cuDeviceGetAttribute",
        || format!("{attr:?} of device {ordinal}"),
    )?;
    Ok(v.max(0) as u32)
}

/// What the driver reports about device `ordinal`; needs no context.
pub fn device_info(ordinal: usize) -> Result<DeviceInfo, RuntimeError> {
    let dev = device(ordinal)?;
    let version = driver()?;
    let mut name = [0u8; 256];
    // SAFETY: the buffer is 256 bytes and its length is passed; the driver
    // writes a NUL-terminated name into it.
    check(
        unsafe { sys::cuDeviceGetName(name.as_mut_ptr().cast(), name.len() as c_int, dev) },
        "cuDeviceGetName",
        || format!("device {ordinal}"),
    )?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let mut total: usize = 0;
    // SAFETY: `dev` came from cuDeviceGet; writes one size_t.
    check(
        unsafe { sys::cuDeviceTotalMem_v2(&mut total, dev) },
        "cuDeviceTotalMem",
        || format!("device {ordinal}"),
    )?;
    use sys::CUdevice_attribute as A;
    Ok(DeviceInfo {
        ordinal,
        name: String::from_utf8_lossy(&name[..end]).into_owned(),
        compute_capability: (
            attribute(
                dev,
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                ordinal,
            )?,
            attribute(
                dev,
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                ordinal,
            )?,
        ),
        total_memory: total,
        multiprocessors: attribute(dev, A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, ordinal)?,
        driver_version: ((version / 1000) as u32, ((version % 1000) / 10) as u32),
    })
}

/// A device's primary context, retained for as long as anything holds it.
pub(crate) struct Context {
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    pub info: DeviceInfo,
}

// SAFETY: a CUDA context may be used from any host thread once it is made
// current there (the driver API is thread-safe); every user binds it first
// (`Context::bind`), and the handle itself is an opaque token.
unsafe impl Send for Context {}
// SAFETY: as above; shared references only bind the context or read `info`.
unsafe impl Sync for Context {}

impl Context {
    /// Retains device `ordinal`'s primary context and makes it current.
    pub fn new(ordinal: usize) -> Result<Arc<Context>, RuntimeError> {
        let info = device_info(ordinal)?;
        let dev = device(ordinal)?;
        let mut ctx: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: `dev` came from cuDeviceGet; writes one context handle,
        // released in `Drop`.
        check(
            unsafe { sys::cuDevicePrimaryCtxRetain(&mut ctx, dev) },
            "cuDevicePrimaryCtxRetain",
            || format!("device {ordinal}"),
        )?;
        let c = Arc::new(Context { dev, ctx, info });
        c.bind()?;
        Ok(c)
    }

    /// Makes the context current on the calling thread (every entry point
    /// does, since the executor may move between threads).
    pub fn bind(&self) -> Result<(), RuntimeError> {
        // SAFETY: `ctx` is a retained primary context, alive while `self` is.
        check(
            unsafe { sys::cuCtxSetCurrent(self.ctx) },
            "cuCtxSetCurrent",
            || format!("device {}", self.info.ordinal),
        )
    }

    /// Waits for all work issued so far; an error a kernel raised while
    /// running surfaces here.
    pub fn synchronize(&self, what: impl FnOnce() -> String) -> Result<(), RuntimeError> {
        // SAFETY: no arguments; the context is current (callers bind first).
        check(unsafe { sys::cuCtxSynchronize() }, "cuCtxSynchronize", what)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: releases the reference retained in `new`; nothing uses
        // the context afterwards (every holder of the Arc is gone).
        let _ = unsafe { sys::cuDevicePrimaryCtxRelease_v2(self.dev) };
    }
}

/// A block of device memory from `cuMemAlloc`, freed on drop.
pub(crate) struct DevBuf {
    ptr: sys::CUdeviceptr,
    capacity: usize,
    ctx: Arc<Context>,
}

// SAFETY: the allocation belongs to the context, not to a thread; the
// address is only used by launches and copies issued while the executor
// that owns it is exclusively borrowed.
unsafe impl Send for DevBuf {}
// SAFETY: shared references only read the address and capacity.
unsafe impl Sync for DevBuf {}

impl DevBuf {
    /// At least `bytes` bytes (at least one 256-byte line, so that even an
    /// empty buffer has a distinct valid address). Contents undefined.
    pub fn alloc(ctx: &Arc<Context>, bytes: usize, what: &str) -> Result<DevBuf, RuntimeError> {
        let capacity = bytes.max(1).div_ceil(256) * 256;
        let mut ptr: sys::CUdeviceptr = 0;
        // SAFETY: the context is current (callers bind first); writes one
        // device address, freed in `Drop`.
        check(
            unsafe { sys::cuMemAlloc_v2(&mut ptr, capacity) },
            "cuMemAlloc",
            || format!("{capacity} bytes for {what}"),
        )?;
        Ok(DevBuf {
            ptr,
            capacity,
            ctx: ctx.clone(),
        })
    }

    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Copies `src` into the start of the buffer; returns once `src` may be
    /// reused.
    pub fn upload(&self, src: &[u8], what: impl FnOnce() -> String) -> Result<(), RuntimeError> {
        if src.is_empty() {
            return Ok(());
        }
        if src.len() > self.capacity {
            return Err(RuntimeError::Cuda {
                call: "cuMemcpyHtoD".into(),
                what: what(),
                message: format!("{} bytes into a buffer of {}", src.len(), self.capacity),
            });
        }
        // SAFETY: the destination holds at least `src.len()` bytes (checked
        // above); pageable host-to-device copies return once the source has
        // been read, and run after all work issued before them.
        check(
            unsafe { sys::cuMemcpyHtoD_v2(self.ptr, src.as_ptr().cast(), src.len()) },
            "cuMemcpyHtoD",
            what,
        )
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from cuMemAlloc in this context and is freed
        // once; the owner drops it only when no issued work still uses it
        // (after a synchronize, or before any use). Errors cannot be
        // reported from a destructor; a failed free leaks.
        unsafe {
            let _ = sys::cuCtxSetCurrent(self.ctx.ctx);
            let _ = sys::cuMemFree_v2(self.ptr);
        }
    }
}

/// Copies `dst.len()` bytes from device address `src`; returns once they
/// have arrived (after all work issued before).
pub(crate) fn download(
    dst: &mut [u8],
    src: u64,
    what: impl FnOnce() -> String,
) -> Result<(), RuntimeError> {
    if dst.is_empty() {
        return Ok(());
    }
    // SAFETY: `src` addresses at least `dst.len()` bytes of a live
    // allocation (the executor sizes every buffer for its type under the
    // call's sizes); device-to-host copies into pageable memory complete
    // before returning.
    check(
        unsafe { sys::cuMemcpyDtoH_v2(dst.as_mut_ptr().cast(), src, dst.len()) },
        "cuMemcpyDtoH",
        what,
    )
}

/// Queues a copy of `n` bytes between device addresses.
pub(crate) fn copy(
    dst: u64,
    src: u64,
    n: usize,
    what: impl FnOnce() -> String,
) -> Result<(), RuntimeError> {
    if n == 0 || dst == src {
        return Ok(());
    }
    // SAFETY: both address at least `n` bytes of live allocations (plan
    // buffers sized under the call's sizes); the legacy default stream
    // orders it after earlier work.
    check(
        unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, n, std::ptr::null_mut()) },
        "cuMemcpyDtoDAsync",
        what,
    )
}

/// Queues a strided copy: `rows` rows of `width` bytes, row `r` from
/// `src + r * src_pitch` to `dst + r * dst_pitch`.
pub(crate) fn copy_2d(
    dst: u64,
    dst_pitch: usize,
    src: u64,
    src_pitch: usize,
    width: usize,
    rows: usize,
    what: impl FnOnce() -> String,
) -> Result<(), RuntimeError> {
    if width == 0 || rows == 0 {
        return Ok(());
    }
    let p = sys::CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcHost: std::ptr::null(),
        srcDevice: src,
        srcArray: std::ptr::null_mut(),
        srcPitch: src_pitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: std::ptr::null_mut(),
        dstDevice: dst,
        dstArray: std::ptr::null_mut(),
        dstPitch: dst_pitch,
        WidthInBytes: width,
        Height: rows,
    };
    // SAFETY: `p` describes device-to-device rows inside live allocations
    // (the caller's strided slice and its staging buffer); the driver reads
    // the descriptor before returning.
    check(
        unsafe { sys::cuMemcpy2DAsync_v2(&p, std::ptr::null_mut()) },
        "cuMemcpy2DAsync",
        what,
    )
}

/// Queues zero-filling `n` bytes at `dst`.
pub(crate) fn zero(dst: u64, n: usize, what: impl FnOnce() -> String) -> Result<(), RuntimeError> {
    if n == 0 {
        return Ok(());
    }
    // SAFETY: `dst` addresses at least `n` bytes of a live allocation.
    check(
        unsafe { sys::cuMemsetD8Async(dst, 0, n, std::ptr::null_mut()) },
        "cuMemsetD8Async",
        what,
    )
}

/// Why PTX may not load on this device: its `.target` is newer than the
/// device's compute capability.
fn target_hint(ptx: &str, info: &DeviceInfo) -> Option<String> {
    let target = ptx
        .lines()
        .find_map(|l| l.trim().strip_prefix(".target"))?
        .trim()
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()?
        .to_string();
    let digits: String = target
        .strip_prefix("sm_")?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let n: u32 = digits.parse().ok()?;
    let (major, minor) = info.compute_capability;
    (n > major * 10 + minor).then(|| {
        format!(
            "the PTX targets {target}, but {} is {}: compile for {}",
            info.name,
            info.sm(),
            info.sm()
        )
    })
}

/// A PTX module loaded (JIT-compiled by the driver) into a context.
pub(crate) struct Module {
    module: sys::CUmodule,
    ctx: Arc<Context>,
}

// SAFETY: a module belongs to its context, usable from any thread that
// binds it; the handle is only used by the owning executor.
unsafe impl Send for Module {}
// SAFETY: shared references only look functions up.
unsafe impl Sync for Module {}

/// Bytes of each JIT log buffer.
const LOG_BYTES: usize = 16 << 10;

impl Module {
    /// Loads PTX text; a JIT failure carries the driver's error log.
    pub fn load(ctx: &Arc<Context>, ptx: &str) -> Result<Module, RuntimeError> {
        let text = CString::new(ptx).map_err(|e| RuntimeError::Cuda {
            call: "cuModuleLoadDataEx".into(),
            what: "loading the PTX module".into(),
            message: format!("the PTX text holds a NUL byte at {}", e.nul_position()),
        })?;
        let mut error_log = vec![0u8; LOG_BYTES];
        let mut options = [
            sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        ];
        // Option values are passed as pointer-sized words: the buffer's
        // address, then its size as an integer.
        let mut values: [*mut c_void; 2] =
            [error_log.as_mut_ptr().cast(), LOG_BYTES as *mut c_void];
        let mut module: sys::CUmodule = std::ptr::null_mut();
        // SAFETY: `text` is NUL-terminated PTX; `options` and `values` have
        // the same length (passed), the log buffer holds LOG_BYTES bytes
        // and outlives the call; writes one module handle, unloaded in
        // `Drop`.
        let r = unsafe {
            sys::cuModuleLoadDataEx(
                &mut module,
                text.as_ptr().cast(),
                options.len() as c_uint,
                options.as_mut_ptr(),
                values.as_mut_ptr(),
            )
        };
        r.result().map_err(|e| {
            let end = error_log
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(error_log.len());
            let mut log = String::from_utf8_lossy(&error_log[..end]).into_owned();
            if let Some(hint) = target_hint(ptx, &ctx.info) {
                log = format!("{hint}\n{log}");
            }
            RuntimeError::Cuda {
                call: "cuModuleLoadDataEx".into(),
                what: format!("loading the PTX module on {}", ctx.info.sm()),
                message: if log.trim().is_empty() {
                    describe(e)
                } else {
                    format!("{}; JIT log:\n{}", describe(e), log.trim_end())
                },
            }
        })?;
        Ok(Module {
            module,
            ctx: ctx.clone(),
        })
    }

    /// The kernel `name`; [`RuntimeError::MissingKernel`] when the module
    /// has no such entry.
    pub fn function(&self, name: &str) -> Result<Function, RuntimeError> {
        let cname = CString::new(name).map_err(|_| RuntimeError::MissingKernel(name.into()))?;
        let mut f: sys::CUfunction = std::ptr::null_mut();
        // SAFETY: the module is loaded; `cname` is NUL-terminated; writes
        // one function handle, valid while the module is.
        let r = unsafe { sys::cuModuleGetFunction(&mut f, self.module, cname.as_ptr()) };
        if r == sys::CUresult::CUDA_ERROR_NOT_FOUND {
            return Err(RuntimeError::MissingKernel(name.into()));
        }
        check(r, "cuModuleGetFunction", || format!("kernel `{name}`"))?;
        let attr = |a: sys::CUfunction_attribute| -> Result<u32, RuntimeError> {
            let mut v: c_int = 0;
            // SAFETY: `f` is a valid function handle; writes one int.
            check(
                unsafe { sys::cuFuncGetAttribute(&mut v, a, f) },
                "cuFuncGetAttribute",
                || format!("{a:?} of kernel `{name}`"),
            )?;
            Ok(v.max(0) as u32)
        };
        use sys::CUfunction_attribute as F;
        Ok(Function {
            f,
            max_threads: attr(F::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            registers: attr(F::CU_FUNC_ATTRIBUTE_NUM_REGS)?,
        })
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: the module was loaded in this context and is unloaded
        // once, after the functions taken from it (owned by the same
        // executor, dropped first) and all work using them (synchronized).
        unsafe {
            let _ = sys::cuCtxSetCurrent(self.ctx.ctx);
            let _ = sys::cuModuleUnload(self.module);
        }
    }
}

/// A kernel of a loaded module.
pub(crate) struct Function {
    f: sys::CUfunction,
    /// The most threads per block this kernel can be launched with here
    /// (limited by its registers and the device).
    pub max_threads: u32,
    pub registers: u32,
}

// SAFETY: a function handle is an opaque token of its module, used only by
// the executor that owns the module, with the context bound.
unsafe impl Send for Function {}
// SAFETY: shared references only launch it, which the driver allows from
// any thread.
unsafe impl Sync for Function {}

impl Function {
    /// Queues the kernel on `blocks` blocks of `threads` threads, with the
    /// GPU ABI's parameters: the buffer addresses, then the sizes as i64.
    pub fn launch(
        &self,
        blocks: u32,
        threads: u32,
        args: &[u64],
        sizes: &[i64],
        what: impl FnOnce() -> String,
    ) -> Result<(), RuntimeError> {
        // cuLaunchKernel takes one pointer per parameter, to its value; it
        // copies the values before returning.
        let mut params: Vec<*mut c_void> = args
            .iter()
            .map(|a| a as *const u64 as *mut c_void)
            .chain(sizes.iter().map(|s| s as *const i64 as *mut c_void))
            .collect();
        // SAFETY: `f` is a loaded kernel whose `.entry` takes exactly these
        // parameters in this order (u64 addresses, then i64 sizes: the GPU
        // ABI; the plan's symbol order was checked against the kernel's);
        // every address points at a live buffer sized for its operand under
        // the call's sizes; `params` outlives the call; no dynamic shared
        // memory, legacy default stream, no `extra`.
        check(
            unsafe {
                sys::cuLaunchKernel(
                    self.f,
                    blocks,
                    1,
                    1,
                    threads,
                    1,
                    1,
                    0,
                    std::ptr::null_mut(),
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            },
            "cuLaunchKernel",
            what,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ptx_target_newer_than_the_device_is_named() {
        let info = DeviceInfo {
            ordinal: 0,
            name: "NVIDIA A100".into(),
            compute_capability: (8, 0),
            total_memory: 1 << 30,
            multiprocessors: 108,
            driver_version: (13, 0),
        };
        let hint = target_hint(".version 8.0\n.target sm_90a\n", &info).unwrap();
        assert!(
            hint.contains("sm_90a") && hint.contains("is sm_80"),
            "{hint}"
        );
        assert_eq!(target_hint(".target sm_80\n", &info), None);
        assert_eq!(target_hint("  .target sm_75, debug\n", &info), None);
        assert_eq!(target_hint("no target", &info), None);
    }
}
