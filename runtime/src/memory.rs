//! 64-byte aligned host buffers (cache lines; vector loads of any width).

use bytemuck::{Pod, Zeroable};

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A zero-initialized, 64-byte aligned byte buffer.
#[derive(Clone, Default)]
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf {
            lines: vec![Line([0; 64]); len.div_ceil(64).max(1)],
            len,
        }
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
        if len > self.lines.len() * 64 {
            *self = AlignedBuf::zeroed(len);
        }
        self.len = self.len.max(len);
    }

    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        bytemuck::cast_slice_mut::<Line, u8>(&mut self.lines).as_mut_ptr()
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
