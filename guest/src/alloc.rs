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
//! In front of both sits the request region: while it is open (the
//! records of one request being decoded), blocks are cut from one buffer
//! in a row, and freeing them does nothing; the next request starts over
//! at the buffer's beginning. A kept record's strings were the larger part
//! of its allocations, and taking a block from a free list meant reading
//! the freed block (the list's next address) out of cache: a twentieth of
//! a kept record's time in wasm. The buffer grows (for the next request)
//! when a request's records did not fit, up to [`REGION_MAX`]; what does
//! not fit is allocated as before.
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

/// The request region's first size.
const REGION_FIRST: usize = 256 << 10;
/// The most the request region grows to.
pub const REGION_MAX: usize = 32 << 20;

/// Small-block free lists and the request region over an inner allocator.
pub struct SizeClasses<A> {
    inner: A,
    /// Each class's most recently freed block; a free block holds the
    /// address of the next one of its class.
    free: UnsafeCell<[*mut u8; CLASSES]>,
    region: UnsafeCell<Region>,
}

/// A buffer blocks are cut from in a row while it is open.
struct Region {
    /// The buffer (null before the first reset), `end` one past it.
    start: *mut u8,
    end: *mut u8,
    /// Where the next block may start.
    next: *mut u8,
    /// Whether allocations are cut from the region.
    open: bool,
    /// Bytes asked for while open that did not fit, since the last reset.
    missed: usize,
}

impl Region {
    /// Whether `block` was cut from the region.
    fn holds(&self, block: *mut u8) -> bool {
        block >= self.start && block < self.end
    }

    /// A block of `layout` cut after the last one; null if it does not fit.
    fn cut(&mut self, layout: Layout) -> *mut u8 {
        let at = self.next as usize;
        let pad = at.wrapping_neg() & (layout.align() - 1);
        if self.start.is_null() || layout.size() + pad > self.end as usize - at {
            self.missed = self.missed.saturating_add(layout.size());
            return ptr::null_mut();
        }
        // SAFETY: `pad + size` bytes from `next` are within the buffer
        // (checked above).
        unsafe {
            let block = self.next.add(pad);
            self.next = block.add(layout.size());
            block
        }
    }
}

// SAFETY: the component is a single-threaded wasm32 instance: there is no
// other thread to share the free lists with.
#[cfg(target_arch = "wasm32")]
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

impl<A> SizeClasses<A> {
    /// Free lists, all empty, over `inner`.
    pub const fn new(inner: A) -> Self {
        let region =
            Region { start: ptr::null_mut(), end: ptr::null_mut(), next: ptr::null_mut(), open: false, missed: 0 };
        SizeClasses { inner, free: UnsafeCell::new([ptr::null_mut(); CLASSES]), region: UnsafeCell::new(region) }
    }

    /// Opens the request region (allocations are cut from it until
    /// [`SizeClasses::close_region`]); returns whether it was open.
    pub fn open_region(&self) -> bool {
        // SAFETY: single-threaded (see `Sync`); no reference outlives this.
        let region = unsafe { &mut *self.region.get() };
        std::mem::replace(&mut region.open, true)
    }

    /// Closes the request region, or leaves it open if `was_open`.
    pub fn close_region(&self, was_open: bool) {
        // SAFETY: as in `open_region`.
        unsafe { (*self.region.get()).open = was_open };
    }
}

impl<A: GlobalAlloc> SizeClasses<A> {
    /// Starts the request region over at its beginning, first growing it
    /// if the last request's blocks did not all fit.
    ///
    /// # Safety
    /// No block cut from the region may be in use any more.
    pub unsafe fn reset_region(&self) {
        // SAFETY: single-threaded (see `Sync`); no reference outlives this.
        let region = unsafe { &mut *self.region.get() };
        let size = region.end as usize - region.start as usize;
        let wanted = if region.start.is_null() {
            REGION_FIRST
        } else {
            (region.next as usize - region.start as usize)
                .saturating_add(region.missed)
                .min(REGION_MAX)
                .next_power_of_two()
        };
        if wanted > size {
            // SAFETY: the old buffer is the inner allocator's, with this
            // layout, and no block of it is in use (the caller's promise).
            unsafe {
                if !region.start.is_null() {
                    self.inner.dealloc(region.start, Layout::from_size_align_unchecked(size, ALIGN));
                }
                let start = self.inner.alloc(Layout::from_size_align_unchecked(wanted, ALIGN));
                let len = if start.is_null() { 0 } else { wanted };
                region.start = start;
                region.end = start.wrapping_add(len);
            }
        }
        region.next = region.start;
        region.missed = 0;
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
        // SAFETY: single-threaded (see `Sync`); no reference to the region
        // outlives this block.
        let region = unsafe { &mut *self.region.get() };
        if region.open {
            let block = region.cut(layout);
            if !block.is_null() {
                return block;
            }
        }
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
        // SAFETY: as in `alloc`.
        if unsafe { (*self.region.get()).holds(block) } {
            return;
        }
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
        // SAFETY: as in `alloc`.
        let region = unsafe { &mut *self.region.get() };
        if region.holds(block) {
            // The region's last block grows (or shrinks) in place while the
            // region is open and has room; any other moves.
            let end = block.wrapping_add(layout.size());
            if region.open && end == region.next && new_size <= region.end as usize - block as usize {
                region.next = block.wrapping_add(new_size);
                return block;
            }
            // SAFETY: a fresh block; the region's old one is left as is.
            unsafe {
                let moved = self.alloc(new);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                }
                return moved;
            }
        }
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

    #[test]
    fn the_open_region_cuts_blocks_in_a_row_and_the_next_request_starts_over() {
        let a = SizeClasses::new(System);
        let layout = |size, align| Layout::from_size_align(size, align).unwrap();
        unsafe {
            a.reset_region();
            assert!(!a.open_region());
            let first = a.alloc(layout(5, 1));
            let second = a.alloc(layout(24, 8));
            // Cut in a row, aligned, and freeing them does nothing.
            assert_eq!(second as usize, (first as usize + 5).next_multiple_of(8));
            second.write_bytes(0xab, 24);
            a.dealloc(first, layout(5, 1));
            assert_eq!(a.alloc(layout(3, 1)), second.add(24));
            // The last block grows in place; another one moves, bytes kept.
            let last = a.alloc(layout(4, 1));
            last.copy_from_nonoverlapping(b"abcd".as_ptr(), 4);
            assert_eq!(a.realloc(last, layout(4, 1), 400), last);
            let moved = a.realloc(second, layout(24, 8), 48);
            assert_ne!(moved, second);
            assert!(std::slice::from_raw_parts(moved, 24).iter().all(|b| *b == 0xab));
            a.close_region(false);
            // Closed: blocks come from the size classes, not the region.
            let outside = a.alloc(layout(24, 8));
            assert!(!(*a.region.get()).holds(outside));
            // Grown while closed, a region block moves out of it.
            let out = a.realloc(last, layout(400, 1), 800);
            assert!(!(*a.region.get()).holds(out));
            assert_eq!(std::slice::from_raw_parts(out, 4), b"abcd");
            a.dealloc(out, layout(800, 1));
            a.dealloc(outside, layout(24, 8));
            // The next request starts at the beginning.
            a.reset_region();
            a.open_region();
            assert_eq!(a.alloc(layout(5, 1)), first);
            a.close_region(false);
        }
    }

    #[test]
    fn a_region_too_small_for_a_request_grows_for_the_next_one() {
        let a = SizeClasses::new(System);
        let big = Layout::from_size_align(REGION_FIRST / 2 + 1, 1).unwrap();
        unsafe {
            a.reset_region();
            a.open_region();
            let fits = a.alloc(big);
            assert!((*a.region.get()).holds(fits));
            // The second does not fit: it is the size classes' (the inner
            // allocator's), and the region is sized for both next time.
            let missed = a.alloc(big);
            assert!(!missed.is_null() && !(*a.region.get()).holds(missed));
            missed.write_bytes(1, big.size());
            a.dealloc(missed, big);
            a.close_region(false);
            a.reset_region();
            a.open_region();
            let blocks = [a.alloc(big), a.alloc(big)];
            assert!(blocks.iter().all(|b| (*a.region.get()).holds(*b)));
            a.close_region(false);
            // Never past REGION_MAX: what does not fit is allocated as before.
            let huge = Layout::from_size_align(REGION_MAX, 1).unwrap();
            a.reset_region();
            a.open_region();
            let outside = a.alloc(huge);
            a.close_region(false);
            a.dealloc(outside, huge);
            a.reset_region();
            let region = &*a.region.get();
            assert_eq!(region.end as usize - region.start as usize, REGION_MAX);
        }
    }
}
