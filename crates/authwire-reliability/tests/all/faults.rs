//! The identity-provider rows of the fault table in docs/RELIABILITY.md, across the whole stack:
//! OAuth2 provider -> Authorizer, against real loopback servers.
//!
//! Each fault is checked twice:
//! - **cold** (no token held): the call fails with the provider's error, classified as
//!   expected, and the server is not asked again before the backoff elapses;
//! - **warm** (a valid token with a refresh token held, its refresh due): the call is answered
//!   with the held token, and once the fault clears the next refresh uses the held refresh token
//!   (nothing is lost).

use authwire::{AuthError, Authorizer, ManualClock, ProviderError, SystemClock};
use authwire_oauth2::OAuth2Provider;
use authwire_testkit::{Fault, IdentityServer, Misbehavior, RawServer, Settings};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

fn provider(token_url: String, clock: &ManualClock) -> OAuth2Provider {
    authwire_testkit::confidential_client(token_url)
        .request_timeout(Duration::from_millis(700))
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn manual_clock() -> ManualClock {
    ManualClock::new(authwire::Clock::now(&SystemClock))
}

/// Wait (bounded, real time) until `done`.
async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

/// Cold: no token held. Returns the error for further checks.
async fn cold(idp: &IdentityServer, fault: Fault, transient: bool) -> ProviderError {
    idp.clear_faults();
    idp.inject(fault.times(100));
    let clock = manual_clock();
    let auth = Authorizer::builder(provider(idp.token_url(), &clock))
        .clock(clock.clone())
        .build();
    let e = auth.authorization_header().await.unwrap_err();
    let AuthError::Refresh(pe) = e.clone() else {
        panic!("{e:?}")
    };
    assert_eq!(pe.is_transient(), transient, "{pe}");
    let asked = idp.token_requests();
    for _ in 0..5 {
        assert_eq!(
            auth.authorization_header().await.unwrap_err().to_string(),
            e.to_string()
        );
    }
    assert_eq!(idp.token_requests(), asked, "not asked again during the backoff");
    idp.clear_faults();
    pe
}

/// Warm: a token with a refresh token is held and due for refresh when the fault strikes.
async fn warm(fault: Fault) {
    let idp = IdentityServer::builder()
        .settings(Settings {
            refresh_token_for_client_credentials: true,
            ..Settings::default()
        })
        .start()
        .await;
    let clock = manual_clock();
    let auth = Authorizer::builder(provider(idp.token_url(), &clock))
        .clock(clock.clone())
        .build();
    let held = auth.authorization_header().await.unwrap();
    clock.advance(HOUR - Duration::from_secs(200)); // refresh due, still valid
    idp.inject(fault.times(1000));
    for _ in 0..3 {
        assert_eq!(
            auth.authorization_header().await.unwrap(),
            held,
            "the held token keeps being served"
        );
    }
    eventually(|| auth.metrics().transient_failures + auth.metrics().permanent_failures >= 1).await;
    assert_eq!(auth.authorization_header().await.unwrap(), held);
    idp.clear_faults();
    clock.advance(authwire::DEFAULT_MAX_BACKOFF + Duration::from_secs(1));
    auth.authorization_header().await.unwrap(); // starts the refresh again
    eventually(|| idp.grant_count("refresh_token") == 1).await;
    let fresh = loop {
        let h = auth.authorization_header().await.unwrap();
        if h != held {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_ne!(fresh, held);
    assert_eq!(
        idp.errors("invalid_grant"),
        0,
        "the held refresh token was used, not lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_500_502_503_504() {
    let idp = IdentityServer::start().await;
    for status in [500, 502, 503, 504] {
        let e = cold(
            &idp,
            Fault::status(status, "<html>down</html>").content_type("text/html"),
            true,
        )
        .await;
        assert_eq!(e.status(), Some(status));
    }
    warm(Fault::status(503, "down")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_with_retry_after_seconds_and_date() {
    let idp = IdentityServer::start().await;
    let e = cold(
        &idp,
        Fault::oauth_error(429, "slow_down", "rate limited").retry_after("120"),
        true,
    )
    .await;
    assert_eq!(e.retry_after(), Some(Duration::from_secs(120)));
    let date = httpdate::fmt_http_date(authwire::Clock::now(&SystemClock) + Duration::from_secs(90));
    let e = cold(&idp, Fault::status(429, "").retry_after(date), true).await;
    let after = e.retry_after().unwrap();
    assert!(
        after > Duration::from_secs(80) && after <= Duration::from_secs(90),
        "{after:?}"
    );
    warm(Fault::status(429, "").retry_after("1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_success_answers_are_permanent_invalid_responses() {
    let idp = IdentityServer::start().await;
    let cases: Vec<(Fault, &str)> = vec![
        (
            Fault::status(200, "<html>Sign in</html>").content_type("text/html"),
            "not JSON",
        ),
        (
            Fault::status(200, r#"{"token_type":"Bearer","expires_in":60}"#),
            "without access_token",
        ),
        (
            Fault::status(200, r#"{"access_token":"x","expires_in":"soon"}"#),
            "expires_in is not a number",
        ),
        (Fault::status(200, b"\xff\xfe\xfd{".to_vec()), "not UTF-8"),
        (Fault::status(200, vec![b' '; 10 * 1024 * 1024]), "larger than"),
        (
            Fault::status(
                200,
                r#"{"access_token":"SECRET\r\nX-Injected: 1","token_type":"Bearer"}"#,
            ),
            "cannot go into an Authorization header",
        ),
        // A control character (BEL), escaped as JSON requires: valid JSON, unusable as a header.
        (
            Fault::status(200, r#"{"access_token":"SECRET\u0007bell"}"#),
            "cannot go into an Authorization header",
        ),
    ];
    for (fault, says) in cases {
        let e = cold(&idp, fault, false).await;
        assert!(matches!(e, ProviderError::InvalidResponse { .. }), "{e:?}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(!format!("{e} {e:?}").contains("SECRET"), "{e:?}");
    }
    warm(Fault::status(200, "<html>portal</html>").content_type("text/html")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_expires_in_values() {
    let idp = IdentityServer::start().await;
    for (expires_in, lives) in [
        ("-30", false),
        ("0", false),
        ("1e12", true),
        ("31536000000", true),
    ] {
        idp.clear_faults();
        let body = format!(r#"{{"access_token":"tok","token_type":"Bearer","expires_in":{expires_in}}}"#);
        idp.inject(Fault::status(200, body).times(1000));
        let clock = manual_clock();
        let auth = Authorizer::builder(provider(idp.token_url(), &clock))
            .clock(clock.clone())
            .build();
        let before = idp.token_requests();
        for _ in 0..20 {
            assert_eq!(auth.authorization_header().await.unwrap(), "Bearer tok");
        }
        assert_eq!(idp.token_requests() - before, 1, "{expires_in}: no refetch loop");
        clock.advance(Duration::from_secs(2));
        auth.authorization_header().await.unwrap();
        let refetched = idp.token_requests() - before > 1;
        assert_eq!(
            refetched, !lives,
            "{expires_in}: an expired-on-arrival token is reused for a second only"
        );
    }
    idp.clear_faults();
}

async fn transport_fault(behavior: Misbehavior, says: &str) {
    let server = RawServer::start(behavior).await;
    let clock = manual_clock();
    let auth = Authorizer::builder(provider(server.token_url(), &clock))
        .clock(clock.clone())
        .build();
    let e = auth.authorization_header().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    let chain = authwire::error_chain(&e);
    assert!(chain.contains(says), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_then_hangs_the_request_timeout_ends_the_flight() {
    transport_fault(Misbehavior::AcceptThenHang, "timed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_mid_response() {
    transport_fault(Misbehavior::CloseMidResponse, "broke off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_drip_of_one_byte_a_second() {
    transport_fault(Misbehavior::SlowDrip, "timed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let clock = manual_clock();
    let auth = Authorizer::builder(provider(format!("http://127.0.0.1:{port}/token"), &clock))
        .clock(clock)
        .build();
    let e = auth.authorization_header().await.unwrap_err();
    assert!(e.is_transient());
    assert!(authwire::error_chain(&e).contains("could not connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_ends_for_every_waiter_with_a_transient_error() {
    let server = RawServer::start(Misbehavior::AcceptThenHang).await;
    let clock = manual_clock();
    let auth = Authorizer::builder(provider(server.token_url(), &clock))
        .clock(clock)
        .build();
    let waiters: Vec<_> = (0..200)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.authorization_header().await })
        })
        .collect();
    for w in waiters {
        let e = w.await.unwrap().unwrap_err();
        assert!(e.is_transient());
    }
    assert_eq!(
        auth.metrics().fetches,
        1,
        "one flight for 200 waiters, ended by the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_callers_cancelled_mid_refresh() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            token_delay: Duration::from_millis(300),
            ..Settings::default()
        })
        .start()
        .await;
    let clock = manual_clock();
    let auth = Authorizer::builder(provider(idp.token_url(), &clock))
        .clock(clock)
        .build();
    let callers: Vec<_> = (0..5000)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.authorization_header().await })
        })
        .collect();
    eventually(|| idp.token_requests() == 1).await;
    for c in &callers {
        c.abort();
    }
    for c in callers {
        let _ = c.await;
    }
    // The flight was not cancelled with them: its token lands and is served without a new fetch.
    eventually(|| authwire_ok(&auth)).await;
    assert_eq!(idp.tokens_issued(), 1);
    assert_eq!(auth.metrics().fetches, 1);
}

fn authwire_ok(auth: &Authorizer) -> bool {
    auth.cached_authorization_header().is_some()
}
