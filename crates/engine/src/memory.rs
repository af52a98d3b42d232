//! Giving freed memory back to the system after a burst. glibc keeps freed
//! heap memory for reuse and only returns what lies at the top of the heap,
//! so a process that once buffered a burst would otherwise stay at its
//! high-water mark for good.

/// A collection a burst grew gives back capacity it no longer needs once it
/// has more than this many slots (a few tens of KiB; below it, shrinking
/// saves less than it costs).
const KEEP_SLOTS: usize = 1024;

/// The capacity a collection holding `len` items in `capacity` slots should
/// shrink to after a burst drained (under a quarter full), if any.
pub fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    (capacity > KEEP_SLOTS && len < capacity / 4).then_some(len * 2)
}

/// Shrinks a deque by [`shrunk_capacity`], so a drained burst does not keep
/// its high-water mark.
pub fn give_back_room<T>(q: &mut std::collections::VecDeque<T>) {
    if let Some(room) = shrunk_capacity(q.len(), q.capacity()) {
        q.shrink_to(room);
    }
}

/// Returns every free page of the heap to the system. It walks the
/// allocator's free lists, so callers do it after bursts, not per message.
#[cfg(target_env = "gnu")]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

/// [`release_free_memory`], first emptying this thread's malloc cache into
/// the heap (see [`flush_thread_cache`]). For the process that buffered the
/// burst, the master. Not for forked workers: emptying the cache allocates
/// a few hundred chunks, and carving them from heap pages still shared
/// with the parent would copy those pages into every worker.
#[cfg(target_env = "gnu")]
pub fn release_free_and_cached_memory() {
    flush_thread_cache();
    release_free_memory();
}

/// Limits the master's malloc arenas, before it starts threads. glibc
/// gives each new thread an arena of its own, and what an arena frees stays
/// resident in it. The manager watcher's arena and the one the trimmer's
/// short-lived thread left were most of what the master grew after its
/// first tasks (bench scenario 6: 150–400 kB, now under 60 kB in most
/// runs), so every thread allocates from the main arena, except the task
/// store's writer (`store_writer`): it allocates redb's pages while the
/// event loop allocates task buffers, and in one arena each waited for the
/// other's lock (0.02–0.03 futex calls per task in a durable drain, the
/// loop's `realloc`s behind the writer's page reads). The writer is the
/// first thread the master starts ([`crate::committer::Committer::start`]
/// returns once it has allocated), so the second arena is its own; threads
/// started later share one of the two. Small allocations still skip the
/// arena's lock through each thread's cache.
#[cfg(target_env = "gnu")]
pub fn limit_arenas(store_writer: bool) {
    let arenas = if store_writer { 2 } else { 1 };
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

/// Other allocators return memory on their own terms.
#[cfg(not(target_env = "gnu"))]
pub fn release_free_memory() {}

/// Other allocators arrange their arenas on their own terms.
#[cfg(not(target_env = "gnu"))]
pub fn limit_arenas(_store_writer: bool) {}

/// Other allocators return memory on their own terms.
#[cfg(not(target_env = "gnu"))]
pub fn release_free_and_cached_memory() {}

/// glibc's per-thread cache keeps up to this many freed chunks of each
/// small size (`glibc.malloc.tcache_count`, default 7)...
#[cfg(target_env = "gnu")]
const TCACHE_COUNT: usize = 7;
/// ...in this many size classes, 16 bytes apart, the smallest holding 24
/// bytes (`glibc.malloc.tcache_max`, default 1032 bytes).
#[cfg(target_env = "gnu")]
const TCACHE_BINS: usize = 64;

/// Hands the chunks in this thread's malloc cache back to the heap, where
/// `malloc_trim` can return their pages. `malloc_trim` does not look into
/// the cache, and after a burst the cache holds the last chunks the burst
/// freed, scattered through the heap: each kept a page resident (about
/// 0.8 MiB in the master after a million tasks). Taking every cached chunk
/// out with `malloc` and freeing them on a short-lived thread puts them in
/// the heap's free lists: a thread's own cache is emptied into the heap
/// when it exits.
#[cfg(target_env = "gnu")]
fn flush_thread_cache() {
    let mut taken = Chunks(Vec::with_capacity(TCACHE_BINS * TCACHE_COUNT));
    for bin in 0..TCACHE_BINS {
        for _ in 0..TCACHE_COUNT {
            // SAFETY: plain malloc; `Chunks` frees every pointer once.
            let p = unsafe { libc::malloc(24 + 16 * bin) };
            if !p.is_null() {
                taken.0.push(p as usize);
            }
        }
    }
    // Should the thread not start, the closure is dropped here and the
    // chunks go back into this thread's cache: no worse than before.
    if let Ok(thread) = std::thread::Builder::new()
        .name("taskq-trim".into())
        .spawn(move || drop(taken))
    {
        let _ = thread.join();
    }
}

/// Chunks from `malloc`, freed when dropped (on whichever thread drops
/// them: that is the point). Held as addresses so they can cross threads.
#[cfg(target_env = "gnu")]
struct Chunks(Vec<usize>);

#[cfg(target_env = "gnu")]
impl Drop for Chunks {
    fn drop(&mut self) {
        for p in self.0.drain(..) {
            // SAFETY: each came from malloc and is freed once.
            unsafe { libc::free(p as *mut libc::c_void) };
        }
    }
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::*;

    /// Bytes glibc counts as allocated in all arenas; chunks in a thread's
    /// cache count as allocated.
    fn in_use() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.uordblks
    }

    /// Runs `check` in a forked child, where no other test thread
    /// allocates, and returns whether it held.
    fn in_child(check: fn() -> bool) -> bool {
        // SAFETY: the child only allocates (glibc's fork handler leaves
        // malloc usable), starts a thread and exits without unwinding.
        match unsafe { libc::fork() } {
            0 => crate::process::exit::now(if check() { 0 } else { 1 }),
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
            }
            _ => panic!("fork failed"),
        }
    }

    #[test]
    fn flushing_moves_cached_chunks_back_to_the_heap() {
        assert!(in_child(|| {
            // Fill this thread's cache: freed chunks of every cached size.
            let chunks: Vec<_> = (0..TCACHE_BINS)
                .flat_map(|bin| (0..TCACHE_COUNT).map(move |_| 24 + 16 * bin))
                .map(|size| unsafe { libc::malloc(size) })
                .collect();
            for p in chunks {
                unsafe { libc::free(p) };
            }
            let cached = in_use();
            flush_thread_cache();
            // About 230 KB sat in the cache; allow for the thread's own.
            cached.saturating_sub(in_use()) > 200_000
        }));
    }

    #[test]
    fn freeing_on_this_thread_would_not_have() {
        assert!(in_child(|| {
            let chunks: Vec<_> = (0..TCACHE_COUNT)
                .map(|_| unsafe { libc::malloc(1000) })
                .collect();
            let before = in_use();
            // By reference: freeing the Vec's own buffer here could land
            // outside a full cache bin and change the count by itself.
            for p in &chunks {
                unsafe { libc::free(*p) };
            }
            in_use() == before
        }));
    }
}
