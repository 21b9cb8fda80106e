//! An in-memory [`TokenStore`] for authwire.
//!
//! [`MemoryStore`] shares tokens between authorizers of one process (clones share one map) and
//! survives nothing: use `authwire-file` or `authwire-keyring` to keep tokens across restarts.
//!
//! ```
//! use authwire::{CacheKey, Token, TokenStore};
//! use authwire_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), authwire::StoreError> {
//! let store = MemoryStore::new();
//! let shared = store.clone();
//! store.save(&CacheKey::new("k"), &Token::new("t")).await?;
//! assert!(shared.load(&CacheKey::new("k")).await?.is_some());
//! # Ok(()) }
//! ```

use authwire::{CacheKey, StoreError, Token, TokenStore, async_trait};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

/// Tokens in a map in memory. Clones share the map.
///
/// Guarantees: every operation is atomic per key (a load sees a whole token, never part of
/// one); nothing is kept after the last clone is dropped (tokens are wiped on drop).
#[derive(Clone, Default)]
pub struct MemoryStore {
    map: Arc<RwLock<HashMap<CacheKey, Token>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tokens it holds.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether it holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn load(&self, key: &CacheKey) -> Result<Option<Token>, StoreError> {
        Ok(self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned())
    }

    async fn save(&self, key: &CacheKey, token: &Token) -> Result<(), StoreError> {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), token.clone());
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        Ok(())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("tokens", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_shows_a_count_not_tokens() {
        let s = MemoryStore::new();
        s.save(&CacheKey::new("k"), &Token::new("SECRET")).await.unwrap();
        assert_eq!(format!("{s:?}"), "MemoryStore { tokens: 1 }");
    }
}
