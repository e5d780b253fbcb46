//! The component's memory allocator: free lists of small blocks in front
//! of the C library's `malloc`.
//!
//! A batch allocates and frees a few strings per attribute (decoding, then
//! dropping the request), and every one went through wasi-libc's dlmalloc,
//! whose `free` coalesces neighbours and bins chunks: about a tenth of the
//! time of a kept record in wasm. Here a block of up to [`LARGEST`] bytes is
//! rounded up to a power of two and, once freed, kept on its size class's
//! list for the next allocation of that class: a pop and a push. Larger
//! blocks, and any block with an alignment above [`ALIGN`], go to the inner
//! allocator as before. Freed small blocks are not given back to the inner
//! allocator, so a class holds at most its peak use (a wasm memory never
//! shrinks anyway).
//!
//! It serves the component (wasm32, single-threaded) as its global
//! allocator; natively it is a plain type, tested against `System`.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest block: a size class is `SMALLEST << class`.
const SMALLEST: usize = 16;
/// The largest block kept on a free list.
pub const LARGEST: usize = 1024;
/// The alignment of every small block (as the inner allocator's).
pub const ALIGN: usize = 16;
/// Size classes: 16, 32, ..., 1024 bytes.
const CLASSES: usize = (LARGEST / SMALLEST).trailing_zeros() as usize + 1;

/// Small-block free lists over an inner allocator.
pub struct SizeClasses<A> {
    inner: A,
    /// Each class's most recently freed block; a free block holds the
    /// address of the next one of its class.
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: the component is a single-threaded wasm32 instance: there is no
// other thread to share the free lists with.
#[cfg(target_arch = "wasm32")]
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

impl<A> SizeClasses<A> {
    /// Free lists, all empty, over `inner`.
    pub const fn new(inner: A) -> Self {
        SizeClasses { inner, free: UnsafeCell::new([ptr::null_mut(); CLASSES]) }
    }
}

/// The size class of a layout; `None` for a block the inner allocator keeps.
fn class(layout: Layout) -> Option<usize> {
    if layout.size() > LARGEST || layout.align() > ALIGN {
        return None;
    }
    let size = layout.size().max(SMALLEST).next_power_of_two();
    Some((size / SMALLEST).trailing_zeros() as usize)
}

/// The layout the inner allocator gives a block of `class`.
fn block(class: usize) -> Layout {
    Layout::from_size_align(SMALLEST << class, ALIGN).expect("size classes are valid layouts")
}

// SAFETY: a block on a free list is one this allocator handed out for the
// same class and the caller freed; it is handed out again only once.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: the caller's layout, passed on.
            return unsafe { self.inner.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`); no reference to the lists
        // outlives this call.
        let free = unsafe { &mut *self.free.get() };
        let head = free[c];
        if head.is_null() {
            // SAFETY: a non-zero size.
            return unsafe { self.inner.alloc(block(c)) };
        }
        // SAFETY: a free block starts with the next free block's address
        // (written by `dealloc`, aligned to ALIGN).
        free[c] = unsafe { head.cast::<*mut u8>().read() };
        head
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: allocated by the inner allocator with this layout.
            return unsafe { self.inner.dealloc(block, layout) };
        };
        // SAFETY: as in `alloc`; the block is at least 16 bytes and aligned.
        unsafe {
            let free = &mut *self.free.get();
            block.cast::<*mut u8>().write(free[c]);
            free[c] = block;
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is valid for the alignment.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            // The block already holds the new size.
            (Some(a), Some(b)) if a == b => block,
            // SAFETY: both with the inner allocator, which may grow in place.
            (None, None) => unsafe { self.inner.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: a fresh block, the smaller of the two sizes copied,
                // the old block freed with its own layout.
                unsafe {
                    let moved = self.alloc(new);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn classes_round_up_to_powers_of_two_and_large_blocks_pass_through() {
        let at = |size, align| class(Layout::from_size_align(size, align).unwrap());
        assert_eq!((at(1, 1), at(16, 8), at(17, 1), at(1024, 16)), (Some(0), Some(0), Some(1), Some(6)));
        assert_eq!((at(1025, 1), at(8, 32)), (None, None));
        assert_eq!(CLASSES, 7);
    }

    #[test]
    fn a_freed_block_is_reused_for_its_class_only_and_keeps_its_bytes_apart() {
        let a = SizeClasses::new(System);
        let small = Layout::from_size_align(24, 8).unwrap();
        let other = Layout::from_size_align(40, 8).unwrap();
        unsafe {
            let first = a.alloc(small);
            let second = a.alloc(small);
            assert_ne!(first, second);
            assert_eq!(first as usize % ALIGN, 0);
            second.write_bytes(0xab, 24);
            a.dealloc(first, small);
            // Another class does not take it; its own class does.
            let elsewhere = a.alloc(other);
            assert_ne!(elsewhere, first);
            assert_eq!(a.alloc(small), first);
            assert!(std::slice::from_raw_parts(second, 24).iter().all(|b| *b == 0xab));
            // Last freed, first reused.
            a.dealloc(second, small);
            a.dealloc(first, small);
            assert_eq!((a.alloc(small), a.alloc(small)), (first, second));
            for (p, l) in [(first, small), (second, small), (elsewhere, other)] {
                a.dealloc(p, l);
            }
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_across_classes_and_into_large_blocks() {
        let a = SizeClasses::new(System);
        unsafe {
            let mut layout = Layout::from_size_align(5, 1).unwrap();
            let mut p = a.alloc(layout);
            p.copy_from_nonoverlapping(b"hello".as_ptr(), 5);
            // Within its class the block stays; across classes and past
            // LARGEST it moves with its bytes.
            let same = a.realloc(p, layout, 12);
            assert_eq!(same, p);
            layout = Layout::from_size_align(12, 1).unwrap();
            for size in [100, 2000, 4000, 300] {
                p = a.realloc(p, layout, size);
                layout = Layout::from_size_align(size, 1).unwrap();
                assert_eq!(std::slice::from_raw_parts(p, 5), b"hello");
            }
            a.dealloc(p, layout);
        }
    }
}
