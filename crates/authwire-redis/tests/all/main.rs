//! The Redis store against a real `redis-server` that each test starts on a free loopback port.

mod fleet;
mod ha;

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
    assert!(authwire::error_chain(&e).contains(&store.token_key(&key)), "{e}");
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

#[tokio::test]
async fn a_holder_that_outlived_its_lease_cannot_overwrite_its_successors_token() {
    // Issue 12, item 8: the old holder saved (and its stale token won) after the next holder
    // had taken the lease over. Saves under a lease are fenced by the lease's owner id.
    let redis = RedisServer::start().await;
    let a = RedisStore::connect(&redis.url()).await.unwrap();
    let b = RedisStore::connect(&redis.url()).await.unwrap();
    let key = CacheKey::new("fenced");
    let RefreshLease::Held(slow) = a.begin_refresh(&key, Duration::from_millis(200)).await.unwrap() else {
        panic!("a takes the lease")
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // a's refresh outlives its lease
    let RefreshLease::Held(next) = b.begin_refresh(&key, Duration::from_secs(10)).await.unwrap() else {
        panic!("expired: b takes it over")
    };
    let newer = Token::new("from-b").with_refresh_token("rt-b");
    next.save_under_lease(&key, &newer)
        .await
        .expect("redis fences")
        .unwrap();
    let stale = Token::new("from-a").with_refresh_token("rt-a");
    let e = slow
        .save_under_lease(&key, &stale)
        .await
        .expect("redis fences")
        .unwrap_err();
    assert!(authwire::error_chain(&e).contains("taken over"), "{e}");
    use authwire::secrecy::ExposeSecret;
    let stored = a.load(&key).await.unwrap().unwrap();
    assert_eq!(
        stored.access_token().expose_secret(),
        "from-b",
        "the successor's token stays"
    );
}

#[tokio::test]
async fn plaintext_redis_off_loopback_is_refused_unless_allowed_by_name() {
    // Issue 12, item 14: redis:// to any host was accepted. Refused before any connection.
    let e = RedisStore::connect("redis://cache.internal.example:6379/")
        .await
        .unwrap_err();
    assert!(authwire::error_chain(&e).contains("rediss://"), "{e}");
    let e = RedisStore::connect("redis://:hunter2@cache.internal.example/")
        .await
        .unwrap_err();
    assert!(!authwire::error_chain(&e).contains("hunter2"), "{e}");
    let redis = RedisServer::start().await;
    let via_localhost = redis.url().replace("127.0.0.1", "localhost");
    assert!(
        RedisStore::connect(&via_localhost).await.is_ok(),
        "loopback is fine"
    );
    assert!(
        RedisStore::builder(via_localhost)
            .allow_plaintext_redis(true)
            .connect()
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_against_a_real_tls_redis_server_passes_the_conformance_suite() {
    // Issue 12, item 14: rediss:// was compiled in but never tested.
    let redis = RedisServer::start_tls().await;
    assert!(redis.url().starts_with("rediss://"));
    let ca = redis.ca_pem().unwrap().to_vec();
    let store = RedisStore::builder(redis.url())
        .tls_root_certificate(ca)
        .connect()
        .await
        .unwrap();
    conformance::store_conformance(store).await;
    // Without trusting the CA, the connection is refused.
    assert!(RedisStore::connect(&redis.url()).await.is_err());
}

#[tokio::test]
async fn tokens_can_be_encrypted_at_rest_and_foreign_entries_are_refused() {
    // Issue 12, item 14: tokens and refresh tokens sat in Redis in plaintext.
    use authwire::StoreError;
    let redis = RedisServer::start().await;
    let key = CacheKey::new("sealed");
    let sealed = RedisStore::builder(redis.url())
        .encryption_key([7; 32])
        .connect()
        .await
        .unwrap();
    let token = Token::new("ACCESS-SECRET-1").with_refresh_token("REFRESH-SECRET-1");
    sealed.save(&key, &token).await.unwrap();
    use authwire::secrecy::ExposeSecret;
    let loaded = sealed.load(&key).await.unwrap().unwrap();
    assert_eq!(
        loaded.refresh_token().unwrap().expose_secret(),
        "REFRESH-SECRET-1"
    );

    // What Redis holds shows no secret.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(sealed.token_key(&key))
        .query_async(&mut raw)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("SECRET"), "{text}");

    let corrupt = |e: StoreError| match e {
        StoreError::Corrupt { .. } => authwire::error_chain(&e),
        other => panic!("not corrupt: {other:?}"),
    };
    let plain = RedisStore::connect(&redis.url()).await.unwrap();
    assert!(corrupt(plain.load(&key).await.unwrap_err()).contains("encryption key"));
    let other_key = RedisStore::builder(redis.url())
        .encryption_key([8; 32])
        .connect()
        .await
        .unwrap();
    assert!(corrupt(other_key.load(&key).await.unwrap_err()).contains("cannot decrypt"));
    // An entry planted in plaintext is refused by a store that encrypts.
    plain.save(&key, &Token::new("planted")).await.unwrap();
    assert!(corrupt(sealed.load(&key).await.unwrap_err()).contains("not encrypted"));
}
