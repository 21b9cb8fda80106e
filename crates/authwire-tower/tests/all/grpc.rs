//! A real tonic client through the layer, against a real tonic server on loopback that answers
//! a rejected token the gRPC way: `grpc-status: 16` (UNAUTHENTICATED) in a trailers-only
//! response (issue 12, item 4).

use authwire::{Authorizer, SystemClock};
use authwire_testkit::SequenceProvider;
use authwire_tower::AuthLayer;
use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tower_layer::Layer;

/// Messages as raw bytes, so no protobuf code generation is needed.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A unary response body: one length-prefixed message, then the `grpc-status: 0` trailers.
struct UnaryBody {
    frames: Vec<Frame<Bytes>>,
}

impl http_body::Body for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(if self.frames.is_empty() {
            None
        } else {
            Some(Ok(self.frames.remove(0)))
        })
    }
}

/// The server: rejects `Bearer access-1` as a revoked token, answers `pong` to any other.
#[derive(Clone, Default)]
struct Echo {
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

impl tower_service::Service<Request<tonic::body::Body>> for Echo {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let auth = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.seen.lock().unwrap().push(auth.clone());
        let mut response = if auth.as_deref() == Some("Bearer access-1") {
            // Trailers-only: the status is in the headers and the body is empty.
            let mut r = Response::new(tonic::body::Body::empty());
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from_static("16"));
            r.headers_mut()
                .insert("grpc-message", HeaderValue::from_static("token revoked"));
            r
        } else {
            let mut message = bytes::BytesMut::new();
            message.put_u8(0);
            message.put_u32(4);
            message.put_slice(b"pong");
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            Response::new(tonic::body::Body::new(UnaryBody {
                frames: vec![Frame::data(message.freeze()), Frame::trailers(trailers)],
            }))
        };
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        std::future::ready(Ok(response))
    }
}

#[tokio::test]
async fn grpc_unauthenticated_makes_the_layer_forget_the_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Echo::default();
    let seen = echo.seen.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(echo)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let provider = SequenceProvider::new("grpc", Duration::from_secs(3600), SystemClock);
    let authorizer = Authorizer::new(provider.clone());
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(AuthLayer::new(authorizer.clone()).layer(channel));
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Say");

    client.ready().await.unwrap();
    let status = client
        .unary(
            tonic::Request::new(Bytes::from_static(b"ping")),
            path.clone(),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        authorizer.metrics().invalidations,
        1,
        "the rejected token was forgotten"
    );

    client.ready().await.unwrap();
    let reply = client
        .unary(tonic::Request::new(Bytes::from_static(b"ping")), path, RawCodec)
        .await
        .unwrap();
    assert_eq!(reply.into_inner(), Bytes::from_static(b"pong"));
    assert_eq!(provider.calls(), 2);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Some("Bearer access-1".to_owned()),
            Some("Bearer access-2".to_owned())
        ]
    );
    server.abort();
}
