//! Bodies: streamed both ways, with a copy of at most [`REPLAY_LIMIT`] bytes of a request body
//! kept while it is in flight, so that a request the upstream rejected for its token can be
//! sent once more.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The largest request body kept for a replay; a larger one streams through and is not
/// replayed.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// An error from either side's body.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the proxy sends and answers with.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body from anything that is one.
pub(crate) fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body of these bytes (a replay, an error page).
pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    boxed(http_body_util::Full::new(bytes.into()).map_err(|never| match never {}))
}

/// What a [`Tee`] kept of a request body.
#[derive(Default)]
pub(crate) struct Kept {
    bytes: BytesMut,
    /// More than [`REPLAY_LIMIT`] passed, or trailers: not replayable.
    overflowed: bool,
    /// The body ended (every byte went to the upstream, and is kept).
    complete: bool,
}

impl Kept {
    /// The whole body, if it ended within the limit.
    pub(crate) fn replayable(&self) -> Option<Bytes> {
        (self.complete && !self.overflowed).then(|| self.bytes.clone().freeze())
    }
}

pin_project_lite::pin_project! {
    /// Streams a request body to the upstream and keeps a copy of it while it stays within
    /// [`REPLAY_LIMIT`].
    pub(crate) struct Tee<B> {
        #[pin]
        inner: B,
        kept: Arc<Mutex<Kept>>,
    }
}

impl<B> Tee<B> {
    pub(crate) fn new(inner: B) -> (Self, Arc<Mutex<Kept>>) {
        let kept = Arc::new(Mutex::new(Kept::default()));
        (
            Self {
                inner,
                kept: kept.clone(),
            },
            kept,
        )
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        let mut kept = this
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                match frame.data_ref() {
                    Some(data) if !kept.overflowed => {
                        if kept.bytes.len() + data.len() > REPLAY_LIMIT {
                            kept.overflowed = true;
                            kept.bytes = BytesMut::new();
                        } else {
                            kept.bytes.extend_from_slice(data);
                        }
                    }
                    Some(_) => {}
                    // Request trailers are not kept: such a request is not replayed.
                    None => kept.overflowed = true,
                }
                // A body of known length is not polled past its last byte.
                if inner.is_end_stream() {
                    kept.complete = true;
                }
            }
            Poll::Ready(None) => kept.complete = true,
            Poll::Ready(Some(Err(_))) => kept.overflowed = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_small_body_is_kept_and_a_large_one_is_not() {
        let (tee, kept) = Tee::new(http_body_util::Full::new(Bytes::from_static(b"hello")));
        let out = tee.collect().await.unwrap().to_bytes();
        assert_eq!(out, "hello");
        assert_eq!(kept.lock().unwrap().replayable().unwrap(), "hello");

        let big = Bytes::from(vec![7u8; REPLAY_LIMIT + 1]);
        let (tee, kept) = Tee::new(http_body_util::Full::new(big.clone()));
        assert_eq!(tee.collect().await.unwrap().to_bytes(), big, "streamed whole");
        assert!(kept.lock().unwrap().replayable().is_none());

        // Not read to its end: not replayable.
        let (_tee, kept) = Tee::new(http_body_util::Full::new(Bytes::from_static(b"x")));
        assert!(kept.lock().unwrap().replayable().is_none());
    }
}
