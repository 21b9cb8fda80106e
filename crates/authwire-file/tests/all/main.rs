//! The file store on real temporary folders.

use authwire::{CacheKey, StoreError, Token, TokenStore};
use authwire_file::FileStore;
use authwire_testkit::conformance;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        let dir = std::env::temp_dir().join(format!(
            "authwire-file-{name}-{}-{:x}",
            std::process::id(),
            h.finish()
        ));
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_conformance_suite() {
    let dir = TempDir::new("conformance");
    conformance::store_conformance(FileStore::new(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn a_restarted_authorizer_reuses_the_stored_token() {
    let dir = TempDir::new("restart");
    conformance::authorizer_restart_conformance(FileStore::new(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn folder_is_created_0700_and_files_0600() {
    let dir = TempDir::new("modes");
    let nested = dir.path().join("a/b");
    let store = FileStore::new(&nested).unwrap();
    assert_eq!(mode(&nested), 0o700);
    let key = CacheKey::new("k");
    store.save(&key, &Token::new("t")).await.unwrap();
    assert_eq!(mode(&store.path_for(&key)), 0o600);
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&nested)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test]
async fn loose_permissions_are_refused_with_the_fix() {
    let dir = TempDir::new("loose");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = FileStore::new(dir.path()).unwrap_err();
    let msg = authwire::error_chain(&e);
    assert!(msg.contains("mode 755") && msg.contains("chmod 700"), "{msg}");

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let store = FileStore::new(dir.path()).unwrap();
    let key = CacheKey::new("k");
    store.save(&key, &Token::new("SECRET-T")).await.unwrap();
    std::fs::set_permissions(store.path_for(&key), std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = store.load(&key).await.unwrap_err();
    let msg = authwire::error_chain(&e);
    assert!(msg.contains("mode 644") && msg.contains("chmod 600"), "{msg}");
    assert!(!msg.contains("SECRET-T"));
}

#[tokio::test]
async fn a_file_in_place_of_the_folder_is_refused() {
    let dir = TempDir::new("notadir");
    std::fs::write(dir.path(), "x").unwrap();
    let e = FileStore::new(dir.path()).unwrap_err();
    assert!(authwire::error_chain(&e).contains("is not a folder"), "{e}");
    std::fs::remove_file(dir.path()).unwrap();
}

#[tokio::test]
async fn corrupt_and_truncated_files_are_errors_naming_the_file() {
    let dir = TempDir::new("corrupt");
    let store = FileStore::new(dir.path()).unwrap();
    let key = CacheKey::new("k");
    store
        .save(&key, &Token::new("SECRET-T").with_refresh_token("SECRET-R"))
        .await
        .unwrap();
    let path = store.path_for(&key);
    let whole = std::fs::read(&path).unwrap();
    for broken in [
        &whole[..whole.len() / 2],
        b"",
        b"\x00\xff garbage",
        br#"{"v":99}"#,
    ] {
        std::fs::write(&path, broken).unwrap();
        let e = store.load(&key).await.unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
        let msg = authwire::error_chain(&e);
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!msg.contains("SECRET"), "{msg}");
    }
    // Saving again repairs it.
    store.save(&key, &Token::new("fresh")).await.unwrap();
    assert!(store.load(&key).await.unwrap().is_some());
}

const CHILD_ENV: &str = "AUTHWIRE_FILE_STORE_CHILD_DIR";

/// Run by a child process: write 1,500 tokens to the shared key as fast as possible. Ignored:
/// it is the child's entry point, not a test (the parent runs it with `--ignored`).
#[tokio::test]
#[ignore = "entry point of the child process of a_second_process_writing_concurrently_never_leaves_a_torn_file"]
async fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let store = FileStore::new(&dir).unwrap();
    for n in 0..1500 {
        store
            .save(&CacheKey::new("shared"), &token(&format!("child-{n}")))
            .await
            .unwrap();
    }
}

fn token(id: &str) -> Token {
    // Long tokens make a torn write likely to show, if writes were not atomic.
    Token::new(format!("{id}.{}", "x".repeat(8000))).with_refresh_token(format!("refresh-{id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_writing_concurrently_never_leaves_a_torn_file() {
    let dir = TempDir::new("two-processes");
    let store = FileStore::new(dir.path()).unwrap();
    let key = CacheKey::new("shared");
    store.save(&key, &token("parent-start")).await.unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_writer",
            "--exact",
            "--ignored",
            "--quiet",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .spawn()
        .unwrap();
    use authwire::secrecy::ExposeSecret;
    let check = |t: &Token| {
        let access = t.access_token().expose_secret();
        let id = access.split('.').next().unwrap().to_owned();
        assert_eq!(access.len(), id.len() + 1 + 8000, "torn token");
        assert_eq!(
            t.refresh_token().unwrap().expose_secret(),
            format!("refresh-{id}"),
            "mixed token"
        );
        id
    };
    // Wait (bounded) until the child writes, then write and read while it still does.
    let mut child_started = false;
    for _ in 0..2000 {
        let t = store.load(&key).await.unwrap().expect("the key is never missing");
        if check(&t).starts_with("child-") {
            child_started = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(child_started, "the child never wrote");
    let (mut rounds, mut child_seen_between) = (0, 0);
    while child.try_wait().unwrap().is_none() {
        store
            .save(&key, &token(&format!("parent-{rounds}")))
            .await
            .unwrap();
        let t = store.load(&key).await.unwrap().expect("the key is never missing");
        if check(&t).starts_with("child-") {
            child_seen_between += 1;
        }
        rounds += 1;
    }
    assert!(child.wait().unwrap().success(), "the child writer failed");
    assert!(
        rounds > 0 && child_seen_between > 0,
        "no interleaving: {rounds} rounds, {child_seen_between} child writes seen"
    );
    check(&store.load(&key).await.unwrap().unwrap());
}

fn backend(e: &StoreError) -> String {
    authwire::error_chain(e)
}

fn is_root() -> bool {
    // The uid that owns a file we just created is ours.
    use std::os::unix::fs::MetadataExt;
    let probe = std::env::temp_dir().join(format!("authwire-uid-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").unwrap();
    let uid = std::fs::metadata(&probe).unwrap().uid();
    std::fs::remove_file(&probe).unwrap();
    uid == 0
}

#[tokio::test]
async fn a_planted_symlink_is_refused_not_followed_for_token_and_lock_files() {
    // Issue 12, item 9: a symlink in place of the token file loaded a planted token, and one in
    // place of the lock file made a save create a file wherever it pointed.
    let t = TempDir::new("symlink");
    let store = FileStore::new(t.path()).unwrap();
    let key = CacheKey::new("planted");
    let planted = t.path().join("planted-elsewhere.json");
    std::fs::write(&planted, authwire::store::encode(&token("PLANTED"))).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&planted, store.path_for(&key)).unwrap();
    let e = store.load(&key).await.unwrap_err();
    assert!(backend(&e).contains("symbolic link"), "{e}");

    let elsewhere = TempDir::new("symlink-target");
    std::fs::create_dir_all(elsewhere.path()).unwrap();
    let target = elsewhere.path().join("created-through-the-link");
    std::os::unix::fs::symlink(&target, t.path().join(".authwire.lock")).unwrap();
    let e = store
        .save(&CacheKey::new("other"), &token("t"))
        .await
        .unwrap_err();
    assert!(backend(&e).contains("symbolic link"), "{e}");
    assert!(!target.exists(), "nothing was created through the link");
}

#[tokio::test]
async fn a_folder_loosened_after_the_store_was_opened_is_refused_on_use() {
    // Issue 12, item 9: the folder was checked once, at `new`.
    let t = TempDir::new("loosened");
    let store = FileStore::new(t.path()).unwrap();
    let key = CacheKey::new("k");
    store.save(&key, &token("t")).await.unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = store.load(&key).await.unwrap_err();
    assert!(backend(&e).contains("chmod 700"), "{e}");
    assert!(store.save(&key, &token("t2")).await.is_err());
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(store.load(&key).await.unwrap().is_some());
}

#[tokio::test]
async fn a_folder_or_file_owned_by_another_user_is_refused_even_as_root() {
    // Issue 12, item 9: run as root, a folder or token file owned by another user was trusted.
    let t = TempDir::new("owner");
    let store = FileStore::new(t.path()).unwrap();
    let key = CacheKey::new("k");
    store.save(&key, &token("t")).await.unwrap();
    if !is_root() {
        // Without root no file of another user can be made here; ours are accepted.
        assert!(store.load(&key).await.unwrap().is_some());
        return;
    }
    let nobody = 65534;
    std::os::unix::fs::chown(store.path_for(&key), Some(nobody), Some(nobody)).unwrap();
    let e = store.load(&key).await.unwrap_err();
    assert!(backend(&e).contains("belongs to uid 65534"), "{e}");
    std::os::unix::fs::chown(t.path(), Some(nobody), Some(nobody)).unwrap();
    let e = FileStore::new(t.path()).unwrap_err();
    assert!(backend(&e).contains("belongs to uid 65534"), "{e}");
    assert!(
        store.save(&key, &token("t2")).await.is_err(),
        "checked on use too"
    );
}

#[tokio::test]
async fn one_refresh_lease_per_key_freed_when_its_holder_dies() {
    // Issue 12, item 6: the file store had no refresh lease, so two processes redeemed one
    // rotating refresh token and the identity provider revoked the login.
    use authwire::RefreshLease;
    use std::time::Duration;
    let t = TempDir::new("lease");
    let a = FileStore::new(t.path()).unwrap();
    let b = FileStore::new(t.path()).unwrap();
    let key = CacheKey::new("k");
    let ttl = Duration::from_secs(30);
    let RefreshLease::Held(guard) = a.begin_refresh(&key, ttl).await.unwrap() else {
        panic!("the first taker holds it")
    };
    assert!(matches!(
        b.begin_refresh(&key, ttl).await.unwrap(),
        RefreshLease::HeldElsewhere
    ));
    assert!(
        matches!(
            b.begin_refresh(&CacheKey::new("other"), ttl).await.unwrap(),
            RefreshLease::Held(_)
        ),
        "per key"
    );
    guard.release().await;
    let RefreshLease::Held(guard) = b.begin_refresh(&key, ttl).await.unwrap() else {
        panic!("free again after release")
    };
    guard.release().await;

    // Another process takes the lease, then dies (killed, so it cannot release anything).
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_lease_holder",
            "--exact",
            "--ignored",
            "--quiet",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, t.path())
        .spawn()
        .unwrap();
    let mut waited = 0;
    while matches!(a.begin_refresh(&key, ttl).await.unwrap(), RefreshLease::Held(_)) {
        assert!(waited < 400, "the child never took the lease");
        tokio::time::sleep(Duration::from_millis(25)).await;
        waited += 1;
    }
    assert!(matches!(
        a.begin_refresh(&key, ttl).await.unwrap(),
        RefreshLease::HeldElsewhere
    ));
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        matches!(a.begin_refresh(&key, ttl).await.unwrap(), RefreshLease::Held(_)),
        "the dead holder's lease is free at once"
    );
}

#[tokio::test]
#[ignore = "entry point of the child process of one_refresh_lease_per_key_freed_when_its_holder_dies"]
async fn child_lease_holder() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let store = FileStore::new(&dir).unwrap();
    let ttl = std::time::Duration::from_secs(60);
    let key = CacheKey::new("k");
    loop {
        if let authwire::RefreshLease::Held(guard) = store.begin_refresh(&key, ttl).await.unwrap() {
            // Hold it until killed.
            tokio::time::sleep(std::time::Duration::from_secs(120)).await;
            guard.release().await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
