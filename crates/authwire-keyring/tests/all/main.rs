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
    let description = format!("authwire-tests/{}", KeyringStore::entry_user(&key));
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

#[tokio::test]
async fn a_load_or_a_save_right_after_a_delete_sees_no_key_and_succeeds() {
    // Issue 24, item 7: on Linux a delete invalidated the key but left it linked until the
    // kernel collected it, so a load right after sometimes failed with "key revoked": a logout
    // followed by a login or a token request failed. Many rounds, to meet the race.
    use authwire::{CacheKey, Token, TokenStore};
    let store = store();
    let key = CacheKey::new(format!("delete-race-{}", std::process::id()));
    for round in 0..300 {
        store.save(&key, &Token::new(format!("t-{round}"))).await.unwrap();
        store.delete(&key).await.unwrap();
        assert!(
            store.load(&key).await.unwrap().is_none(),
            "round {round}: a deleted token is missing, not an error"
        );
        store
            .save(&key, &Token::new(format!("again-{round}")))
            .await
            .unwrap();
        let back = store
            .load(&key)
            .await
            .unwrap()
            .expect("saved right after the delete");
        assert!(back.same_access_token(&Token::new(format!("again-{round}"))));
        store.delete(&key).await.unwrap();
    }
}

/// The child processes of the two-session test: save, or load, in the keyring named by
/// `AUTHWIRE_KEYRING_SCOPE`, printing what happened on one marked line.
#[cfg(target_os = "linux")]
#[tokio::test]
#[ignore = "entry point of the child processes of tokens_stay_in_their_session_keyring"]
#[allow(clippy::print_stdout)] // stdout is how the child answers its parent
async fn child_keyring_session() {
    use authwire::{CacheKey, Token, TokenStore};
    use authwire_keyring::LinuxKeyring;
    let Ok(mode) = std::env::var("AUTHWIRE_KEYRING_MODE") else {
        return;
    };
    let scope = match std::env::var("AUTHWIRE_KEYRING_SCOPE").as_deref() {
        Ok("user") => LinuxKeyring::User,
        _ => LinuxKeyring::Session,
    };
    let store = KeyringStore::new("authwire-session-test").linux_keyring(scope);
    let key = CacheKey::new(std::env::var("AUTHWIRE_KEYRING_KEY").unwrap());
    match mode.as_str() {
        "save" => {
            store.save(&key, &Token::new("session-bound")).await.unwrap();
            println!("@@saved");
            // Keep the session (and its keyring) alive until the parent kills us.
            tokio::time::sleep(std::time::Duration::from_secs(120)).await;
        }
        "delete" => store.delete(&key).await.unwrap(),
        _ => {
            let found = store.load(&key).await.unwrap().is_some();
            println!("@@{}", if found { "found" } else { "missing" });
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn tokens_stay_in_their_session_keyring_unless_the_user_keyring_is_chosen() {
    // Issue 12, item 10: tokens were linked into the user's persistent keyring, readable from
    // any other session of the same user for days, against the docs ("until logout").
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let Ok(status) = Command::new("keyctl").arg("--version").output() else {
        panic!("keyctl is needed (Debian's keyutils; .ci/run installs it)")
    };
    assert!(status.status.success() || !status.stdout.is_empty() || !status.stderr.is_empty());
    let child = |mode: &str, scope: &str, key: &str| {
        let mut c = Command::new("keyctl");
        c.args(["session", "-"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "child_keyring_session",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("AUTHWIRE_KEYRING_MODE", mode)
            .env("AUTHWIRE_KEYRING_SCOPE", scope)
            .env("AUTHWIRE_KEYRING_KEY", key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    // libtest may print the test's name on the same line, before the marker.
    let marker = |out: &str| {
        out.split("@@")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("none")
            .to_owned()
    };
    for (scope, expected) in [("session", "missing"), ("user", "found")] {
        let key = format!("two-sessions-{scope}-{}", std::process::id());
        let mut writer = child("save", scope, &key).spawn().unwrap();
        let mut line = String::new();
        let mut reader = std::io::BufReader::new(writer.stdout.take().unwrap());
        while !line.contains("@@saved") {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "the writer ended without saving"
            );
        }
        // The writer's session is alive; another session looks.
        let reader_out = child("load", scope, &key).output().unwrap();
        let seen = marker(&String::from_utf8_lossy(&reader_out.stdout));
        writer.kill().unwrap();
        writer.wait().unwrap();
        let _ = child("delete", scope, &key).output();
        assert_eq!(
            seen,
            expected,
            "{scope} keyring, read from another session: {} {}",
            String::from_utf8_lossy(&reader_out.stdout),
            String::from_utf8_lossy(&reader_out.stderr)
        );
    }
}
