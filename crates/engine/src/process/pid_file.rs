//! `pid_file`: the master's pid, for init scripts and `kill`. It can only be
//! written once the master's pid is known, after daemonizing, when stderr no
//! longer reaches anyone; so `start()` first proves the path writable while
//! it can still report the failure to the operator.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

/// Fails when `path` cannot be created or written. Leaves an existing file
/// as it is and removes a file it had to create for the check.
pub fn check_writable(path: &str) -> io::Result<()> {
    let existed = Path::new(path).exists();
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if !existed {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

/// Writes the master's pid.
pub fn write(path: &str, pid: i32) -> io::Result<()> {
    std::fs::write(path, pid.to_string())
}

/// Removes the file when the server stops; one already gone is fine.
pub fn remove(path: &str) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("taskq-pidfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_writable_path_passes_and_leaves_nothing_behind() {
        let dir = scratch("ok");
        let p = dir.join("server.pid");
        check_writable(p.to_str().unwrap()).unwrap();
        assert!(!p.exists(), "the check removes the file it created");
        std::fs::write(&p, "123").unwrap();
        check_writable(p.to_str().unwrap()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "123",
            "an existing file is kept"
        );
        write(p.to_str().unwrap(), 42).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "42");
        remove(p.to_str().unwrap());
        assert!(!p.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_directory_or_a_directory_fails() {
        let dir = scratch("bad");
        let missing = dir.join("no-such-dir/server.pid");
        assert!(check_writable(missing.to_str().unwrap()).is_err());
        assert!(check_writable(dir.to_str().unwrap()).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
