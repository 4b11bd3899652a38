//! Aligned host buffers: 64-byte aligned (cache lines; vector loads of any
//! width), and from 1 MiB up mapped on 2 MiB boundaries with transparent
//! huge pages asked for (`madvise`), so that streaming a weight once per
//! token neither misses the TLB every 4 KiB nor stops the hardware
//! prefetchers at every small page's end.

use std::alloc::Layout;
use std::ptr::NonNull;

const LINE: usize = 64;
/// Buffers this large get their own huge-page-aligned mapping.
const HUGE_FROM: usize = 1 << 20;
const HUGE_PAGE: usize = 2 << 20;
/// The small page (x86-64, aarch64 default): mappings are made in these.
#[cfg(unix)]
const SMALL_PAGE: usize = 4 << 10;

/// A zero-initialized, aligned byte buffer.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    /// Bytes in use.
    len: usize,
    /// Bytes usable from `ptr`.
    cap: usize,
    alloc: Alloc,
}

enum Alloc {
    /// Nothing allocated (`cap` 0, a dangling aligned pointer).
    None,
    /// From the global allocator with this layout.
    Heap(Layout),
    /// An anonymous mapping of `len` bytes at `base` (`ptr` is within it).
    #[cfg(unix)]
    Map { base: *mut libc::c_void, len: usize },
}

// SAFETY: the buffer owns its memory exclusively; `&AlignedBuf` gives only
// shared reads of it.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above.
unsafe impl Sync for AlignedBuf {}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf {
            ptr: NonNull::<[u8; LINE]>::dangling().cast(),
            len: 0,
            cap: 0,
            alloc: Alloc::None,
        }
    }
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> AlignedBuf {
        let cap = len.max(1).div_ceil(LINE) * LINE;
        #[cfg(unix)]
        if cap >= HUGE_FROM {
            if let Some(b) = Self::mapped(len, cap, true) {
                return b;
            }
        }
        Self::heap_zeroed(len)
    }

    /// Zeroed, in small pages that the OS fills as they are first touched:
    /// for state sized for the worst case and mostly untouched (a KV cache
    /// for the whole context), where a huge page would zero 2 MiB for the
    /// first row written. Huge pages here were tried: decode attention at
    /// 1k tokens of context gained 0.5 ms a step (fewer TLB misses reading a
    /// head's keys a token row apart), but every generation's state was
    /// then a fresh mapping, and faulting in its huge pages (zeroing, at
    /// times compaction) made a 128-token prefill of the 134M Llama take 145
    /// or 190 ms by turns instead of 145. The executor now keeps a state's
    /// memory across generations (`init_state`), so only the first would
    /// pay that; not measured again.
    pub fn zeroed_lazy(len: usize) -> AlignedBuf {
        // A fresh mapping: the heap's `alloc_zeroed` may reuse freed memory
        // and clear it, faulting in every page (a 2048-token cache of the
        // 134M Llama, 151 MB, resident before the first token).
        #[cfg(unix)]
        if len >= HUGE_FROM {
            if let Some(b) = Self::mapped(len, len, false) {
                return b;
            }
        }
        Self::heap_zeroed(len)
    }

    /// Zeroed from the global allocator.
    fn heap_zeroed(len: usize) -> AlignedBuf {
        let cap = len.max(1).div_ceil(LINE) * LINE;
        let layout = Layout::from_size_align(cap, LINE).expect("buffer size fits a layout");
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(p) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf {
            ptr,
            len,
            cap,
            alloc: Alloc::Heap(layout),
        }
    }

    /// A fresh anonymous mapping (zero pages, untouched) aligned to a huge
    /// page, with huge pages asked for (`huge`) before anything faults them
    /// in; `None` if the mapping fails (the heap serves then).
    #[cfg(unix)]
    fn mapped(len: usize, cap: usize, huge: bool) -> Option<AlignedBuf> {
        let cap = cap.div_ceil(SMALL_PAGE) * SMALL_PAGE;
        let map_len = cap + HUGE_PAGE;
        // SAFETY: an anonymous private mapping; no file, no fixed address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let offset = (HUGE_PAGE - base as usize % HUGE_PAGE) % HUGE_PAGE;
        // SAFETY: `offset < HUGE_PAGE` and the mapping has `cap + HUGE_PAGE`
        // bytes, so `[ptr, ptr + cap)` lies inside it.
        let ptr = unsafe { (base as *mut u8).add(offset) };
        // Huge pages for the whole ones only: a partly used last huge page
        // would be faulted in whole (a 2.4 MB weight took 4 MiB, the 134M
        // Llama's load 165 MB more than its weights); the tail stays in
        // small pages.
        let whole = if huge { cap / HUGE_PAGE * HUGE_PAGE } else { 0 };
        if whole > 0 {
            // SAFETY: the range is inside the mapping; the advice only changes
            // how pages are backed (it failing leaves small pages).
            unsafe {
                libc::madvise(ptr.cast(), whole, libc::MADV_HUGEPAGE);
            }
        }
        Some(AlignedBuf {
            ptr: NonNull::new(ptr)?,
            len,
            cap,
            alloc: Alloc::Map { base, len: map_len },
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(bytes.len());
        b.as_bytes_mut().copy_from_slice(bytes);
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Grows (never shrinks) to at least `len` bytes; contents are not kept.
    pub fn ensure(&mut self, len: usize) {
        if len > self.cap {
            *self = AlignedBuf::zeroed(len);
        }
        self.len = self.len.max(len);
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `cap >= len` initialized bytes (zeroed
        // at allocation), or dangling and aligned with `len == 0`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        if self.cap == 0 {
            return AlignedBuf::default();
        }
        let mut b = AlignedBuf::zeroed(self.len);
        b.as_bytes_mut().copy_from_slice(self.as_bytes());
        b
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        match self.alloc {
            Alloc::None => {}
            // SAFETY: allocated by `alloc_zeroed` with this layout.
            Alloc::Heap(layout) => unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) },
            #[cfg(unix)]
            // SAFETY: the whole mapping made in `mapped`, unmapped once.
            Alloc::Map { base, len } => unsafe {
                libc::munmap(base, len);
            },
        }
    }
}

/// Writes a tensor's elements as little-endian bytes into `dst` (exactly
/// `numel * dtype size` bytes; `F64` storage is written as f32, its IR
/// dtype), without allocating.
pub fn write_tensor(t: &kiln_ir::Tensor, dst: &mut [u8]) {
    use kiln_ir::TensorData as D;
    fn put<T: Copy, const N: usize>(v: &[T], dst: &mut [u8], f: impl Fn(T) -> [u8; N]) {
        for (c, &x) in dst.chunks_exact_mut(N).zip(v) {
            c.copy_from_slice(&f(x));
        }
    }
    match &t.data {
        D::F32(v) => put(v, dst, f32::to_le_bytes),
        D::F16(v) => put(v, dst, |x| x.to_le_bytes()),
        D::BF16(v) => put(v, dst, |x| x.to_le_bytes()),
        D::F64(v) => put(v, dst, |x| (x as f32).to_le_bytes()),
        D::I32(v) => put(v, dst, i32::to_le_bytes),
        D::I64(v) => put(v, dst, i64::to_le_bytes),
        D::U8(v) => put(v, dst, |x| [x]),
        D::I8(v) => put(v, dst, i8::to_le_bytes),
        D::Bool(v) => put(v, dst, |x| [x as u8]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_aligned_and_grow() {
        for len in [0, 1, 63, 64, 1000, HUGE_FROM - 1, HUGE_FROM, 5 << 20] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.as_bytes().iter().all(|&x| x == 0));
            let align = if len >= HUGE_FROM { HUGE_PAGE } else { LINE };
            assert_eq!(b.as_mut_ptr() as usize % align, 0, "len {len}");
            if len > 0 {
                b.as_bytes_mut()[len - 1] = 7;
                let c = b.clone();
                assert_eq!(c.as_bytes(), b.as_bytes());
            }
        }
        let mut b = AlignedBuf::default();
        assert!(b.is_empty());
        b.ensure(3 << 20);
        assert_eq!(b.len(), 3 << 20);
        b.ensure(10);
        assert_eq!(b.len(), 3 << 20, "ensure never shrinks");
        assert_eq!(AlignedBuf::from_bytes(&[1, 2, 3]).as_bytes(), &[1, 2, 3]);
    }

    /// Lazily zeroed buffers are zero and writable to their last byte, also
    /// after a same-sized one was freed (which the heap would hand back and
    /// clear); sizes off the page size keep their last bytes usable.
    #[test]
    fn lazy_buffers_are_zero_after_reuse() {
        for len in [10, HUGE_FROM, (6 << 20) + 12_288 + 5] {
            for _ in 0..2 {
                let mut b = AlignedBuf::zeroed_lazy(len);
                assert_eq!(b.len(), len);
                assert!(b.as_bytes().iter().all(|&x| x == 0), "len {len}");
                b.as_bytes_mut().fill(0xAB);
                assert_eq!(b.as_bytes()[len - 1], 0xAB);
            }
        }
        let mut b = AlignedBuf::zeroed((2 << 20) + 100);
        b.as_bytes_mut().fill(1);
        assert_eq!(
            b.as_bytes().iter().map(|&x| x as usize).sum::<usize>(),
            (2 << 20) + 100
        );
    }
}
