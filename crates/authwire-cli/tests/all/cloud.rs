//! Issue 15: `--credential gcp|azure`, against the testkit's emulators on loopback. Every run
//! names the emulator in its environment; none can reach a real metadata address.

use super::*;
use authwire_testkit::{AZURE_USER_ASSIGNED_CLIENT_ID, AzureEmulator, GcpEmulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_google_application_default_credentials() {
    let gcp = GcpEmulator::start().await;
    let sb = Sandbox::new();
    let key = sb.path("sa.json");
    std::fs::write(&key, gcp.service_account_key_json()).unwrap();
    let run = || {
        Run::new(&sb, &["token", "--credential", "gcp", "--cache", "file"])
            .env("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap())
    };
    let first = run().output().await;
    assert_eq!(first.code(), 0, "{}", first.stderr());
    assert!(gcp.check_token(first.stdout().trim()).is_some());
    assert_eq!(
        gcp.last_scopes().as_deref(),
        Some("https://www.googleapis.com/auth/cloud-platform"),
        "cloud-platform when no --scope is given"
    );
    let second = run().output().await;
    assert_eq!(second.stdout(), first.stdout(), "cached");
    assert_eq!(gcp.token_requests(), 1);

    // The metadata server, by GCE_METADATA_HOST (the probe is on, and finds the emulator).
    let metadata = Run::new(&sb, &["token", "--credential", "gcp", "--cache", "none"])
        .env("GCE_METADATA_HOST", &gcp.host())
        .env("NO_GCE_CHECK", "")
        .output()
        .await;
    assert_eq!(metadata.code(), 0, "{}", metadata.stderr());
    assert!(gcp.check_token(metadata.stdout().trim()).is_some());

    // Nothing configured (and no gcloud on PATH, whatever this machine has): one line that
    // says what to set.
    let empty = sb.path("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let nothing = Run::new(&sb, &["token", "--credential", "gcp", "--cache", "none"])
        .env("PATH", empty.to_str().unwrap())
        .output()
        .await;
    assert_eq!(nothing.code(), 1);
    assert!(
        nothing
            .assert_one_line_error()
            .contains("set GOOGLE_APPLICATION_CREDENTIALS")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_azure_managed_identity() {
    let azure = AzureEmulator::start().await;
    let sb = Sandbox::new();
    let out = Run::new(
        &sb,
        &[
            "token",
            "--credential",
            "azure",
            "--scope",
            "https://management.azure.com/.default",
            "--cache",
            "none",
        ],
    )
    .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", &azure.url())
    .env("AZURE_CLIENT_ID", AZURE_USER_ASSIGNED_CLIENT_ID)
    .output()
    .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(
        azure.check_token(out.stdout().trim()).as_deref(),
        Some(AZURE_USER_ASSIGNED_CLIENT_ID)
    );
    let no_scope = Run::new(&sb, &["token", "--credential", "azure"]).output().await;
    assert_eq!(no_scope.code(), 1);
    assert!(no_scope.assert_one_line_error().contains("exactly one --scope"));
    let login = Run::new(&sb, &["login", "--credential", "azure", "--scope", "x/.default"])
        .output()
        .await;
    assert_eq!(login.code(), 1);
    assert!(
        login
            .assert_one_line_error()
            .contains("needs an OAuth2 identity provider")
    );
}

/// Issue 30, performance: on a developer machine (a gcloud login, no metadata server), the
/// chain probes the metadata server before it reaches gcloud. A cached run must not wait for
/// that probe again. The "metadata server" here is a loopback listener that accepts and never
/// answers, as the link-local metadata address behaves off Google Cloud; it counts the probes
/// it gets. Nothing here leaves loopback.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_gcloud_token_is_served_without_probing_the_metadata_server_again() {
    let sb = Sandbox::new();
    let bin = authwire_testkit::TempDir::new("fake-gcloud");
    let ran = bin.path().join("ran");
    authwire_testkit::fake_program(
        &bin,
        "gcloud",
        &format!(
            "echo x >> {}\necho '{{\"credential\": {{\"access_token\": \"ya29.from-gcloud\", \"token_expiry\": \"2099-01-01T00:00:00Z\"}}}}'",
            ran.display()
        ),
    );
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_host = silent.local_addr().unwrap().to_string();
    let probes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = probes.clone();
    let _listener = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(conn); // open, silent
        }
    });
    let run = || {
        Run::new(&sb, &["token", "--credential", "gcp", "--cache", "file"])
            .env("NO_GCE_CHECK", "")
            .env("GCE_METADATA_IP", &silent_host)
            .env("GCE_METADATA_HOST", &silent_host)
            .env("PATH", bin.path().to_str().unwrap())
    };
    let first = run().output().await;
    assert_eq!(first.code(), 0, "{}", first.stderr());
    assert_eq!(first.stdout().trim(), "ya29.from-gcloud");
    assert_eq!(
        probes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the first run probed"
    );
    let second = run().output().await;
    assert_eq!(second.code(), 0, "{}", second.stderr());
    assert_eq!(second.stdout(), first.stdout());
    assert_eq!(
        probes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the cached run did not probe the metadata server"
    );
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap().lines().count(),
        1,
        "gcloud ran once"
    );
}
