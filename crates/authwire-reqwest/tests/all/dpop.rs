//! DPoP-bound tokens (RFC 9449) through the middleware, against the testkit's strict protected
//! API: a fresh proof for each request, `htu` and `ath` right with query strings, replays refused.

use authwire::{AuthError, Authorizer};
use authwire_oauth2::DpopKey;
use authwire_reqwest::AuthMiddleware;
use authwire_testkit::{IdentityServer, ResourceServer};
use reqwest_middleware::ClientWithMiddleware;

/// An identity server, a strict API, and a middleware client whose tokens are DPoP-bound.
async fn bound_client() -> (IdentityServer, ResourceServer, Authorizer, ClientWithMiddleware) {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    let key = DpopKey::generate_es256().unwrap();
    let authorizer = Authorizer::new(idp.confidential_client().dpop(key).build().unwrap());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::for_origins(authorizer.clone(), [api.url()]).unwrap())
        .build();
    (idp, api, authorizer, client)
}

#[tokio::test]
async fn bound_tokens_go_out_with_a_fresh_proof_for_each_request_and_pass_a_strict_api() {
    let (idp, api, authorizer, client) = bound_client().await;
    let r = client
        .get(format!("{}/v1/things?page=2&sort=asc", api.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = client
        .post(format!("{}/v1/orders?dry_run=1", api.url()))
        .body("order")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        api.dpop_proofs_verified(),
        2,
        "both proofs verified: htm, htu without the query, ath"
    );
    assert_eq!(idp.tokens_issued(), 1);
    let seen = api.authorization_seen();
    assert!(
        seen.iter()
            .all(|a| a.as_deref().is_some_and(|a| a.starts_with("DPoP "))),
        "{seen:?}"
    );

    // A captured request replayed as is (same proof) is refused.
    let proofs = api.dpop_proofs_seen();
    let replay = reqwest::Client::new()
        .get(format!("{}/v1/things?page=2&sort=asc", api.url()))
        .header("authorization", seen[0].clone().unwrap())
        .header("dpop", proofs[0].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401, "a replayed proof");
    // The bound token stolen and sent as a bearer token is refused too.
    let token = seen[0].as_deref().unwrap().trim_start_matches("DPoP ").to_owned();
    let stolen = reqwest::Client::new()
        .get(format!("{}/v1/things", api.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 401, "a bound token used as a bearer token");

    // A call that cannot make a proof refuses the bound token instead of sending it bare.
    let mut headers = http::HeaderMap::new();
    assert!(matches!(
        authorizer.authorize(&mut headers).await,
        Err(AuthError::ProofRequired)
    ));
}

#[tokio::test]
async fn a_rejected_bound_token_is_refreshed_and_the_retry_gets_its_own_proof() {
    let (idp, api, _, client) = bound_client().await;
    assert_eq!(client.get(api.url()).send().await.unwrap().status(), 200);
    api.reject_next(1);
    let r = client
        .post(format!("{}/v1/orders", api.url()))
        .body("o")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(idp.tokens_issued(), 2, "one refresh");
    assert_eq!(
        api.dpop_proofs_verified(),
        2,
        "the first request and the retry each had a valid proof"
    );
    // The forced 401 answers before proofs are recorded: the first GET's, then the retry's.
    let proofs = api.dpop_proofs_seen();
    assert_eq!(proofs.len(), 2);
    assert_ne!(proofs[0], proofs[1], "the retry signed a new proof");
    let seen = api.authorization_seen();
    assert_ne!(seen[1], seen[2], "and carried the new token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_server_nonces_are_answered_once_remembered_and_followed_when_they_change() {
    let (idp, api, _, client) = bound_client().await;
    api.require_dpop_nonce("nonce-1");
    let r = client
        .post(format!("{}/v1/orders", api.url()))
        .body("o")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "answered by one retry with the nonce");
    assert_eq!(api.dpop_nonce_challenges(), 1);
    assert_eq!(api.requests(), 2);
    assert_eq!(client.get(api.url()).send().await.unwrap().status(), 200);
    assert_eq!(api.dpop_nonce_challenges(), 1, "the nonce was remembered");

    // The server moves to a new nonce while requests run concurrently: each is answered (at
    // most one challenge each), and they share the new nonce afterwards.
    api.require_dpop_nonce("nonce-2");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), api.url());
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let challenges = api.dpop_nonce_challenges();
    assert!((2..=9).contains(&challenges), "{challenges}");
    assert_eq!(client.get(api.url()).send().await.unwrap().status(), 200);
    assert_eq!(api.dpop_nonce_challenges(), challenges, "shared afterwards");
    assert_eq!(idp.tokens_issued(), 1, "a nonce is not a reason to refresh");
}

#[tokio::test]
async fn a_restarted_process_uses_the_stored_bound_token_with_its_stored_key() {
    use authwire::secrecy::ExposeSecret;
    use authwire::{Token, TokenStore, TokenType};
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    let store = BytesStore::default();
    let key = DpopKey::generate_es256().unwrap();
    let pem = key.to_pkcs8_pem();
    let process = |key: DpopKey| {
        let provider = idp.confidential_client().dpop(key).build().unwrap();
        let authorizer = Authorizer::builder(provider).store(store.clone()).build();
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(AuthMiddleware::for_origins(authorizer.clone(), [api.url()]).unwrap())
            .build();
        (authorizer, client)
    };
    let (first, client) = process(key);
    assert_eq!(client.get(api.url()).send().await.unwrap().status(), 200);
    let stored = store.load(first.cache_key()).await.unwrap().unwrap();
    assert!(
        stored.stored_proof_key().is_some(),
        "the key was stored with the token"
    );
    assert!(
        stored.proof().is_none(),
        "what a store reads back has no live proof"
    );

    // A restart: new authorizer, the key loaded from where the application kept it.
    let (_, restarted) = process(DpopKey::from_pkcs8_pem(pem.expose_secret().as_bytes()).unwrap());
    assert_eq!(restarted.get(api.url()).send().await.unwrap().status(), 200);
    assert_eq!(
        idp.tokens_issued(),
        1,
        "the stored token was used, not a new one fetched"
    );
    assert_eq!(api.dpop_proofs_verified(), 2);

    // A stored bound token whose key is gone is refreshed, never sent bare.
    let keyless = Token::new(stored.access_token().expose_secret())
        .with_token_type(TokenType::DPoP)
        .with_expires_at(stored.expires_at().unwrap());
    store.save(first.cache_key(), &keyless).await.unwrap();
    let (_, again) = process(DpopKey::from_pkcs8_pem(pem.expose_secret().as_bytes()).unwrap());
    assert_eq!(again.get(api.url()).send().await.unwrap().status(), 200);
    assert_eq!(idp.tokens_issued(), 2, "refreshed");
    assert_eq!(api.unauthorized(), 0, "nothing was sent without its proof");
}

/// A store that keeps only what `store::encode` writes, as every persistent store does.
#[derive(Clone, Default)]
struct BytesStore(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>>);

#[authwire::async_trait]
impl authwire::TokenStore for BytesStore {
    async fn load(&self, key: &authwire::CacheKey) -> Result<Option<authwire::Token>, authwire::StoreError> {
        let map = self.0.lock().unwrap();
        map.get(key.as_str())
            .map(|b| authwire::store::decode(b).map_err(authwire::StoreError::new))
            .transpose()
    }
    async fn save(
        &self,
        key: &authwire::CacheKey,
        token: &authwire::Token,
    ) -> Result<(), authwire::StoreError> {
        let bytes = authwire::store::encode(token).to_vec();
        self.0.lock().unwrap().insert(key.as_str().to_owned(), bytes);
        Ok(())
    }
    async fn delete(&self, key: &authwire::CacheKey) -> Result<(), authwire::StoreError> {
        self.0.lock().unwrap().remove(key.as_str());
        Ok(())
    }
}
