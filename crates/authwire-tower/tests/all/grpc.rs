//! A real tonic client through the layer, against a real tonic server on loopback that answers
//! a rejected token the gRPC way: `grpc-status: 16` (UNAUTHENTICATED) in a trailers-only
//! response (issue 12, item 4).

use authwire::{Authorizer, SystemClock};
use authwire_testkit::{GrpcEcho, RawCodec, SequenceProvider};
use authwire_tower::AuthLayer;
use bytes::Bytes;
use std::time::Duration;
use tower_layer::Layer;

#[tokio::test]
async fn grpc_unauthenticated_makes_the_layer_forget_the_token() {
    let echo = GrpcEcho::default();
    let (addr, server) = echo.serve().await;

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
        echo.seen(),
        [
            Some("Bearer access-1".to_owned()),
            Some("Bearer access-2".to_owned())
        ]
    );
    server.abort();
}
