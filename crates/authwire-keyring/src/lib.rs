//! An OS-keyring [`TokenStore`] for authwire, over `keyring-core` (keyring v4).
//!
//! Backends: the macOS login Keychain, the Windows Credential Manager, and on Linux the kernel's
//! keyutils session keyring (no D-Bus needed, so it works on headless machines and in CI). An
//! application that prefers another keyring-core store (the Secret Service, say) installs it with
//! `keyring_core::set_default_store` before creating a [`KeyringStore`], or passes it to
//! [`KeyringStore::with_store`].
//!
//! ```no_run
//! use authwire::{CacheKey, Token, TokenStore};
//! use authwire_keyring::KeyringStore;
//!
//! # async fn run() -> Result<(), authwire::StoreError> {
//! let store = KeyringStore::new("my-tool");
//! store.save(&CacheKey::new("https://idp/token|cli"), &Token::new("t")).await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - One keyring entry per cache key: service = the name given to [`KeyringStore::new`], user =
//!   a readable prefix of the key and its SHA-256 (so any key, of any length or alphabet, maps to
//!   a valid, unambiguous entry name).
//! - The entry holds the token as [`authwire::store::encode`] writes it (format version 1,
//!   refresh token included), at most [`MAX_ENTRY_BYTES`].
//! - Keyring calls block, so they run on tokio's blocking pool.
//! - Failures are [`KeyringError`]s inside [`StoreError::Backend`]: no backend, locked keyring,
//!   access denied, entry too large. The keyring's own errors can carry the stored bytes; they
//!   are never passed on, so no token reaches an error message.
//! - Linux keyutils keys live in the session keyring: they last as long as the login session and
//!   are readable only by the same user. Run tests and headless jobs under `keyctl session -`.

use authwire::{CacheKey, StoreError, Token, TokenStore, async_trait};
use keyring_core::api::CredentialStore;
use keyring_core::{Entry, Error as KeyringCoreError};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// The largest entry written (the kernel keyutils limit for user keys is 32,767 bytes).
pub const MAX_ENTRY_BYTES: usize = 32 * 1024 - 1;

/// Why the OS keyring failed; the source of [`StoreError::Backend`], downcast with
/// `StoreError::Backend { source, .. } => source.get().downcast_ref::<KeyringError>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyringError {
    /// No keyring can be used on this machine.
    NoBackend {
        /// Why.
        reason: String,
    },
    /// The keyring is locked (unlock it, or log in graphically once).
    Locked {
        /// The platform's words.
        reason: String,
    },
    /// The keyring refused access (a prompt was dismissed, or a policy forbids it).
    AccessDenied {
        /// The platform's words.
        reason: String,
    },
    /// The token is larger than the keyring accepts.
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Another failure of the platform keyring.
    Platform {
        /// The platform's words.
        reason: String,
    },
}

impl fmt::Display for KeyringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringError::NoBackend { reason } => write!(
                f,
                "no OS keyring is available ({reason}); use a file store instead (authwire-file)"
            ),
            KeyringError::Locked { reason } => {
                write!(f, "the OS keyring is locked ({reason}); unlock it and retry")
            }
            KeyringError::AccessDenied { reason } => write!(f, "the OS keyring denied access ({reason})"),
            KeyringError::TooLarge { size, limit } => {
                write!(
                    f,
                    "the token takes {size} bytes, more than the keyring's {limit}; use a file store for it"
                )
            }
            KeyringError::Platform { reason } => write!(f, "the OS keyring failed: {reason}"),
        }
    }
}

impl std::error::Error for KeyringError {}

/// Tokens in the OS keyring under one service name. Cheap to clone.
#[derive(Clone)]
pub struct KeyringStore {
    service: Arc<str>,
    backend: Result<Arc<CredentialStore>, KeyringError>,
}

impl KeyringStore {
    /// Entries under `service` in the platform's keyring (or in keyring-core's default store, if
    /// the application set one). A missing backend is reported by the first operation.
    pub fn new(service: impl Into<String>) -> Self {
        let backend = match keyring_core::get_default_store() {
            Some(store) => Ok(store),
            None => platform_store(),
        };
        Self {
            service: Arc::from(service.into()),
            backend,
        }
    }

    /// Entries under `service` in the given keyring-core store.
    pub fn with_store(service: impl Into<String>, store: Arc<CredentialStore>) -> Self {
        Self {
            service: Arc::from(service.into()),
            backend: Ok(store),
        }
    }

    /// Whether a backend is there to try (it may still be locked or deny access).
    pub fn backend_available(&self) -> Result<(), KeyringError> {
        self.backend.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The keyring "user" (account) name under which `key`'s token is stored.
    pub fn entry_user(key: &CacheKey) -> String {
        let digest = Sha256::digest(key.as_str().as_bytes());
        let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let prefix: String = key
            .as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        format!("authwire:{prefix}:{hash}")
    }

    fn entry(&self, key: &CacheKey) -> Result<(Entry, String), StoreError> {
        let store = self.backend.as_ref().map_err(|e| StoreError::new(e.clone()))?;
        let user = Self::entry_user(key);
        let entry =
            Entry::new_in_store(store, &self.service, &user).map_err(|e| StoreError::new(classify(e)))?;
        Ok((entry, user))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        key: &CacheKey,
        f: impl FnOnce(Entry, String) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (entry, user) = self.entry(key)?;
        tokio::task::spawn_blocking(move || f(entry, user))
            .await
            .map_err(|e| StoreError::new(format!("keyring task failed: {e}")))?
    }
}

#[cfg(target_os = "linux")]
fn platform_store() -> Result<Arc<CredentialStore>, KeyringError> {
    linux_keyutils_keyring_store::Store::new()
        .map(|s| s as Arc<CredentialStore>)
        .map_err(|e| KeyringError::NoBackend {
            reason: safe_reason(&e),
        })
}

#[cfg(target_os = "macos")]
fn platform_store() -> Result<Arc<CredentialStore>, KeyringError> {
    apple_native_keyring_store::keychain::Store::new()
        .map(|s| s as Arc<CredentialStore>)
        .map_err(|e| KeyringError::NoBackend {
            reason: safe_reason(&e),
        })
}

#[cfg(windows)]
fn platform_store() -> Result<Arc<CredentialStore>, KeyringError> {
    windows_native_keyring_store::Store::new()
        .map(|s| s as Arc<CredentialStore>)
        .map_err(|e| KeyringError::NoBackend {
            reason: safe_reason(&e),
        })
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn platform_store() -> Result<Arc<CredentialStore>, KeyringError> {
    Err(KeyringError::NoBackend {
        reason: "no OS keyring is supported on this platform".into(),
    })
}

/// A description of a keyring error that never includes stored data.
fn safe_reason(e: &KeyringCoreError) -> String {
    match e {
        KeyringCoreError::PlatformFailure(p) | KeyringCoreError::NoStorageAccess(p) => p.to_string(),
        KeyringCoreError::BadEncoding(_) => "the stored entry is not UTF-8".into(),
        KeyringCoreError::BadDataFormat(_, _) => "the stored entry is not in the expected format".into(),
        KeyringCoreError::BadStoreFormat(why) => format!("the keyring is not in the expected format: {why}"),
        KeyringCoreError::TooLong(what, limit) => format!("{what} is longer than {limit}"),
        KeyringCoreError::Invalid(what, why) => format!("{what} is invalid: {why}"),
        KeyringCoreError::Ambiguous(_) => "more than one entry matches".into(),
        KeyringCoreError::NoDefaultStore => "no default keyring store is set".into(),
        KeyringCoreError::NotSupportedByStore(why) => format!("not supported by this keyring: {why}"),
        KeyringCoreError::NoEntry => "no entry".into(),
        _ => "unknown keyring error".into(),
    }
}

fn classify(e: KeyringCoreError) -> KeyringError {
    let reason = safe_reason(&e);
    match e {
        KeyringCoreError::NoStorageAccess(_) if reason.to_ascii_lowercase().contains("lock") => {
            KeyringError::Locked { reason }
        }
        KeyringCoreError::NoStorageAccess(_) => KeyringError::AccessDenied { reason },
        KeyringCoreError::NoDefaultStore => KeyringError::NoBackend { reason },
        KeyringCoreError::TooLong(_, limit) => KeyringError::TooLarge {
            size: 0,
            limit: limit as usize,
        },
        _ => KeyringError::Platform { reason },
    }
}

#[async_trait]
impl TokenStore for KeyringStore {
    async fn load(&self, key: &CacheKey) -> Result<Option<Token>, StoreError> {
        let service = self.service.clone();
        self.blocking(key, move |entry, user| {
            let location = format!("keyring entry {service}/{user}");
            let bytes = match entry.get_secret() {
                Ok(bytes) => authwire::secrecy::zeroize::Zeroizing::new(bytes),
                Err(KeyringCoreError::NoEntry) => return Ok(None),
                Err(e @ (KeyringCoreError::BadEncoding(_) | KeyringCoreError::BadDataFormat(..))) => {
                    return Err(StoreError::corrupt(location, safe_reason(&e)));
                }
                Err(e) => return Err(StoreError::new(classify(e))),
            };
            authwire::store::decode(&bytes)
                .map(Some)
                .map_err(|e| StoreError::corrupt(location, e.to_string()))
        })
        .await
    }

    async fn save(&self, key: &CacheKey, token: &Token) -> Result<(), StoreError> {
        let bytes = authwire::store::encode(token);
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(StoreError::new(KeyringError::TooLarge {
                size: bytes.len(),
                limit: MAX_ENTRY_BYTES,
            }));
        }
        self.blocking(key, move |entry, _| {
            let result = match entry.set_secret(&bytes) {
                // keyutils: the first write of a process without a session keyring can fail
                // while the keyring is being set up; the second succeeds.
                Err(KeyringCoreError::NoStorageAccess(_)) => entry.set_secret(&bytes),
                other => other,
            };
            result
                .map_err(|e| match classify(e) {
                    KeyringError::TooLarge { limit, .. } => KeyringError::TooLarge {
                        size: bytes.len(),
                        limit,
                    },
                    other => other,
                })
                .map_err(StoreError::new)
        })
        .await
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.blocking(key, |entry, _| match entry.delete_credential() {
            Ok(()) | Err(KeyringCoreError::NoEntry) => Ok(()),
            Err(e) => Err(StoreError::new(classify(e))),
        })
        .await
    }
}

impl fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringStore")
            .field("service", &self.service)
            .field("backend", &self.backend.as_ref().map(|s| s.vendor()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    //! Error injection with keyring-core's mock store; the real backend is tested in tests/all.

    use super::*;
    use keyring_core::mock;

    fn mock_store() -> (KeyringStore, Arc<CredentialStore>) {
        let store: Arc<CredentialStore> = mock::Store::new().unwrap();
        (KeyringStore::with_store("authwire-test", store.clone()), store)
    }

    fn inject(store: &Arc<CredentialStore>, key: &CacheKey, error: KeyringCoreError) {
        let entry = Entry::new_in_store(store, "authwire-test", &KeyringStore::entry_user(key)).unwrap();
        entry
            .as_any()
            .downcast_ref::<mock::Cred>()
            .expect("a mock credential")
            .set_error(error);
    }

    fn keyring_error(e: &StoreError) -> KeyringError {
        let StoreError::Backend { source, .. } = e else {
            panic!("not a backend error: {e:?}")
        };
        source
            .get()
            .downcast_ref::<KeyringError>()
            .expect("a KeyringError")
            .clone()
    }

    #[tokio::test]
    async fn locked_and_denied_keyrings_are_told_apart() {
        let (ks, store) = mock_store();
        let key = CacheKey::new("k");
        ks.save(&key, &Token::new("t")).await.unwrap();
        inject(
            &store,
            &key,
            KeyringCoreError::NoStorageAccess("the collection is locked".into()),
        );
        let e = ks.load(&key).await.unwrap_err();
        assert!(matches!(keyring_error(&e), KeyringError::Locked { .. }), "{e:?}");
        assert!(e.to_string().contains("unlock it"), "{e}");
        inject(
            &store,
            &key,
            KeyringCoreError::NoStorageAccess("prompt dismissed".into()),
        );
        assert!(matches!(
            keyring_error(&ks.load(&key).await.unwrap_err()),
            KeyringError::AccessDenied { .. }
        ));
    }

    #[tokio::test]
    async fn bad_data_errors_never_carry_the_stored_bytes() {
        let (ks, store) = mock_store();
        let key = CacheKey::new("k");
        ks.save(&key, &Token::new("t")).await.unwrap();
        inject(
            &store,
            &key,
            KeyringCoreError::BadEncoding(b"SECRET-BYTES".to_vec()),
        );
        let e = ks.load(&key).await.unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }));
        assert!(!format!("{e} {e:?}").contains("SECRET"), "{e:?}");
    }

    #[tokio::test]
    async fn a_token_too_large_for_the_keyring_is_refused_before_writing() {
        let (ks, _) = mock_store();
        let e = ks
            .save(&CacheKey::new("k"), &Token::new("x".repeat(40_000)))
            .await
            .unwrap_err();
        assert!(
            matches!(
                keyring_error(&e),
                KeyringError::TooLarge {
                    limit: MAX_ENTRY_BYTES,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn platform_limits_are_reported_as_too_large() {
        let (ks, store) = mock_store();
        let key = CacheKey::new("k");
        inject(&store, &key, KeyringCoreError::TooLong("secret".into(), 2560));
        let e = ks.save(&key, &Token::new("t")).await.unwrap_err();
        assert!(
            matches!(keyring_error(&e), KeyringError::TooLarge { limit: 2560, .. }),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_backend_is_a_typed_error_naming_the_fix() {
        let ks = KeyringStore {
            service: Arc::from("x"),
            backend: Err(KeyringError::NoBackend {
                reason: "no D-Bus session".into(),
            }),
        };
        let e = ks.load(&CacheKey::new("k")).await.unwrap_err();
        assert!(matches!(keyring_error(&e), KeyringError::NoBackend { .. }));
        assert!(e.to_string().contains("use a file store"), "{e}");
    }

    #[test]
    fn entry_names_are_bounded_and_unambiguous() {
        let a = KeyringStore::entry_user(&CacheKey::new("a@b"));
        let b = KeyringStore::entry_user(&CacheKey::new("a_b"));
        assert_ne!(a, b);
        assert!(KeyringStore::entry_user(&CacheKey::new("k".repeat(4000))).len() < 128);
    }
}
