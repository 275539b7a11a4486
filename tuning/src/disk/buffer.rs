//! A page-aligned heap buffer: O_DIRECT needs the memory, the offset and the length
//! aligned to the device's logical block size, and 4 KiB covers every device we run on.

use std::alloc::Layout;
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// Alignment of every probe buffer.
pub const ALIGN_BYTES: usize = 4096;

/// An owned, 4 KiB-aligned byte buffer.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    /// Allocates `len_bytes` (rounded up to [`ALIGN_BYTES`]) filled with a non-zero pattern, so
    /// no layer below can shortcut zero pages.
    pub fn new(len_bytes: usize) -> Result<AlignedBuf> {
        let len = len_bytes.max(1).div_ceil(ALIGN_BYTES) * ALIGN_BYTES;
        let layout = Layout::from_size_align(len, ALIGN_BYTES)
            .map_err(|e| Error::Invalid(format!("buffer of {len} bytes: {e}")))?;
        // SAFETY: `layout` has a non-zero size (at least ALIGN_BYTES).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw)
            .ok_or_else(|| Error::Invalid(format!("cannot allocate a {len}-byte I/O buffer")))?;
        let mut buf = AlignedBuf { ptr, layout };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in buf.as_mut_slice().chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(buf)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Always false: a buffer holds at least one block.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Start of the buffer, for the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at `layout.size()` bytes we allocated zeroed (so initialized)
        // and own; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `alloc` with exactly this `layout` and is freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_rounded_up() {
        let mut b = AlignedBuf::new(5000).unwrap();
        assert_eq!(b.len(), 8192);
        assert_eq!(b.as_mut_ptr() as usize % ALIGN_BYTES, 0);
        assert!(b.as_mut_slice().iter().any(|&x| x != 0));
    }
}
