//! Bodies: streamed both ways, with a copy of at most [`REPLAY_LIMIT`] bytes of a request body
//! kept while it is in flight, so that a request the upstream rejected for its token can be
//! sent once more.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The largest request body kept for a replay; a larger one streams through and is not
/// replayed.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// An error from either side's body.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body the proxy sends and answers with: one of the few kinds it handles, unboxed (a
/// request through the proxy allocates no body of its own).
pub(crate) enum ProxyBody {
    /// Bytes in memory: no body, a replay, an error page.
    Full(http_body_util::Full<Bytes>),
    /// A program's request body on its way to the upstream, a copy kept for a replay.
    Tee(Tee<Incoming>),
    /// The upstream's answer on its way to the program (hyper-util's clients).
    Incoming(Incoming),
    /// The upstream's answer by the HTTP/1.1 lane.
    Lane(crate::client::LaneBody),
}

impl ProxyBody {
    /// No body.
    pub(crate) fn empty() -> Self {
        Self::Full(http_body_util::Full::new(Bytes::new()))
    }
}

/// A body of these bytes (a replay, an error page).
pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    ProxyBody::Full(http_body_util::Full::new(bytes.into()))
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // Every kind is `Unpin`.
        match self.get_mut() {
            Self::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            Self::Tee(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Lane(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_end_stream(),
            Self::Tee(b) => b.is_end_stream(),
            Self::Incoming(b) => b.is_end_stream(),
            Self::Lane(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => b.size_hint(),
            Self::Tee(b) => b.size_hint(),
            Self::Incoming(b) => b.size_hint(),
            Self::Lane(b) => b.size_hint(),
        }
    }
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
    use http_body_util::BodyExt as _;

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
