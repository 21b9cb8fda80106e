//! Small helpers the crates' integration tests share.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A private folder for one test's files, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty folder under the system's temporary folder, named after `name`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "authwire-{name}-{}-{}",
            std::process::id(),
            authwire::random::hex(4)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        Self(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Write `content` to the file `name` in the folder; its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write a test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wait, on the runtime (not a test clock), until `condition` holds; panics after 10 s. For
/// background work a test has started by moving a `ManualClock`.
pub async fn wait_until(mut condition: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached within 10 s");
}

/// A program written by a test: a shell script `name` in `dir`, executable, running `script`
/// (fakes of `gcloud`, `az`, `azd` and credential executables). Unix only.
#[cfg(unix)]
pub fn fake_program(dir: &TempDir, name: &str, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.write(name, &format!("#!/bin/sh\n{script}\n"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("make it executable");
    path
}
