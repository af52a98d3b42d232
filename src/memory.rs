//! Giving freed memory back to the system after a burst. glibc keeps freed
//! heap memory for reuse and only returns what lies at the top of the heap,
//! so a process that once buffered a burst would otherwise stay at its
//! high-water mark for good.

/// Returns every free page of the heap to the system. It walks the
/// allocator's free lists, so callers do it after bursts, not per message.
#[cfg(target_env = "gnu")]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

/// Other allocators return memory on their own terms.
#[cfg(not(target_env = "gnu"))]
pub fn release_free_memory() {}
