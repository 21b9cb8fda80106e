//! Clones of an [`Authorizer`] for per-request futures, without a shared reference-count write.
//!
//! Deprecated: no adapter uses them since the tower layer keeps a
//! [`SentToken`](super::SentToken); kept one release for anyone who adopted them.

#![allow(deprecated)]

use super::Authorizer;
use std::sync::Arc;

/// One authorizer, held by several reference-counted handles on separate cache lines, one per
/// stripe of threads (as the prepared headers are striped). An adapter whose per-request future
/// must keep the authorizer (to judge the answer) takes [`handle`](Self::handle): that writes
/// only this thread's stripe's count, not the one count every core would otherwise contend on.
///
/// ```
/// # use authwire::{Authorizer, StripedAuthorizer, StaticTokenProvider};
/// let authorizer = Authorizer::new(StaticTokenProvider::new("t"));
/// let striped = StripedAuthorizer::new(&authorizer);
/// let handle = striped.handle(); // cheap: this thread's stripe
/// assert!(handle.metrics().fetches == 0);
/// ```
#[deprecated(
    since = "0.1.0",
    note = "unused since the tower layer keeps a SentToken (Authorizer::try_authorize_target_sent); clone the Authorizer instead"
)]
#[derive(Clone)]
pub struct StripedAuthorizer {
    stripes: Arc<[StripedHandle]>,
    mask: usize,
}

/// A handle from [`StripedAuthorizer::handle`]; dereferences to the [`Authorizer`].
#[deprecated(
    since = "0.1.0",
    note = "unused since the tower layer keeps a SentToken (Authorizer::try_authorize_target_sent); clone the Authorizer instead"
)]
#[derive(Clone)]
pub struct StripedHandle(Arc<Padded>);

#[repr(align(128))]
struct Padded(Authorizer);

impl StripedAuthorizer {
    /// Stripes for `authorizer` (one allocation per stripe, each on its own cache lines).
    pub fn new(authorizer: &Authorizer) -> Self {
        let count = crate::pipeline::stripe_count();
        let stripes = (0..count)
            .map(|_| StripedHandle(Arc::new(Padded(authorizer.clone()))))
            .collect();
        Self {
            stripes,
            mask: count - 1,
        }
    }

    /// A handle for this thread.
    #[inline]
    pub fn handle(&self) -> StripedHandle {
        self.stripes[crate::pipeline::stripe_index() & self.mask].clone()
    }

    /// The authorizer.
    pub fn authorizer(&self) -> &Authorizer {
        &self.stripes[0].0.0
    }
}

impl std::ops::Deref for StripedHandle {
    type Target = Authorizer;

    #[inline]
    fn deref(&self) -> &Authorizer {
        &self.0.0
    }
}

impl std::fmt::Debug for StripedAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripedAuthorizer")
            .field("authorizer", self.authorizer())
            .field("stripes", &self.stripes.len())
            .finish()
    }
}

impl std::fmt::Debug for StripedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.0.fmt(f)
    }
}
