//! The Redis store against a real `redis-server` that each test starts on a free loopback port.

mod fleet;

use authwire::{CacheKey, RefreshLease, Token, TokenStore};
use authwire_redis::RedisStore;
use authwire_testkit::{RedisServer, conformance};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_conformance_suite() {
    let redis = RedisServer::start().await;
    conformance::store_conformance(RedisStore::connect(&redis.url()).await.unwrap()).await;
}

#[tokio::test]
async fn a_restarted_authorizer_reuses_the_stored_token() {
    let redis = RedisServer::start().await;
    conformance::authorizer_restart_conformance(RedisStore::connect(&redis.url()).await.unwrap()).await;
}

#[tokio::test]
async fn one_lease_holder_at_a_time_and_only_the_owner_releases() {
    let redis = RedisServer::start().await;
    let a = RedisStore::connect(&redis.url()).await.unwrap();
    let b = RedisStore::connect(&redis.url()).await.unwrap();
    let key = CacheKey::new("lease-test");
    let RefreshLease::Held(held) = a.begin_refresh(&key, Duration::from_secs(10)).await.unwrap() else {
        panic!("the first taker holds the lease")
    };
    assert!(matches!(
        b.begin_refresh(&key, Duration::from_secs(10)).await.unwrap(),
        RefreshLease::HeldElsewhere
    ));
    held.release().await;
    let RefreshLease::Held(_b_holds) = b.begin_refresh(&key, Duration::from_millis(300)).await.unwrap()
    else {
        panic!("released: another process may take it")
    };

    // A lease that expired and was taken by someone else is not deleted by its old owner.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let RefreshLease::Held(stale) = a.begin_refresh(&key, Duration::from_millis(200)).await.unwrap() else {
        panic!("expired: takeable")
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let RefreshLease::Held(_c_holds) = b.begin_refresh(&key, Duration::from_secs(10)).await.unwrap() else {
        panic!("expired again: takeable")
    };
    stale.release().await; // a's lease expired; this must not free b's
    assert!(matches!(
        a.begin_refresh(&key, Duration::from_secs(10)).await.unwrap(),
        RefreshLease::HeldElsewhere
    ));
}

#[tokio::test]
async fn ttls_follow_the_token_and_keep_refresh_tokens() {
    let redis = RedisServer::start().await;
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let now = authwire::Clock::now(&authwire::SystemClock);
    let pttl = |k: String| {
        let mut c = conn.clone();
        async move {
            redis::cmd("PTTL")
                .arg(k)
                .query_async::<i64>(&mut c)
                .await
                .unwrap()
        }
    };

    let short = CacheKey::new("short");
    store
        .save(
            &short,
            &Token::new("a").with_expires_at(now + Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let ms = pttl(store.token_key(&short)).await;
    assert!((115_000..=120_000).contains(&ms), "expiry + 60 s: {ms}");

    let with_refresh = CacheKey::new("with-refresh");
    store
        .save(
            &with_refresh,
            &Token::new("a")
                .with_refresh_token("r")
                .with_expires_at(now + Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let ms = pttl(store.token_key(&with_refresh)).await;
    assert!(
        ms > 29 * 24 * 3600 * 1000,
        "the refresh token outlives the access token: {ms}"
    );
    let _ = &mut conn;
}

#[tokio::test]
async fn corrupt_values_are_reported_naming_the_key() {
    let redis = RedisServer::start().await;
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let key = CacheKey::new("corrupt");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SET")
        .arg(store.token_key(&key))
        .arg("{not json")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let e = store.load(&key).await.unwrap_err();
    assert!(matches!(e, authwire::StoreError::Corrupt { .. }));
    assert!(e.to_string().contains(&store.token_key(&key)), "{e}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = RedisStore::builder(format!("redis://:hunter2@127.0.0.1:{port}/"))
        .command_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap_err();
    let msg = authwire::error_chain(&e);
    assert!(
        msg.contains("cannot connect to redis://:redacted@127.0.0.1"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"));
}
