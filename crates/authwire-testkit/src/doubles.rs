//! Test doubles shared by the crates' tests.

use authwire::{CacheKey, IdentityProvider, ProviderError, Token, async_trait};
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A provider that issues `access-1`, `access-2`, ... each with refresh token `refresh-N`,
/// living `lifetime` from the time its clock says; it counts calls and records the refresh
/// token of the `current` token it was given. Clones share the count.
#[derive(Clone)]
pub struct SequenceProvider {
    key: CacheKey,
    lifetime: Duration,
    clock: Arc<dyn authwire::Clock>,
    calls: Arc<AtomicU32>,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl SequenceProvider {
    /// Tokens under `key`, living `lifetime` by `clock`.
    pub fn new(key: impl Into<String>, lifetime: Duration, clock: impl authwire::Clock) -> Self {
        Self {
            key: CacheKey::new(key.into()),
            lifetime,
            clock: Arc::new(clock),
            calls: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// How many times `fetch_token` was called.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The refresh token of each call's `current` token.
    pub fn seen_refresh_tokens(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }
}

#[async_trait]
impl IdentityProvider for SequenceProvider {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).push(
            current
                .and_then(Token::refresh_token)
                .map(|r| r.expose_secret().to_owned()),
        );
        Ok(Token::new(format!("access-{n}"))
            .with_refresh_token(format!("refresh-{n}"))
            .with_expires_at(self.now() + self.lifetime))
    }

    fn cache_key(&self) -> CacheKey {
        self.key.clone()
    }
}
