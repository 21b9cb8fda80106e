//! The secret-leak guard: the whole stack at `tracing` TRACE level (every crate, hyper and
//! reqwest included) with panics captured, every secret carrying a marker. The marker must reach
//! the wire (a positive control) and must never appear in a log line, an error's `Display` or
//! `Debug`, a `Debug` of any value, or a panic message. Files written by the file store must be
//! private.

use authwire::{Authorizer, ManualClock, SystemClock};
use authwire_file::FileStore;
use authwire_oauth2::{ClientAuthMethod, OAuth2Provider};
use authwire_reqwest::AuthMiddleware;
use authwire_testkit::{Client, Fault, IdentityServer, ResourceServer, Settings};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MARKER: &str = "SEKRITMARK7";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn note(&self, what: impl std::fmt::Display) {
        let _ = writeln!(self.clone(), "{what}");
    }
}

fn capture() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    let panics = captured.clone();
    std::panic::set_hook(Box::new(move |info| panics.note(format!("PANIC: {info}"))));
    captured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_debug_output_or_panics() {
    let log = capture();
    let secret = format!("cs-{MARKER}-x:y%z");
    let idp = IdentityServer::builder()
        .client(Client::confidential("leak-client", secret.clone()))
        .settings(Settings {
            jwt_access_tokens: false,
            refresh_token_for_client_credentials: true,
            secret_marker: Some(MARKER.into()),
            ..Settings::default()
        })
        .start()
        .await;
    let api = ResourceServer::start(&idp).await;
    let dir = std::env::temp_dir().join(format!("authwire-leaks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = FileStore::new(&dir).unwrap();
    let clock = ManualClock::new(authwire::Clock::now(&SystemClock));

    for method in [
        ClientAuthMethod::ClientSecretBasic,
        ClientAuthMethod::ClientSecretPost,
    ] {
        let provider = OAuth2Provider::builder()
            .token_url(idp.token_url())
            .client_id("leak-client")
            .client_secret(secret.clone())
            .auth_method(method)
            .clock(clock.clone())
            .build()
            .unwrap();
        log.note(format!("{provider:?}"));
        let authorizer = Authorizer::builder(provider)
            .store(store.clone())
            .clock(clock.clone())
            .build();
        let middleware = AuthMiddleware::for_origins(authorizer.clone(), [api.url()]).unwrap();
        log.note(format!("{middleware:?}"));
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(middleware)
            .build();

        // Requests, a revoked token (401, refresh, retry), a refresh with the refresh token.
        for _ in 0..3 {
            assert_eq!(client.get(api.url()).send().await.unwrap().status(), 200);
        }
        api.reject_next(1);
        assert_eq!(
            client.post(api.url()).body("x").send().await.unwrap().status(),
            200
        );
        clock.advance(Duration::from_secs(2 * 3600));
        assert_eq!(client.get(api.url()).send().await.unwrap().status(), 200);
        let token = authorizer.token().await.unwrap();
        log.note(format!(
            "{token:?} {:?} {authorizer:?} {:?}",
            authorizer.authorization_header().await.unwrap(),
            authorizer.metrics()
        ));

        // Failures, with the errors printed every way a program might print them.
        for fault in [
            Fault::status(503, "down"),
            Fault::status(
                200,
                format!(r#"{{"refresh_token":"rt-{MARKER}","token_type":"Bearer"}}"#),
            ),
            Fault::status(200, format!("{{\"access_token\":\"at-{MARKER}\\r\\nX: y\"}}")),
            Fault::status(200, "<html>portal</html>").content_type("text/html"),
        ] {
            idp.inject(fault);
            clock.advance(Duration::from_secs(2 * 3600));
            if let Err(e) = client.get(api.url()).send().await {
                log.note(format!("{e} | {e:?} | {}", authwire::error_chain(&e)));
            }
            idp.clear_faults();
        }
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).ok();
    }

    // A wrong secret: the error names the failure, never the secret that was sent.
    let wrong = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id("leak-client")
        .client_secret(format!("wrong-{MARKER}"))
        .build()
        .unwrap();
    let e = Authorizer::new(wrong).authorization_header().await.unwrap_err();
    log.note(format!("{e} | {e:?} | {}", authwire::error_chain(&e)));

    // Positive control: the marker was on the wire, in the tokens the API received.
    let seen = api.authorization_seen();
    assert!(
        seen.iter().flatten().any(|h| h.contains(MARKER)),
        "tokens carried the marker"
    );
    // The capture works: the library's events are there.
    let text = log.text();
    assert!(
        text.contains("token refreshed") && text.contains("token refresh failed"),
        "{}",
        &text[..text.len().min(2000)]
    );
    assert!(
        text.contains("TRACE"),
        "hyper/reqwest trace events were captured too"
    );

    let leaks: Vec<&str> = text.lines().filter(|l| l.contains(MARKER)).collect();
    assert!(
        leaks.is_empty(),
        "{} lines leak a secret, e.g.:\n{}",
        leaks.len(),
        leaks.iter().take(5).copied().collect::<Vec<_>>().join("\n")
    );
    assert!(!text.contains("PANIC"), "no panic happened");
    eprintln!(
        "leak guard: {} lines, {} bytes of TRACE output and printed values; no secret",
        text.lines().count(),
        text.len()
    );
}

#[tokio::test]
async fn files_written_by_the_file_store_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("authwire-leaks-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = FileStore::new(&dir).unwrap();
    let key = authwire::CacheKey::new("k");
    authwire::TokenStore::save(&store, &key, &authwire::Token::new("t").with_refresh_token("r"))
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
