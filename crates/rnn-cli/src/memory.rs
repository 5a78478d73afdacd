//! How the `rnn` process asks glibc to treat freed memory.
//!
//! A training step allocates its large buffers (saved gates, their gradients: tens of MB for a
//! medium layer) and frees them at its end. By default glibc serves such blocks with fresh
//! `mmap`s and gives them back with `munmap` (or trims the heap) on free, so every step pays a
//! page fault and the kernel's zeroing for each 4 KiB page again: 10-30% of a step's time on
//! the benchmark presets. Here freed memory stays in the process and the next step reuses it.
//! Peak memory is unchanged (the same buffers are live at the peak); the process simply does
//! not shrink between steps.
//!
//! A program that embeds the library can do the same (`mallopt`, or an allocator such as
//! mimalloc or jemalloc configured to retain memory).

/// Keeps freed memory in the process (glibc on Linux; elsewhere nothing changes).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; called before any other thread
    // exists.
    unsafe {
        // Serve every block from the heap (no per-block mmap) and never trim it.
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
