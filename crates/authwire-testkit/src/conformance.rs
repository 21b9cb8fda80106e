//! The store conformance suite: one behaviour for every [`TokenStore`].
//!
//! Every check uses keys with a fresh random prefix and deletes what it wrote, so the suite can
//! run against a shared backend (an OS keyring, a Redis server) beside other tests.

use authwire::{CacheKey, IdentityProvider, Token, TokenStore, TokenType};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Run every check against `store`; panics with the name of the first check that fails.
pub async fn store_conformance(store: impl TokenStore) {
    let store: Arc<dyn TokenStore> = Arc::new(store);
    round_trip_keeps_every_field(&*store).await;
    missing_key_is_none(&*store).await;
    delete_removes_and_deleting_twice_is_fine(&*store).await;
    overwrite_replaces(&*store).await;
    odd_keys_are_distinct_and_round_trip(&*store).await;
    large_tokens_round_trip(&*store).await;
    concurrent_saves_and_loads(store.clone()).await;
}

fn prefix() -> String {
    format!("conformance-{}", authwire::random::hex(6))
}

fn at(secs: u64, millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
}

fn full_token(n: u32) -> Token {
    Token::new(format!("access-{n}.with.dots-and_marks~"))
        .with_token_type(TokenType::DPoP)
        .with_expires_at(at(1_900_000_000 + u64::from(n), 250))
        .with_issued_at(at(1_899_996_400, 0))
        .with_refresh_at(at(1_899_999_000, 0))
        .with_refresh_token(format!("refresh-{n}"))
        .with_scope("api:read api:write")
        // A bound token travels with its key (DPoP: a bound refresh token is useless without it).
        .with_stored_proof_key(authwire::ProofKey {
            kind: "dpop+es256".into(),
            material: format!("-----BEGIN PRIVATE KEY-----\nkey-{n}\n-----END PRIVATE KEY-----\n").into(),
        })
}

fn close(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
            d < Duration::from_millis(1)
        }
        _ => false,
    }
}

/// Whether two tokens are equal field by field (times to the millisecond).
pub fn same_token(a: &Token, b: &Token) -> bool {
    a.same_access_token(b)
        && a.token_type() == b.token_type()
        && close(a.expires_at(), b.expires_at())
        && close(a.issued_at(), b.issued_at())
        && close(a.refresh_at(), b.refresh_at())
        && a.refresh_token().map(|r| r.expose_secret().to_owned())
            == b.refresh_token().map(|r| r.expose_secret().to_owned())
        && a.scope() == b.scope()
}

async fn round_trip_keeps_every_field(store: &dyn TokenStore) {
    let key = CacheKey::new(format!("{}/round-trip", prefix()));
    let token = full_token(1);
    store.save(&key, &token).await.expect("round trip: save");
    let back = store
        .load(&key)
        .await
        .expect("round trip: load")
        .expect("round trip: token is there");
    assert!(
        same_token(&back, &token),
        "round trip: fields differ: {back:?} vs {token:?}"
    );
    let (kept, sent) = (back.stored_proof_key(), token.stored_proof_key());
    assert!(
        kept.zip(sent).is_some_and(
            |(k, s)| k.kind == s.kind && k.material.expose_secret() == s.material.expose_secret()
        ),
        "round trip: the proof key was not kept with the token"
    );
    store.delete(&key).await.expect("round trip: delete");
}

async fn missing_key_is_none(store: &dyn TokenStore) {
    let key = CacheKey::new(format!("{}/never-written", prefix()));
    assert!(
        store.load(&key).await.expect("missing key: load").is_none(),
        "missing key: expected None"
    );
}

async fn delete_removes_and_deleting_twice_is_fine(store: &dyn TokenStore) {
    let key = CacheKey::new(format!("{}/delete", prefix()));
    store.save(&key, &full_token(2)).await.expect("delete: save");
    store.delete(&key).await.expect("delete: delete");
    assert!(
        store.load(&key).await.expect("delete: load").is_none(),
        "delete: token still there"
    );
    store
        .delete(&key)
        .await
        .expect("delete: deleting a missing key must not fail");
}

async fn overwrite_replaces(store: &dyn TokenStore) {
    let key = CacheKey::new(format!("{}/overwrite", prefix()));
    store
        .save(&key, &full_token(3))
        .await
        .expect("overwrite: first save");
    store
        .save(&key, &Token::new("second"))
        .await
        .expect("overwrite: second save");
    let back = store
        .load(&key)
        .await
        .expect("overwrite: load")
        .expect("overwrite: token is there");
    assert!(
        same_token(&back, &Token::new("second")),
        "overwrite: got {back:?}"
    );
    store.delete(&key).await.expect("overwrite: delete");
}

async fn odd_keys_are_distinct_and_round_trip(store: &dyn TokenStore) {
    let p = prefix();
    let odd = [
        format!("{p}/a/b"),
        format!("{p}/a_b"),
        format!("{p}/a:b"),
        format!("{p}/with spaces and\ttab"),
        format!("{p}/ünïcødé/日本語/🔑"),
        format!("{p}/../../etc/passwd"),
        format!("{p}/{}", "k".repeat(1024)),
        format!("{p}/{}", "k".repeat(1023)),
        format!("{p}/A"),
        format!("{p}/a"),
    ];
    for (n, k) in odd.iter().enumerate() {
        store
            .save(&CacheKey::new(k.clone()), &Token::new(format!("odd-{n}")))
            .await
            .unwrap_or_else(|e| panic!("odd keys: save {n}: {e}"));
    }
    for (n, k) in odd.iter().enumerate() {
        let back = store
            .load(&CacheKey::new(k.clone()))
            .await
            .unwrap_or_else(|e| panic!("odd keys: load {n}: {e}"));
        let back = back.unwrap_or_else(|| panic!("odd keys: key {n} lost"));
        assert!(
            back.same_access_token(&Token::new(format!("odd-{n}"))),
            "odd keys: key {n} collided with another"
        );
    }
    for k in &odd {
        store
            .delete(&CacheKey::new(k.clone()))
            .await
            .expect("odd keys: delete");
    }
}

async fn large_tokens_round_trip(store: &dyn TokenStore) {
    let key = CacheKey::new(format!("{}/large", prefix()));
    let jwt_like = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.{}",
        "a".repeat(16 * 1024),
        "s".repeat(342)
    );
    let token = Token::new(jwt_like)
        .with_refresh_token("r".repeat(2048))
        .with_expires_at(at(1_900_000_000, 0));
    store.save(&key, &token).await.expect("large token: save");
    let back = store
        .load(&key)
        .await
        .expect("large token: load")
        .expect("large token: there");
    assert!(same_token(&back, &token), "large token: differs");
    store.delete(&key).await.expect("large token: delete");
}

async fn concurrent_saves_and_loads(store: Arc<dyn TokenStore>) {
    let p = prefix();
    let shared = CacheKey::new(format!("{p}/shared"));
    let mut tasks = Vec::new();
    for n in 0..200u32 {
        let store = store.clone();
        let shared = shared.clone();
        let own = CacheKey::new(format!("{p}/own-{n}"));
        tasks.push(tokio::spawn(async move {
            let token = full_token(n);
            store.save(&own, &token).await.expect("concurrency: save own key");
            store
                .save(&shared, &token)
                .await
                .expect("concurrency: save shared key");
            let mine = store
                .load(&own)
                .await
                .expect("concurrency: load own key")
                .expect("concurrency: own key lost");
            assert!(
                same_token(&mine, &token),
                "concurrency: own key {n} holds another token"
            );
            // The shared key holds some writer's whole token, never a mixture.
            let any = store
                .load(&shared)
                .await
                .expect("concurrency: load shared key")
                .expect("concurrency: shared key lost");
            let m = any
                .access_token()
                .expose_secret()
                .trim_start_matches("access-")
                .split('.')
                .next()
                .unwrap_or("")
                .parse::<u32>();
            let m = m.unwrap_or_else(|_| panic!("concurrency: shared key holds a torn token"));
            assert!(
                same_token(&any, &full_token(m)),
                "concurrency: shared key holds a mixture"
            );
            store.delete(&own).await.expect("concurrency: delete");
        }));
    }
    for t in tasks {
        t.await.expect("concurrency: task panicked");
    }
    store.delete(&shared).await.expect("concurrency: delete shared");
}

/// An [`Authorizer`](authwire::Authorizer) with `store`, dropped and rebuilt (a restart), reuses
/// the stored valid token without a fetch, and uses the stored refresh token once the access
/// token has expired. `store` is cloned into each authorizer, as a process would open it again.
pub async fn authorizer_restart_conformance<S: TokenStore + Clone>(store: S) {
    use crate::SequenceProvider;
    use authwire::{Authorizer, ManualClock};
    let clock = ManualClock::new(at(1_900_000_000, 0));
    let provider = SequenceProvider::new(
        format!("{}/restart", prefix()),
        Duration::from_secs(3600),
        clock.clone(),
    );
    let build = || {
        Authorizer::builder(provider.clone())
            .clock(clock.clone())
            .store(store.clone())
            .build()
    };

    let first = build();
    assert_eq!(
        first.authorization_header().await.expect("restart: first run"),
        "Bearer access-1"
    );
    drop(first);

    let second = build();
    assert_eq!(
        second.authorization_header().await.expect("restart: second run"),
        "Bearer access-1"
    );
    assert_eq!(provider.calls(), 1, "restart: the stored token was not reused");
    drop(second);

    clock.advance(Duration::from_secs(2 * 3600));
    let third = build();
    assert_eq!(
        third.authorization_header().await.expect("restart: after expiry"),
        "Bearer access-2"
    );
    assert_eq!(
        provider.seen_refresh_tokens(),
        [None, Some("refresh-1".to_owned())],
        "restart: the stored refresh token was not used"
    );
    drop(third);

    let fourth = build();
    assert_eq!(
        fourth.authorization_header().await.expect("restart: fourth run"),
        "Bearer access-2"
    );
    assert_eq!(provider.calls(), 2);
    store
        .delete(&provider.cache_key())
        .await
        .expect("restart: delete");
}
