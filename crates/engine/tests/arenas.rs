//! [`limit_arenas`] as the master uses it: the store's writer thread, started
//! first, gets the second malloc arena, and threads started after it get
//! none. Each case runs on the main thread of a fresh process (this binary
//! re-executed): arena counts are process-wide, and the test harness's own
//! threads would have arenas already.
//!
//! [`limit_arenas`]: taskq_engine::memory::limit_arenas

#[cfg(target_env = "gnu")]
fn main() {
    if let Ok(case) = std::env::var("TASKQ_ARENA_CASE") {
        println!("arenas: {}", run(&case));
        return;
    }
    let cases = [("one", 1), ("store", 2), ("glibc", 3)];
    for (case, expected) in cases {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("TASKQ_ARENA_CASE", case)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{case}: {stdout}{stderr}");
        assert!(
            stdout.contains(&format!("arenas: {expected}\n")),
            "{case}: expected {expected} arenas, {stdout}"
        );
        println!("arenas::{case} ... ok");
    }
}

#[cfg(not(target_env = "gnu"))]
fn main() {}

/// Starts the writer thread, then another thread that allocates (as the
/// manager watcher does), under `case`'s limit ("glibc": none), and counts
/// the arenas with both threads alive. In the "store" case the writer's
/// arena must already exist when `Committer::start` returns, or a thread
/// started after it could take it.
#[cfg(target_env = "gnu")]
fn run(case: &str) -> usize {
    use std::sync::{Arc, Mutex};
    use taskq_engine::committer::Committer;
    use taskq_engine::store::TaskStore;

    match case {
        "one" => taskq_engine::memory::limit_arenas(false),
        "store" => taskq_engine::memory::limit_arenas(true),
        _ => {}
    }
    let dir = std::env::temp_dir().join(format!("taskq-arenas-{}", std::process::id()));
    let (store, _) = TaskStore::open(&dir, |_| true).unwrap();
    let writer = Committer::start(Arc::new(Mutex::new(store)), Arc::new(|| {})).unwrap();
    let writer_arenas = arenas();
    let (allocated, wait) = std::sync::mpsc::channel();
    let (end, ended) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let blocks: Vec<Vec<u8>> = (0..64).map(|_| vec![1; 4096]).collect();
        allocated.send(()).unwrap();
        let _ = ended.recv();
        std::hint::black_box(blocks);
    });
    wait.recv().unwrap();
    let all = arenas();
    drop(end);
    other.join().unwrap();
    drop(writer);
    std::fs::remove_dir_all(&dir).unwrap();
    if case == "store" {
        assert_eq!(
            writer_arenas, 2,
            "the writer's arena exists once it started"
        );
    }
    all
}

/// The malloc arenas of this process, from glibc's own report.
#[cfg(target_env = "gnu")]
fn arenas() -> usize {
    let (mut buf, mut len) = (std::ptr::null_mut(), 0);
    // SAFETY: the stream writes into a buffer glibc allocates, read once it
    // is closed and then freed.
    unsafe {
        let stream = libc::open_memstream(&mut buf, &mut len);
        libc::malloc_info(0, stream);
        libc::fclose(stream);
        let report = std::slice::from_raw_parts(buf as *const u8, len);
        let n = String::from_utf8_lossy(report).matches("<heap nr=").count();
        libc::free(buf as *mut libc::c_void);
        n
    }
}
