//! Issue 28: step-up challenges through the middleware, end to end: the testkit's API demands
//! a stronger login or claims, the credential answers once and the request is replayed once;
//! a challenge that cannot be answered reaches the caller as an error carrying it, with the
//! API seeing each request once (no retry storm).

use authwire::{AuthError, Authorizer, StepUpReason};
use authwire_oauth2::{BrowserLogin, OAuth2Provider};
use authwire_reqwest::AuthMiddleware;
use authwire_testkit::{Client, IdentityServer, ResourceServer, ScriptedBrowser};
use reqwest_middleware::ClientWithMiddleware;
use std::time::Duration;

fn client_for(authorizer: &Authorizer, api: &ResourceServer) -> ClientWithMiddleware {
    let middleware = AuthMiddleware::for_origins(authorizer.clone(), [api.url()]).unwrap();
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

/// GET `path` on the API; the status.
async fn get(client: &ClientWithMiddleware, api: &ResourceServer, path: &str) -> u16 {
    let r = client.get(format!("{}{path}", api.url())).send().await.unwrap();
    r.status().as_u16()
}

fn confidential(idp: &IdentityServer) -> authwire_oauth2::OAuth2ProviderBuilder {
    OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
}

fn step_up_error(e: &reqwest_middleware::Error) -> Option<&AuthError> {
    match e {
        reqwest_middleware::Error::Middleware(inner) => inner.downcast_ref::<AuthError>(),
        _ => None,
    }
}

#[tokio::test]
async fn an_api_that_asks_for_a_stronger_login_gets_one_and_the_request_is_replayed_once() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    api.require_acr(Some("gold"));
    // A person is there: the step-up login is "opened" in a scripted browser.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<url::Url>();
    let provider = confidential(&idp)
        .step_up_login(BrowserLogin::new().reuse_window(Duration::ZERO), move |url| {
            let _ = tx.send(url.clone());
        })
        .build()
        .unwrap();
    let person = tokio::spawn(async move {
        let link = rx.recv().await.unwrap();
        let browser = ScriptedBrowser::new();
        let authorization = browser.open(link.as_str()).await.unwrap();
        browser.login(authorization.as_str()).await.unwrap();
        authorization
    });
    let authorizer = Authorizer::new(provider);
    let client = client_for(&authorizer, &api);
    assert_eq!(get(&client, &api, "/v1/report").await, 200);
    let authorization = person.await.unwrap();
    assert!(
        authorization
            .query_pairs()
            .any(|(k, v)| k == "acr_values" && v == "gold"),
        "{authorization}"
    );
    assert_eq!(api.challenges(), 1);
    assert_eq!(api.requests(), 2, "the request and its one replay");
    assert_eq!(authorizer.metrics().step_ups, 1);
    // The stepped-up token serves from now on.
    assert_eq!(get(&client, &api, "/v1/report").await, 200);
    assert_eq!(api.challenges(), 1);
}

#[tokio::test]
async fn a_claims_challenge_is_answered_with_the_claims_and_the_clients_capabilities() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    let demanded = r#"{"access_token":{"nbf":{"essential":true,"value":"1726563200"}}}"#;
    api.require_claims(Some(demanded));
    let provider = confidential(&idp).client_capabilities(["cp1"]).build().unwrap();
    let authorizer = Authorizer::new(provider);
    let client = client_for(&authorizer, &api);
    let r = client.get(format!("{}/v1/mail", api.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(api.challenges(), 1);
    assert_eq!(
        idp.grant_count("client_credentials"),
        2,
        "the first token, then one asking for the claims"
    );
    let asked: serde_json::Value = serde_json::from_str(&idp.last_form()["claims"]).unwrap();
    assert_eq!(asked["access_token"]["nbf"]["value"], "1726563200");
    assert_eq!(asked["access_token"]["xms_cc"]["values"][0], "cp1");
}

#[tokio::test]
async fn a_challenge_that_cannot_be_answered_surfaces_once_per_request_with_no_retry_storm() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    api.require_scope(Some("admin"));
    let authorizer = Authorizer::new(confidential(&idp).build().unwrap());
    let client = client_for(&authorizer, &api);
    let mut calls = Vec::new();
    for i in 0..16 {
        let (client, url) = (client.clone(), format!("{}/v1/admin/{i}", api.url()));
        calls.push(tokio::spawn(async move { client.get(url).send().await }));
    }
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        let auth = step_up_error(&err).expect("an AuthError");
        let challenge = auth.step_up_challenge().expect("carrying the challenge");
        assert_eq!(challenge.reason, StepUpReason::Scope);
        assert_eq!(challenge.scope.as_deref(), Some("admin"));
        assert!(!auth.to_string().contains("ey"), "{auth}");
    }
    assert_eq!(api.requests(), 16, "each request sent once, none replayed");
    assert_eq!(
        idp.grant_count("client_credentials"),
        1,
        "no token request for a challenge no token can answer"
    );
    let m = authorizer.metrics();
    assert_eq!(
        (m.fetches, m.permanent_failures, m.invalidations),
        (1, 0, 0),
        "{m:?}"
    );
    let m = authorizer.metrics();
    assert_eq!(
        (m.fetches, m.permanent_failures, m.invalidations),
        (1, 0, 0),
        "{m:?}"
    );

    // A stronger login with nobody to log in: the same, once.
    api.require_scope(None);
    api.require_acr(Some("gold"));
    let err = client
        .get(format!("{}/v1/x", api.url()))
        .send()
        .await
        .unwrap_err();
    let auth = step_up_error(&err).unwrap();
    assert_eq!(
        auth.step_up_challenge().unwrap().acr_values.as_deref(),
        Some("gold")
    );
    assert_eq!(api.requests(), 17);
    // The still-valid token keeps serving where no step-up is asked for.
    api.require_acr(None);
    assert_eq!(
        client
            .get(format!("{}/v1/x", api.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
