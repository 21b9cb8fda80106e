//! A bound on concurrent fetches, shared by the authorizers of one identity provider.

use std::sync::Arc;

/// At most `max` provider calls in flight at once across every authorizer built with this
/// limit ([`AuthorizerBuilder::fetch_limit`](crate::AuthorizerBuilder::fetch_limit)). A
/// multi-tenant service that holds thousands of authorizers against one identity provider
/// gives them one limit: a cold start then queues behind `max` requests instead of sending
/// thousands at once (and tripping the provider's rate limit). The wait for a slot is not part
/// of the fetch timeout, so queueing never fails a refresh; callers of an authorizer that waits
/// share its one flight as usual.
///
/// ```
/// use authwire::{Authorizer, FetchLimit, StaticTokenProvider};
/// let limit = FetchLimit::new(64);
/// let tenants: Vec<Authorizer> = ["t1", "t2"]
///     .into_iter()
///     .map(|t| Authorizer::builder(StaticTokenProvider::new(t)).fetch_limit(&limit).build())
///     .collect();
/// assert_eq!(limit.max(), 64);
/// ```
#[derive(Clone, Debug)]
pub struct FetchLimit {
    semaphore: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl FetchLimit {
    /// A limit of `max` concurrent fetches (at least 1).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            semaphore: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Fetches in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }

    pub(crate) async fn acquire(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed, so this never fails; `None` would mean "unbounded".
        self.semaphore.acquire().await.ok()
    }
}
