//! An OS-keyring [`TokenStore`] for authwire, over `keyring-core` (keyring v4).
//!
//! Backends: the macOS login Keychain, the Windows Credential Manager, and on Linux the kernel's
//! keyutils (no D-Bus needed, so it works on headless machines and in CI). An application that
//! prefers another keyring-core store (the Secret Service, say) installs it with
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
//! - Failures are [`KeyringStoreError`]s inside [`StoreError::Backend`]: no backend, locked keyring,
//!   access denied, entry too large. The keyring's own errors can carry the stored bytes; they
//!   are never passed on, so no token reaches an error message.
//! - **Linux: which keyring is a documented choice** ([`LinuxKeyring`]). By default tokens live
//!   in the *session* keyring: they last as long as the login session, and other sessions of the
//!   same user (another SSH login, a cron job) cannot read them. [`LinuxKeyring::User`] shares
//!   them with every session of the user while any of the user's processes runs. Tokens are never
//!   put in the user's *persistent* keyring (which outlives logout for days and which any session
//!   of the user can join). Run tests and headless jobs under `keyctl session -`.

use authwire::{CacheKey, StoreError, Token, TokenStore, async_trait};
use keyring_core::api::CredentialStore;
use keyring_core::{Entry, Error as KeyringCoreError};
use std::fmt;
use std::sync::Arc;

/// The largest entry written (the kernel keyutils limit for user keys is 32,767 bytes).
pub const MAX_ENTRY_BYTES: usize = 32 * 1024 - 1;

/// Why the OS keyring failed; the source of [`StoreError::Backend`], downcast with
/// `StoreError::Backend { source, .. } => source.get().downcast_ref::<KeyringStoreError>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyringStoreError {
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

impl fmt::Display for KeyringStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringStoreError::NoBackend { reason } => write!(
                f,
                "no OS keyring is available ({reason}); use a file store instead (authwire-file)"
            ),
            KeyringStoreError::Locked { reason } => {
                write!(f, "the OS keyring is locked ({reason}); unlock it and retry")
            }
            KeyringStoreError::AccessDenied { reason } => {
                write!(f, "the OS keyring denied access ({reason})")
            }
            KeyringStoreError::TooLarge { size, limit } => {
                write!(
                    f,
                    "the token takes {size} bytes, more than the keyring's {limit}; use a file store for it"
                )
            }
            KeyringStoreError::Platform { reason } => write!(f, "the OS keyring failed: {reason}"),
        }
    }
}

impl std::error::Error for KeyringStoreError {}

/// The former name of [`KeyringStoreError`].
pub type KeyringError = KeyringStoreError;

/// Which Linux kernel keyring holds the tokens (see the crate docs); ignored elsewhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinuxKeyring {
    /// The session keyring (`@s`): this login session only. The default.
    #[default]
    Session,
    /// The user keyring (`@u`): every session of this user, while any of its processes runs.
    User,
}

/// Where entries live.
#[derive(Clone)]
enum Backend {
    /// A keyring-core store: the platform's on macOS and Windows, or the application's.
    Core(Arc<CredentialStore>),
    /// Linux kernel keyutils, in the chosen keyring only.
    #[cfg(target_os = "linux")]
    Keyutils(LinuxKeyring),
}

/// Tokens in the OS keyring under one service name. Cheap to clone.
#[derive(Clone)]
pub struct KeyringStore {
    service: Arc<str>,
    backend: Result<Backend, KeyringStoreError>,
}

impl KeyringStore {
    /// Entries under `service` in the platform's keyring (or in keyring-core's default store, if
    /// the application set one). A missing backend is reported by the first operation.
    pub fn new(service: impl Into<String>) -> Self {
        let backend = match keyring_core::get_default_store() {
            Some(store) => Ok(Backend::Core(store)),
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
            backend: Ok(Backend::Core(store)),
        }
    }

    /// On Linux, keep tokens in this kernel keyring (default [`LinuxKeyring::Session`]); no
    /// effect on other platforms or with a keyring-core store.
    pub fn linux_keyring(self, keyring: LinuxKeyring) -> Self {
        #[cfg(target_os = "linux")]
        {
            let mut this = self;
            if let Ok(Backend::Keyutils(chosen)) = &mut this.backend {
                *chosen = keyring;
            }
            this
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = keyring;
            self
        }
    }

    /// Whether a backend is there to try (it may still be locked or deny access).
    pub fn backend_available(&self) -> Result<(), KeyringStoreError> {
        self.backend.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The keyring "user" (account) name under which `key`'s token is stored.
    pub fn entry_user(key: &CacheKey) -> String {
        format!("authwire:{}:{}", key.readable_prefix(40), key.sha256_hex())
    }

    fn slot(&self, key: &CacheKey) -> Result<(Slot, String), StoreError> {
        let backend = self.backend.as_ref().map_err(|e| StoreError::new(e.clone()))?;
        let user = Self::entry_user(key);
        let slot = match backend {
            Backend::Core(store) => Slot::Core(
                Entry::new_in_store(store, &self.service, &user).map_err(|e| StoreError::new(classify(e)))?,
            ),
            #[cfg(target_os = "linux")]
            Backend::Keyutils(keyring) => Slot::Keyutils(*keyring, format!("{}/{user}", self.service)),
        };
        Ok((slot, user))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        key: &CacheKey,
        f: impl FnOnce(Slot, String) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (slot, user) = self.slot(key)?;
        tokio::task::spawn_blocking(move || f(slot, user))
            .await
            .map_err(|e| StoreError::new(format!("keyring task failed: {e}")))?
    }
}

/// One entry, in whichever backend.
enum Slot {
    Core(Entry),
    #[cfg(target_os = "linux")]
    Keyutils(LinuxKeyring, String),
}

/// A read that found nothing, or failed (with what to report).
enum ReadError {
    Missing,
    Corrupt(String),
    Failed(KeyringStoreError),
}

impl Slot {
    fn get(&self) -> Result<Vec<u8>, ReadError> {
        match self {
            Slot::Core(entry) => entry.get_secret().map_err(|e| match e {
                KeyringCoreError::NoEntry => ReadError::Missing,
                e @ (KeyringCoreError::BadEncoding(_) | KeyringCoreError::BadDataFormat(..)) => {
                    ReadError::Corrupt(safe_reason(&e))
                }
                e => ReadError::Failed(classify(e)),
            }),
            #[cfg(target_os = "linux")]
            Slot::Keyutils(keyring, description) => {
                let ring = keyutils::ring(*keyring).map_err(ReadError::Failed)?;
                // A key deleted (invalidated) by another process but not yet collected by the
                // kernel reads as revoked or expired: it is gone, not a failure.
                match ring.search(description) {
                    Ok(key) => key.read_to_vec().map_err(|e| match e {
                        e if keyutils::is_gone(&e) => ReadError::Missing,
                        e => ReadError::Failed(keyutils::classify(e)),
                    }),
                    Err(e) if keyutils::is_gone(&e) => Err(ReadError::Missing),
                    Err(e) => Err(ReadError::Failed(keyutils::classify(e))),
                }
            }
        }
    }

    fn set(&self, bytes: &[u8]) -> Result<(), KeyringStoreError> {
        match self {
            Slot::Core(entry) => {
                let result = match entry.set_secret(bytes) {
                    // The first write of a process without a session keyring can fail while the
                    // keyring is being set up; the second succeeds.
                    Err(KeyringCoreError::NoStorageAccess(_)) => entry.set_secret(bytes),
                    other => other,
                };
                result.map_err(|e| match classify(e) {
                    KeyringStoreError::TooLarge { limit, .. } => KeyringStoreError::TooLarge {
                        size: bytes.len(),
                        limit,
                    },
                    other => other,
                })
            }
            #[cfg(target_os = "linux")]
            Slot::Keyutils(keyring, description) => {
                // add_key replaces a key of the same description in that keyring.
                let key = keyutils::ring(*keyring)?
                    .add_key(description, bytes)
                    .map_err(keyutils::classify)?;
                key.set_perms(keyutils::permissions(*keyring))
                    .map_err(keyutils::classify)
            }
        }
    }

    fn delete(&self) -> Result<(), KeyringStoreError> {
        match self {
            Slot::Core(entry) => match entry.delete_credential() {
                Ok(()) | Err(KeyringCoreError::NoEntry) => Ok(()),
                Err(e) => Err(classify(e)),
            },
            #[cfg(target_os = "linux")]
            Slot::Keyutils(keyring, description) => {
                let ring = keyutils::ring(*keyring)?;
                match ring.search(description) {
                    Ok(key) => {
                        // Unlink first: the next search (a login right after a logout) no
                        // longer finds it. Invalidating alone left it findable, revoked, until
                        // the kernel collected it.
                        match ring.unlink_key(key) {
                            Ok(()) => {}
                            Err(e) if keyutils::is_gone(&e) => {}
                            Err(e) => return Err(keyutils::classify(e)),
                        }
                        // Then end it everywhere else it may be linked; it is already out of
                        // our keyring, so a failure here loses nothing.
                        let _ = key.invalidate();
                        Ok(())
                    }
                    Err(e) if keyutils::is_gone(&e) => Ok(()),
                    Err(e) => Err(keyutils::classify(e)),
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod keyutils {
    use super::{KeyringStoreError, LinuxKeyring};
    use linux_keyutils::{KeyError, KeyRing, KeyRingIdentifier};

    /// The chosen keyring of this process.
    pub(super) fn ring(keyring: LinuxKeyring) -> Result<KeyRing, KeyringStoreError> {
        let no_backend = |e: KeyError| KeyringStoreError::NoBackend {
            reason: format!("kernel keyutils: {e}"),
        };
        // Not created if missing: a process without a session keyring then uses the kernel's
        // user-session keyring, shared by the user's processes that have none (a created one
        // would be private to this process and vanish with it).
        let session = KeyRing::from_special_id(KeyRingIdentifier::Session, false).map_err(no_backend)?;
        match keyring {
            LinuxKeyring::Session => Ok(session),
            LinuxKeyring::User => {
                // Keys are possessed (usable) only through keyrings the session holds: link the
                // user keyring into it, as pam_keyinit does for login sessions.
                let user = KeyRing::from_special_id(KeyRingIdentifier::User, true).map_err(no_backend)?;
                session.link_keyring(user).map_err(classify)?;
                Ok(user)
            }
        }
    }

    /// Who may do what with a key we write, set explicitly rather than left to the kernel's
    /// defaults: its possessor (the processes of the session, or of any session of the user for
    /// the user keyring) everything; for the user keyring, the user's other sessions may also
    /// find, read and replace it; for the session keyring, other sessions may only see that it
    /// exists.
    pub(super) fn permissions(keyring: LinuxKeyring) -> linux_keyutils::KeyPermissions {
        use linux_keyutils::{KeyPermissionsBuilder, Permission};
        let user = match keyring {
            LinuxKeyring::Session => Permission::VIEW,
            LinuxKeyring::User => {
                Permission::VIEW | Permission::READ | Permission::WRITE | Permission::SEARCH
            }
        };
        KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .user(user)
            .build()
    }

    /// keyutils errors name no data, only what failed.
    /// A key that no longer exists, or is on its way out (revoked or expired, not yet
    /// collected).
    pub(super) fn is_gone(e: &KeyError) -> bool {
        matches!(
            e,
            KeyError::KeyDoesNotExist | KeyError::KeyRevoked | KeyError::KeyExpired
        )
    }

    pub(super) fn classify(e: KeyError) -> KeyringStoreError {
        let reason = format!("kernel keyutils: {e}");
        match e {
            KeyError::AccessDenied => KeyringStoreError::AccessDenied { reason },
            KeyError::KeyringDoesNotExist | KeyError::OperationNotSupported => {
                KeyringStoreError::NoBackend { reason }
            }
            _ => KeyringStoreError::Platform { reason },
        }
    }
}

#[cfg(target_os = "linux")]
fn platform_store() -> Result<Backend, KeyringStoreError> {
    Ok(Backend::Keyutils(LinuxKeyring::default()))
}

#[cfg(target_os = "macos")]
fn platform_store() -> Result<Backend, KeyringStoreError> {
    apple_native_keyring_store::keychain::Store::new()
        .map(|s| Backend::Core(s as Arc<CredentialStore>))
        .map_err(|e| KeyringStoreError::NoBackend {
            reason: safe_reason(&e),
        })
}

#[cfg(windows)]
fn platform_store() -> Result<Backend, KeyringStoreError> {
    windows_native_keyring_store::Store::new()
        .map(|s| Backend::Core(s as Arc<CredentialStore>))
        .map_err(|e| KeyringStoreError::NoBackend {
            reason: safe_reason(&e),
        })
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn platform_store() -> Result<Backend, KeyringStoreError> {
    Err(KeyringStoreError::NoBackend {
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

fn classify(e: KeyringCoreError) -> KeyringStoreError {
    let reason = safe_reason(&e);
    match e {
        KeyringCoreError::NoStorageAccess(_) if reason.to_ascii_lowercase().contains("lock") => {
            KeyringStoreError::Locked { reason }
        }
        KeyringCoreError::NoStorageAccess(_) => KeyringStoreError::AccessDenied { reason },
        KeyringCoreError::NoDefaultStore => KeyringStoreError::NoBackend { reason },
        KeyringCoreError::TooLong(_, limit) => KeyringStoreError::TooLarge {
            size: 0,
            limit: limit as usize,
        },
        _ => KeyringStoreError::Platform { reason },
    }
}

#[async_trait]
impl TokenStore for KeyringStore {
    async fn load(&self, key: &CacheKey) -> Result<Option<Token>, StoreError> {
        let service = self.service.clone();
        self.blocking(key, move |slot, user| {
            let location = format!("keyring entry {service}/{user}");
            let bytes = match slot.get() {
                Ok(bytes) => authwire::secrecy::zeroize::Zeroizing::new(bytes),
                Err(ReadError::Missing) => return Ok(None),
                Err(ReadError::Corrupt(why)) => return Err(StoreError::corrupt(location, why)),
                Err(ReadError::Failed(e)) => return Err(StoreError::new(e)),
            };
            authwire::store::decode(&bytes)
                .map(Some)
                .map_err(|e| StoreError::corrupt(location, e.to_string()))
        })
        .await
    }

    async fn save(&self, key: &CacheKey, token: &Token) -> Result<(), StoreError> {
        let bytes = authwire::secrecy::zeroize::Zeroizing::new(authwire::store::encode(token));
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(StoreError::new(KeyringStoreError::TooLarge {
                size: bytes.len(),
                limit: MAX_ENTRY_BYTES,
            }));
        }
        self.blocking(key, move |slot, _| slot.set(&bytes).map_err(StoreError::new))
            .await
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.blocking(key, |slot, _| slot.delete().map_err(StoreError::new))
            .await
    }
}

impl fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringStore")
            .field("service", &self.service)
            .field(
                "backend",
                &self.backend.as_ref().map(|b| match b {
                    Backend::Core(s) => s.vendor(),
                    #[cfg(target_os = "linux")]
                    Backend::Keyutils(LinuxKeyring::Session) => "kernel keyutils, session keyring".into(),
                    #[cfg(target_os = "linux")]
                    Backend::Keyutils(LinuxKeyring::User) => "kernel keyutils, user keyring".into(),
                }),
            )
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

    fn keyring_error(e: &StoreError) -> KeyringStoreError {
        let StoreError::Backend { source, .. } = e else {
            panic!("not a backend error: {e:?}")
        };
        source
            .get()
            .downcast_ref::<KeyringStoreError>()
            .expect("a KeyringStoreError")
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
        assert!(
            matches!(keyring_error(&e), KeyringStoreError::Locked { .. }),
            "{e:?}"
        );
        assert!(authwire::error_chain(&e).contains("unlock it"), "{e}");
        inject(
            &store,
            &key,
            KeyringCoreError::NoStorageAccess("prompt dismissed".into()),
        );
        assert!(matches!(
            keyring_error(&ks.load(&key).await.unwrap_err()),
            KeyringStoreError::AccessDenied { .. }
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
                KeyringStoreError::TooLarge {
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
            matches!(keyring_error(&e), KeyringStoreError::TooLarge { limit: 2560, .. }),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_backend_is_a_typed_error_naming_the_fix() {
        let ks = KeyringStore {
            service: Arc::from("x"),
            backend: Err(KeyringStoreError::NoBackend {
                reason: "no D-Bus session".into(),
            }),
        };
        let e = ks.load(&CacheKey::new("k")).await.unwrap_err();
        assert!(matches!(keyring_error(&e), KeyringStoreError::NoBackend { .. }));
        assert!(authwire::error_chain(&e).contains("use a file store"), "{e}");
    }

    #[test]
    fn entry_names_are_bounded_and_unambiguous() {
        let a = KeyringStore::entry_user(&CacheKey::new("a@b"));
        let b = KeyringStore::entry_user(&CacheKey::new("a_b"));
        assert_ne!(a, b);
        assert!(KeyringStore::entry_user(&CacheKey::new("k".repeat(4000))).len() < 128);
    }
}
