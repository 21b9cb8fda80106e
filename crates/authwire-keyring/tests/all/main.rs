//! The keyring store against the real OS keyring: on Linux, the kernel's keyutils session
//! keyring (`cargo xtask ci` runs the tests under `keyctl session -`).

use authwire_keyring::KeyringStore;
use authwire_testkit::conformance;

fn store() -> KeyringStore {
    let store = KeyringStore::new("authwire-tests");
    store
        .backend_available()
        .expect("the OS keyring backend is there");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_conformance_suite() {
    conformance::store_conformance(store()).await;
}

#[tokio::test]
async fn a_restarted_authorizer_reuses_the_stored_token() {
    conformance::authorizer_restart_conformance(store()).await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn entries_are_real_kernel_keys() {
    use authwire::{CacheKey, Token, TokenStore};
    let store = store();
    let key = CacheKey::new(format!("visible-{}", std::process::id()));
    store.save(&key, &Token::new("t")).await.unwrap();
    // The key is findable by its description with the keyctl tool, when it is installed.
    let description = format!("keyring:{}@authwire-tests", KeyringStore::entry_user(&key));
    if let Ok(out) = std::process::Command::new("keyctl")
        .args(["search", "@s", "user", &description])
        .output()
    {
        assert!(
            out.status.success(),
            "keyctl did not find {description}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    store.delete(&key).await.unwrap();
    assert!(store.load(&key).await.unwrap().is_none());
}
