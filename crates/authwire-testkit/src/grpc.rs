//! A gRPC server for tests, with no code generation: messages are raw bytes ([`RawCodec`]),
//! the service answers the gRPC way, trailers-only `grpc-status: 16` for a revoked token.

use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;

/// Messages as raw bytes, so no protobuf code generation is needed.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

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

/// A gRPC service `test.Echo` (any method): rejects `Bearer access-1` as a revoked token with
/// `grpc-status: 16` in a trailers-only answer, answers `pong` to any other, and records the
/// `Authorization` of every call.
#[derive(Clone, Default)]
pub struct GrpcEcho {
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl GrpcEcho {
    /// The `Authorization` of each call, in order.
    pub fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }

    /// Serve on a loopback port (h2c, tonic's server); returns the address and the task.
    pub async fn serve(&self) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let service = self.clone();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        (addr, task)
    }
}

impl NamedService for GrpcEcho {
    const NAME: &'static str = "test.Echo";
}

impl tower_service::Service<Request<tonic::body::Body>> for GrpcEcho {
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
