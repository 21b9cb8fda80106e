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
