//! The named futures of the [`Authorizer`](super::Authorizer) calls, written by hand so that the
//! cached path costs no more than its work.

use super::*;

/// The future of [`Authorizer::authorization_header`]: the cached path on its first poll, and
/// only when that finds no usable token, the (boxed) wait for a refresh.
#[must_use = "futures do nothing unless polled"]
pub struct AuthorizationHeaderFuture<'a> {
    pub(super) authorizer: &'a Authorizer,
    pub(super) refreshing: Option<Pin<Box<dyn Future<Output = FlightResult> + Send + 'a>>>,
}

impl Future for AuthorizationHeaderFuture<'_> {
    type Output = Result<HeaderValue, AuthError>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        let refreshing = match &mut this.refreshing {
            Some(refreshing) => refreshing,
            None => {
                if let Some(value) = this.authorizer.cached_header() {
                    return std::task::Poll::Ready(unbound(value));
                }
                this.refreshing.insert(Box::pin(this.authorizer.refresh()))
            }
        };
        refreshing
            .as_mut()
            .poll(cx)
            .map(|result| result.and_then(|entry| unbound(entry.header())))
    }
}

/// A header for the calls that cannot add a proof: a bound (DPoP) token's is refused, so that
/// it never leaves without its proof (see [`is_bound_header`]).
#[inline(always)]
fn unbound(value: HeaderValue) -> Result<HeaderValue, AuthError> {
    if is_bound_header(&value) {
        return Err(AuthError::ProofRequired);
    }
    Ok(value)
}

/// The future of [`Authorizer::authorize`].
#[must_use = "futures do nothing unless polled"]
pub struct AuthorizeFuture<'a> {
    pub(super) header: AuthorizationHeaderFuture<'a>,
    pub(super) headers: &'a mut HeaderMap,
}

impl Future for AuthorizeFuture<'_> {
    type Output = Result<(), AuthError>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        Pin::new(&mut this.header).poll(cx).map(|result| {
            // Step 5.
            let header = result?;
            crate::pipeline::add_extra_headers(
                this.header.authorizer.inner.shared.extra_headers.as_ref(),
                this.headers,
            );
            update_headers(this.headers, header);
            Ok(())
        })
    }
}

/// The future of [`Authorizer::authorize_target`]: steps 1-5 (with a proof for a bound token),
/// then the header that was sent.
#[must_use = "futures do nothing unless polled"]
pub struct AuthorizeTargetFuture<'a> {
    pub(super) authorizer: &'a Authorizer,
    pub(super) target: &'a Target<'a>,
    pub(super) headers: &'a mut HeaderMap,
    pub(super) refreshing: Option<Pin<Box<dyn Future<Output = FlightResult> + Send + 'a>>>,
}

impl Future for AuthorizeTargetFuture<'_> {
    type Output = Result<HeaderValue, AuthError>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        let refreshing = match &mut this.refreshing {
            Some(refreshing) => refreshing,
            None => {
                if let Some(step5) = this.authorizer.cached_step5() {
                    let nonce = this.authorizer.dpop_nonce_for(&step5, this.target);
                    return std::task::Poll::Ready(step5.apply(this.target, nonce.as_deref(), this.headers));
                }
                this.refreshing.insert(Box::pin(this.authorizer.refresh()))
            }
        };
        refreshing.as_mut().poll(cx).map(|result| {
            let step5 = result?.step5();
            let nonce = this.authorizer.dpop_nonce_for(&step5, this.target);
            step5.apply(this.target, nonce.as_deref(), this.headers)
        })
    }
}

impl fmt::Debug for AuthorizeTargetFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeTargetFuture")
            .field("target", &self.target)
            .field("refreshing", &self.refreshing.is_some())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AuthorizeFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeFuture")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AuthorizationHeaderFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationHeaderFuture")
            .field("refreshing", &self.refreshing.is_some())
            .finish()
    }
}

/// The former name of [`AuthorizeFuture`].
pub type Authorize<'a> = AuthorizeFuture<'a>;
/// The former name of [`AuthorizationHeaderFuture`].
pub type AuthorizationHeader<'a> = AuthorizationHeaderFuture<'a>;
/// The former name of [`AuthorizeTargetFuture`].
pub type AuthorizeTarget<'a> = AuthorizeTargetFuture<'a>;
