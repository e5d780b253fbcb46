//! Appending short byte strings without a `memory.copy`.
//!
//! A copy of a length known only at run time compiles to WebAssembly's
//! `memory.copy`, which wasmtime runs as a call out of the module into the
//! host (a trampoline, bounds checks, `memmove`): tens of nanoseconds,
//! whatever the length. Writing a record copies dozens of short keys and
//! values, so those calls were a tenth of its time. [`append`] copies up to
//! 16 bytes with two overlapping loads and stores instead, and leaves
//! longer copies to `memory.copy`.

/// Appends `bytes` to `out`.
#[inline(always)]
pub fn append(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n > 16 {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(n);
    // SAFETY: `out` has room for `n` more bytes (reserved above), which
    // `write` initializes, so the length may grow over them.
    unsafe {
        write(out.as_mut_ptr().add(out.len()), bytes);
        out.set_len(out.len() + n);
    }
}

/// Copies `bytes` to `dst`: up to 16 bytes without `memory.copy`.
///
/// # Safety
/// `dst` is valid for `bytes.len()` writes and does not overlap `bytes`.
#[inline(always)]
pub unsafe fn write(dst: *mut u8, bytes: &[u8]) {
    let n = bytes.len();
    let src = bytes.as_ptr();
    // SAFETY: every read is within `bytes` and every write within the
    // caller's `n` bytes at `dst`: for n in 8..=16 the two 8-byte words at
    // 0 and n - 8 cover the n bytes (they may overlap), likewise two 4-byte
    // words for n in 4..8, and single bytes at 0, n / 2 and n - 1 for n in
    // 1..4.
    unsafe {
        if n > 16 {
            std::ptr::copy_nonoverlapping(src, dst, n);
        } else if n >= 8 {
            let (head, tail) = (src.cast::<u64>().read_unaligned(), src.add(n - 8).cast::<u64>().read_unaligned());
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 {
            let (head, tail) = (src.cast::<u32>().read_unaligned(), src.add(n - 4).cast::<u32>().read_unaligned());
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else if n > 0 {
            let (first, middle, last) = (*src, *src.add(n / 2), *src.add(n - 1));
            *dst = first;
            *dst.add(n / 2) = middle;
            *dst.add(n - 1) = last;
        }
    }
}

/// A `Vec` of exactly `bytes`, copied with [`append`].
#[inline]
pub fn to_vec(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    append(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_is_appended_whole_after_what_was_there() {
        let source: Vec<u8> = (1..=40).collect();
        for before in [0, 1, 7, 30] {
            for n in 0..=source.len() {
                let mut out = vec![0xee; before];
                out.shrink_to_fit();
                append(&mut out, &source[..n]);
                assert_eq!(out.len(), before + n);
                assert!(out[..before].iter().all(|&b| b == 0xee), "{before} + {n}: the old bytes kept");
                assert_eq!(&out[before..], &source[..n], "{before} + {n}");
                assert_eq!(to_vec(&source[..n]), &source[..n]);
            }
        }
    }
}
