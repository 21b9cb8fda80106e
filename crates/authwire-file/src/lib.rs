//! A file-backed [`TokenStore`] for authwire: tokens survive restarts and are shared by the
//! processes of one user.
//!
//! ```
//! use authwire::{CacheKey, Token, TokenStore};
//! use authwire_file::FileStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), authwire::StoreError> {
//! # let dir = std::env::temp_dir().join(format!("authwire-file-doc-{}", std::process::id()));
//! let store = FileStore::new(&dir)?;           // created 0700 if missing
//! let key = CacheKey::new("https://idp.example|cli");
//! store.save(&key, &Token::new("t").with_refresh_token("r")).await?;
//! assert!(store.load(&key).await?.is_some());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **One file per cache key**, named `<readable prefix>-<SHA-256 of the key>.json`, holding the
//!   token as [`authwire::store::encode`] writes it (format version 1, refresh token included).
//! - **Atomic writes**: the token is written to a temporary file in the same folder, flushed to
//!   disk (`fsync`), then renamed over the old file, and the folder is flushed. A reader sees the
//!   old token or the new one, never a torn file, even if the writer crashes.
//! - **Writers take turns**: an advisory lock on `.authwire.lock` in the folder serialises writers,
//!   across processes too.
//! - **One refresh at a time** ([`TokenStore::begin_refresh`]): the process that refreshes a
//!   key holds an advisory lock on `.<file>.lease`; the others wait for the token it saves
//!   instead of redeeming the same (rotating) refresh token. A holder that dies releases the
//!   lock with its last file descriptor, so the others go on at once.
//! - **Private and owned**: on Unix the folder is created `0700` and files `0600`; a folder or
//!   file that group or others can access, or that another user owns (checked as root too), is
//!   refused with an error that says how to fix it. The folder is checked again on every use,
//!   token, lock and lease files are opened with `O_NOFOLLOW` (a planted symlink is refused,
//!   not followed), and the store never falls back to a shared temporary folder. On Windows
//!   the store sets no ACL, so [`FileStore::new`] refuses there with an error that says so;
//!   [`FileStore::with_inherited_permissions`] opts in by name for a folder whose inherited ACL
//!   already keeps other users out (one under `%LOCALAPPDATA%`). Never a silent no-op.
//! - **Corruption is an error, not a panic**: an unreadable file is [`StoreError::Corrupt`]
//!   naming the file (the authorizer then fetches a new token, which overwrites it).

use authwire::{CacheKey, RefreshLease, StoreError, Token, TokenStore, async_trait};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest token file read; larger files are reported as corrupt.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
const LOCK_FILE: &str = ".authwire.lock";

/// Tokens in files under one folder. Cheap to clone.
#[derive(Clone)]
pub struct FileStore {
    dir: Arc<PathBuf>,
}

/// What went wrong with the store's files; the source of [`StoreError::Backend`].
#[derive(Debug)]
#[non_exhaustive]
pub enum FileStoreError {
    /// Group or others can access the folder or a file.
    Permissions {
        /// The path.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// The mode it should have.
        expected: u32,
    },
    /// The path exists but is not a folder.
    NotADirectory(PathBuf),
    /// Another user owns the folder or a file.
    Owner {
        /// The path.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// This process's effective uid.
        expected: u32,
    },
    /// A token, lock or lease file is a symbolic link (planted, or a mistake).
    Symlink(PathBuf),
    /// This platform has no permission model the store enforces (Windows: it sets no ACL), so
    /// [`FileStore::new`] refuses; see [`FileStore::with_inherited_permissions`].
    Unprotected(PathBuf),
    /// An I/O operation failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for FileStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileStoreError::Permissions { path, mode, expected } => write!(
                f,
                "refusing to use {}: its mode {mode:o} lets other users access tokens; run `chmod {expected:o} {}`",
                path.display(),
                path.display()
            ),
            FileStoreError::NotADirectory(p) => write!(f, "{} exists and is not a folder", p.display()),
            FileStoreError::Owner {
                path,
                owner,
                expected,
            } => write!(
                f,
                "refusing to use {}: it belongs to uid {owner}, not to this user (uid {expected}); remove it, or choose a folder of your own",
                path.display()
            ),
            FileStoreError::Symlink(p) => write!(
                f,
                "refusing to follow {}: it is a symbolic link where a token file belongs; remove it",
                p.display()
            ),
            FileStoreError::Unprotected(p) => write!(
                f,
                "refusing to keep tokens in {}: on this platform the file store cannot make a folder private to one user (it sets no Windows ACL), so tokens would be as readable as the folder's inherited permissions allow; use the OS keyring (authwire-keyring: the Windows Credential Manager), or, for a folder in your own profile such as %LOCALAPPDATA%, opt in with FileStore::with_inherited_permissions",
                p.display()
            ),
            FileStoreError::Io { op, path, source } => {
                write!(f, "could not {op} {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for FileStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileStoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| {
        StoreError::new(FileStoreError::Io {
            op,
            path: path.to_owned(),
            source,
        })
    }
}

impl FileStore {
    /// A store in `dir`, created (mode `0700`) if missing. Fails if `dir` is not a folder or if
    /// group or others can access it.
    ///
    /// On Windows it fails with [`FileStoreError::Unprotected`]: the store sets no ACL there,
    /// and it does not pretend to. Use the OS keyring, or
    /// [`with_inherited_permissions`](Self::with_inherited_permissions) for a folder whose
    /// inherited ACL already keeps other users out.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        if cfg!(not(unix)) {
            return Err(StoreError::new(FileStoreError::Unprotected(
                dir.as_ref().to_path_buf(),
            )));
        }
        Self::with_inherited_permissions(dir)
    }

    /// A store in `dir`, opted into by name where the store cannot enforce privacy itself
    /// (Windows): files get the folder's inherited ACL. A folder under the user's profile
    /// (`%LOCALAPPDATA%`) is readable by that user, SYSTEM and administrators by default; a
    /// folder elsewhere may be readable by anyone. On Unix this is [`new`](Self::new): the
    /// `0700`/`0600` rules and the owner check apply as ever.
    pub fn with_inherited_permissions(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        match fs::metadata(&dir) {
            Ok(_) => check_dir(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_private_dir(&dir)?,
            Err(e) => return Err(io_error("inspect", &dir)(e)),
        }
        Ok(Self { dir: Arc::new(dir) })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `key`'s token.
    pub fn path_for(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(file_name(key))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            // The folder may have changed since `new` (a chmod, a replaced folder): one stat.
            check_dir(&dir)?;
            f(&dir)
        })
        .await
        .map_err(|e| StoreError::new(format!("file store task failed: {e}")))?
    }
}

/// `<prefix>-<sha256>.json`: the prefix keeps file names readable, the hash keeps them unique
/// and safe whatever the key holds (`/`, `..`, unicode, 1 KB).
fn file_name(key: &CacheKey) -> String {
    format!("{}-{}.json", key.readable_prefix(40), key.sha256_hex())
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create", dir))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(io_error("create", dir))
}

/// The folder is a folder, private and ours.
fn check_dir(dir: &Path) -> Result<(), StoreError> {
    let meta = fs::metadata(dir).map_err(io_error("inspect", dir))?;
    if !meta.is_dir() {
        return Err(StoreError::new(FileStoreError::NotADirectory(dir.to_owned())));
    }
    check_private(dir, &meta, 0o700)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata, expected: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(StoreError::new(FileStoreError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            expected: me,
        }));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::new(FileStoreError::Permissions {
            path: path.to_owned(),
            mode,
            expected,
        }));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &fs::Metadata, _: u32) -> Result<(), StoreError> {
    Ok(())
}

/// Options for our own files: created `0600`, never through a symbolic link.
fn private_file_options() -> OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = OpenOptions::new();
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        o
    }
    #[cfg(not(unix))]
    OpenOptions::new()
}

/// `open` refused a symbolic link (`ELOOP` under `O_NOFOLLOW`): say so plainly.
fn open_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ELOOP) {
            return StoreError::new(FileStoreError::Symlink(path.to_owned()));
        }
        io_error(op, path)(e)
    }
}

/// Open (creating if needed) a lock or lease file of ours, and check it is ours.
fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    let file = private_file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(open_error("open the lock file", path))?;
    let meta = file.metadata().map_err(io_error("inspect", path))?;
    check_private(path, &meta, 0o600)?;
    Ok(file)
}

/// Hold the folder's writer lock while `f` runs.
fn with_lock<T>(dir: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let path = dir.join(LOCK_FILE);
    let lock = open_lock_file(&path)?;
    lock.lock().map_err(io_error("lock", &path))?;
    let result = f();
    drop(lock); // closing the file releases the lock
    result
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("flush", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn load_file(path: &Path) -> Result<Option<Token>, StoreError> {
    let file = match private_file_options().read(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(open_error("open", path)(e)),
    };
    let meta = file.metadata().map_err(io_error("inspect", path))?;
    check_private(path, &meta, 0o600)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(StoreError::corrupt(
            path.display().to_string(),
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let mut bytes = authwire::secrecy::zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    authwire::store::decode(&bytes)
        .map(Some)
        .map_err(|e| StoreError::corrupt(path.display().to_string(), e.to_string()))
}

fn save_file(dir: &Path, path: &Path, token: &Token) -> Result<(), StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let bytes = authwire::store::encode(token);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("token");
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    with_lock(dir, || {
        let written = (|| {
            let mut file = private_file_options()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_error("create", &tmp))?;
            file.write_all(&bytes).map_err(io_error("write", &tmp))?;
            file.sync_all().map_err(io_error("flush", &tmp))?;
            fs::rename(&tmp, path).map_err(io_error("replace", path))?;
            sync_dir(dir)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    })
}

/// Delete a token file and, when no refresh holds it, its lease file: a logout leaves nothing
/// behind. A lease held elsewhere stays (its refresh is under way); it is never unlinked
/// unlocked, which would let two processes lock two different files of one name.
fn delete_file(dir: &Path, path: &Path) -> Result<(), StoreError> {
    with_lock(dir, || {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("delete", path)(e)),
        }
        let lease = lease_path(path);
        if lease.exists()
            && let Some(held) = try_lease(path)?
        {
            match fs::remove_file(&lease) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("delete", &lease)(e)),
            }
            drop(held);
        }
        sync_dir(dir)
    })
}

#[async_trait]
impl TokenStore for FileStore {
    async fn load(&self, key: &CacheKey) -> Result<Option<Token>, StoreError> {
        let path = self.path_for(key);
        self.blocking(move |_| load_file(&path)).await
    }

    async fn save(&self, key: &CacheKey, token: &Token) -> Result<(), StoreError> {
        let path = self.path_for(key);
        let token = token.clone();
        self.blocking(move |dir| save_file(dir, &path, &token)).await
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        let path = self.path_for(key);
        self.blocking(move |dir| delete_file(dir, &path)).await
    }

    /// One refreshing process per key among those sharing this folder: an advisory lock on the
    /// key's lease file, taken without waiting. The lock needs no TTL: it goes with the holder's
    /// file descriptor, so a holder that dies frees it at once; a holder that hangs is outwaited
    /// by the authorizer's lease TTL.
    async fn begin_refresh(
        &self,
        key: &CacheKey,
        _ttl: std::time::Duration,
    ) -> Result<RefreshLease, StoreError> {
        let path = self.path_for(key);
        let lease = self.blocking(move |_| try_lease(&path)).await?;
        Ok(match lease {
            Some(file) => RefreshLease::Held(Box::new(FileLease(file))),
            None => RefreshLease::HeldElsewhere,
        })
    }
}

/// The lease file of a token file: `.<name>.lease` beside it.
fn lease_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("token");
    path.with_file_name(format!(".{name}.lease"))
}

/// Try to take `path`'s refresh lease without waiting.
fn try_lease(path: &Path) -> Result<Option<File>, StoreError> {
    let lease = lease_path(path);
    // A lease file can be unlinked (by a delete that held it) between our open and our lock:
    // a lock on an unlinked file excludes no one, so lock again on what the name now holds.
    for _ in 0..8 {
        let file = open_lock_file(&lease)?;
        match file.try_lock() {
            Ok(()) if still_named(&file, &lease) => return Ok(Some(file)),
            Ok(()) => continue,
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error("lock", path)(e)),
        }
    }
    Ok(None)
}

/// Whether `path` still names the file `file` has open.
fn still_named(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::symlink_metadata(path)) {
            (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        // Windows does not let a file that is open be deleted; the name cannot move away.
        let _ = (file, path);
        true
    }
}

/// A held refresh lease: the advisory lock on the lease file, released when the file closes
/// (by [`LeaseGuard::release`], a drop, or the death of the process).
struct FileLease(File);

#[async_trait]
impl authwire::LeaseGuard for FileLease {
    async fn release(self: Box<Self>) {
        drop(self.0);
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).finish()
    }
}

#[cfg(test)]
mod tests {
    /// Windows: a refusal that says why, and a named opt-in.
    #[cfg(not(unix))]
    #[test]
    fn without_a_permission_model_the_store_refuses_unless_opted_in() {
        let dir = std::env::temp_dir().join(format!("authwire-file-acl-{}", std::process::id()));
        let e = super::FileStore::new(&dir).err().expect("refused");
        assert!(authwire::error_chain(&e).contains("ACL"), "{e}");
        assert!(!dir.exists(), "nothing created before the refusal");
        super::FileStore::with_inherited_permissions(&dir).expect("opted in");
        let _ = std::fs::remove_dir_all(&dir);
    }

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("authwire-file-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        }
        dir
    }

    #[test]
    fn delete_removes_a_free_lease_file_and_keeps_a_held_one() {
        let dir = scratch("lease");
        let token = dir.join("t");
        // Free: a logout leaves no `.lease` file behind.
        drop(try_lease(&token).unwrap().expect("free"));
        assert!(lease_path(&token).exists());
        delete_file(&dir, &token).unwrap();
        assert!(!lease_path(&token).exists(), "the lease file outlived the token");
        // Held by a refresh: left alone, and still excludes a second holder.
        let held = try_lease(&token).unwrap().expect("free");
        delete_file(&dir, &token).unwrap();
        assert!(lease_path(&token).exists());
        assert!(try_lease(&token).unwrap().is_none(), "two holders of one lease");
        drop(held);
        assert!(try_lease(&token).unwrap().is_some());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_on_an_unlinked_lease_file_is_not_a_lease() {
        let dir = scratch("unlinked");
        let token = dir.join("t");
        let lease = lease_path(&token);
        let stale = open_lock_file(&lease).unwrap();
        fs::remove_file(&lease).unwrap();
        assert!(!still_named(&stale, &lease));
        let held = try_lease(&token).unwrap().expect("a new lease file");
        assert!(still_named(&held, &lease));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_names_are_safe_readable_and_distinct() {
        let a = file_name(&CacheKey::new("https://idp/token|client|a/b"));
        let b = file_name(&CacheKey::new("https://idp/token|client|a_b"));
        assert_ne!(a, b);
        assert!(a.starts_with("https___idp_token_client_a_b-"), "{a}");
        let long = file_name(&CacheKey::new("x".repeat(5000)));
        assert!(long.len() < 120, "{}", long.len());
        let dots = file_name(&CacheKey::new("../../etc/passwd"));
        assert!(!dots.contains('/') && !dots.starts_with('.'), "{dots}");
    }
}

/// docs/stores.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/stores.md")]
pub struct StoresGuide;
