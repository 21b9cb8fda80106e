//! Every Azure source end to end against the testkit's emulator of Azure's endpoints on
//! 127.0.0.1. Nothing here talks to Azure or to a cloud metadata address: every environment names the
//! emulator (or a closed loopback port) before a credential is built.

use authwire::secrecy::ExposeSecret;
use authwire::{Authorizer, Clock, IdentityProvider, ManualClock, SystemClock};
use authwire_azure::{
    AzureCredential, AzureError, EnvironmentCredential, ManagedIdentity, WorkloadIdentity,
    default_credential_in,
};
use authwire_testkit::{
    AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_IDENTITY_HEADER, AZURE_TENANT_ID,
    AZURE_USER_ASSIGNED_CLIENT_ID, AzureEmulator, TempDir, wait_until,
};
use std::collections::HashMap;
use std::time::Duration;

const ARM: &str = "https://management.azure.com/.default";

fn env(pairs: &[(&'static str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<&'static str, String> = pairs.iter().cloned().collect();
    move |n: &str| map.get(n).cloned()
}

fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test]
async fn imds_tokens_are_cached_and_refreshed_ahead_of_expiry() {
    let clock = ManualClock::new(SystemClock.now());
    let azure = AzureEmulator::start_with_clock(clock.clone()).await;
    azure.set_token_lifetime(Duration::from_secs(3600));
    let provider = ManagedIdentity::new()
        .imds_endpoint(azure.url())
        .scope(ARM)
        .clock(clock.clone());
    let authorizer = Authorizer::builder(provider).clock(clock.clone()).build();
    let first = authorizer.token().await.unwrap();
    assert_eq!(
        azure.check_token(first.access_token().expose_secret()).as_deref(),
        Some("system-assigned")
    );
    assert_eq!(
        azure.last_resource().as_deref(),
        Some("https://management.azure.com"),
        "the resource is the scope without /.default"
    );
    let left = first.expires_at().unwrap().duration_since(clock.now()).unwrap();
    assert!(
        left > Duration::from_secs(3590),
        "expires_on (a string) was read: {left:?}"
    );
    authorizer.token().await.unwrap();
    assert_eq!(azure.imds_requests(), 1);

    clock.advance(Duration::from_secs(3480));
    let header = authorizer.cached_authorization_header().unwrap();
    assert!(authorizer.token().await.unwrap().same_access_token(&first));
    wait_until(|| {
        clock.advance(Duration::from_millis(100));
        authorizer
            .cached_authorization_header()
            .is_some_and(|h| h != header)
    })
    .await;
    assert_eq!(azure.imds_requests(), 2);
}

#[tokio::test]
async fn user_assigned_identities_and_their_errors() {
    let azure = AzureEmulator::start().await;
    let mine = ManagedIdentity::new()
        .imds_endpoint(azure.url())
        .client_id(AZURE_USER_ASSIGNED_CLIENT_ID)
        .scope("https://vault.azure.net/.default");
    let token = mine.fetch_token(None).await.unwrap();
    assert_eq!(
        azure.check_token(token.access_token().expose_secret()).as_deref(),
        Some(AZURE_USER_ASSIGNED_CLIENT_ID)
    );
    let other = ManagedIdentity::new()
        .imds_endpoint(azure.url())
        .client_id("11111111-2222-3333-4444-555555555555")
        .scope(ARM);
    let e = other.fetch_token(None).await.unwrap_err();
    assert!(!e.is_transient());
    assert!(
        authwire::error_chain(&e).contains("no managed identity with client id 11111111"),
        "{}",
        authwire::error_chain(&e)
    );
    // The emulator, like IMDS, requires `Metadata: true`.
    let bare = reqwest::get(format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x",
        azure.url()
    ))
    .await
    .unwrap();
    assert_eq!(bare.status().as_u16(), 400);
}

#[tokio::test]
async fn app_service_uses_identity_endpoint_and_header() {
    let azure = AzureEmulator::start().await;
    let vars = env(&[
        ("IDENTITY_ENDPOINT", azure.identity_endpoint()),
        ("IDENTITY_HEADER", AZURE_IDENTITY_HEADER.into()),
    ]);
    let provider = ManagedIdentity::from_env_in(&vars).scope(ARM);
    assert!(provider.is_app_service());
    assert!(!format!("{provider:?}").contains(AZURE_IDENTITY_HEADER));
    let token = provider.fetch_token(None).await.unwrap();
    assert!(azure.check_token(token.access_token().expose_secret()).is_some());
    assert_eq!(azure.app_service_requests(), 1);
    assert_eq!(azure.imds_requests(), 0);

    let wrong = env(&[
        ("IDENTITY_ENDPOINT", azure.identity_endpoint()),
        ("IDENTITY_HEADER", "guessed".into()),
    ]);
    let e = ManagedIdentity::from_env_in(&wrong)
        .scope(ARM)
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(!authwire::error_chain(&e).contains("guessed"));
    // Issue 31: the endpoint's own words, not just "an error status without an OAuth error body".
    assert!(
        authwire::error_chain(&e).contains("message: No X-IDENTITY-HEADER header or invalid header value"),
        "{}",
        authwire::error_chain(&e)
    );
}

#[tokio::test]
async fn workload_identity_reads_the_rotated_federated_token_file() {
    let azure = AzureEmulator::start().await;
    let dir = TempDir::new("azure-wi");
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, "eyJ.kube-sa-token-1.sig").unwrap();
    azure.set_federated_token("eyJ.kube-sa-token-1.sig");
    let vars = env(&[
        ("AZURE_TENANT_ID", AZURE_TENANT_ID.into()),
        ("AZURE_CLIENT_ID", AZURE_CLIENT_ID.into()),
        ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
        ("AZURE_AUTHORITY_HOST", azure.url()),
    ]);
    let provider = WorkloadIdentity::from_env_in(&vars).unwrap().scope(ARM);
    let authorizer = Authorizer::new(provider);
    let first = authorizer.token().await.unwrap();
    assert!(azure.check_token(first.access_token().expose_secret()).is_some());
    let form = azure.last_form();
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(form["scope"], ARM);
    assert_eq!(form["client_id"], AZURE_CLIENT_ID);

    // The kubelet rotates the token; Entra now trusts only the new one.
    std::fs::write(&file, "eyJ.kube-sa-token-2.sig").unwrap();
    azure.set_federated_token("eyJ.kube-sa-token-2.sig");
    assert!(authorizer.invalidate_token(&first));
    let second = authorizer.token().await.unwrap();
    assert!(azure.check_token(second.access_token().expose_secret()).is_some());

    let missing = env(&[("AZURE_FEDERATED_TOKEN_FILE", "/x".into())]);
    assert_eq!(
        WorkloadIdentity::from_env_in(&missing).unwrap_err(),
        AzureError::Missing("AZURE_TENANT_ID")
    );
}

#[tokio::test]
async fn a_client_secret_from_the_environment_and_entras_errors() {
    let azure = AzureEmulator::start().await;
    let vars = env(&[
        ("AZURE_TENANT_ID", AZURE_TENANT_ID.into()),
        ("AZURE_CLIENT_ID", AZURE_CLIENT_ID.into()),
        ("AZURE_CLIENT_SECRET", AZURE_CLIENT_SECRET.into()),
        ("AZURE_AUTHORITY_HOST", format!("{}/", azure.url())),
    ]);
    let credential = EnvironmentCredential::from_env_in(&vars).unwrap().scope(ARM);
    assert!(!format!("{credential:?}").contains(AZURE_CLIENT_SECRET));
    let token = credential.fetch_token(None).await.unwrap();
    assert!(azure.check_token(token.access_token().expose_secret()).is_some());
    assert_eq!(
        azure.last_form()["client_secret"],
        "<present>",
        "sent in the body"
    );

    // Entra wants `/.default`: its AADSTS error comes through, without the secret.
    let wrong_scope = EnvironmentCredential::from_env_in(&vars)
        .unwrap()
        .scope("https://management.azure.com/user_impersonation")
        .fetch_token(None)
        .await
        .unwrap_err();
    assert_eq!(wrong_scope.error_code(), Some("invalid_scope"));
    assert!(authwire::error_chain(&wrong_scope).contains("AADSTS1002012"));
    let bad = env(&[
        ("AZURE_TENANT_ID", AZURE_TENANT_ID.into()),
        ("AZURE_CLIENT_ID", AZURE_CLIENT_ID.into()),
        ("AZURE_CLIENT_SECRET", "not-the-secret".into()),
        ("AZURE_AUTHORITY_HOST", azure.url()),
    ]);
    let e = EnvironmentCredential::from_env_in(&bad)
        .unwrap()
        .scope(ARM)
        .fetch_token(None)
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some("invalid_client"));
    assert!(!e.is_transient());
    assert!(!authwire::error_chain(&e).contains("not-the-secret"));
}

#[tokio::test]
async fn a_certificate_from_the_environment_signs_assertions_with_x5t() {
    let azure = AzureEmulator::start().await;
    let dir = TempDir::new("azure-cert");
    let cert = client_certificate(&dir);
    azure.trust_certificate(&std::fs::read_to_string(&cert).unwrap());
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        format!(
            "{}{}",
            std::fs::read_to_string(&cert).unwrap(),
            authwire_testkit::CLIENT_PRIVATE_KEY_PEM
        ),
    )
    .unwrap();
    let vars = env(&[
        ("AZURE_TENANT_ID", AZURE_TENANT_ID.into()),
        ("AZURE_CLIENT_ID", AZURE_CLIENT_ID.into()),
        ("AZURE_CLIENT_CERTIFICATE_PATH", bundle.display().to_string()),
        ("AZURE_AUTHORITY_HOST", azure.url()),
    ]);
    let credential = EnvironmentCredential::from_env_in(&vars).unwrap().scope(ARM);
    let token = credential.fetch_token(None).await.unwrap();
    assert!(azure.check_token(token.access_token().expose_secret()).is_some());
    assert_eq!(azure.last_form()["client_assertion"], "<present>");
}

#[tokio::test]
async fn the_default_chain_picks_in_the_sdks_order_and_fails_fast_off_azure() {
    let azure = AzureEmulator::start().await;
    let tenant = [
        ("AZURE_TENANT_ID", AZURE_TENANT_ID.to_owned()),
        ("AZURE_CLIENT_ID", AZURE_CLIENT_ID.to_owned()),
        ("AZURE_AUTHORITY_HOST", azure.url()),
    ];
    let with = |extra: &[(&'static str, String)]| {
        let mut all = tenant.to_vec();
        all.extend_from_slice(extra);
        all.push(("AZURE_POD_IDENTITY_AUTHORITY_HOST", closed_port()));
        env(&all)
    };
    let kind = |vars: &dyn Fn(&str) -> Option<String>| default_credential_in(vars).unwrap().kind();
    assert_eq!(kind(&with(&[("AZURE_CLIENT_SECRET", "x".into())])), "environment");
    assert_eq!(
        kind(&with(&[
            ("AZURE_CLIENT_SECRET", "x".into()),
            ("AZURE_FEDERATED_TOKEN_FILE", "/t".into())
        ])),
        "environment",
        "the environment comes first"
    );
    assert_eq!(
        kind(&with(&[("AZURE_FEDERATED_TOKEN_FILE", "/t".into())])),
        "workload_identity"
    );
    assert_eq!(kind(&with(&[])), "managed_identity");

    // Managed identity with AZURE_CLIENT_ID: the user-assigned identity, from IMDS here.
    let vars = env(&[
        ("AZURE_CLIENT_ID", AZURE_USER_ASSIGNED_CLIENT_ID.into()),
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", azure.url()),
    ]);
    let chosen = default_credential_in(&vars).unwrap().scope(ARM);
    let token = chosen.fetch_token(None).await.unwrap();
    assert_eq!(
        azure.check_token(token.access_token().expose_secret()).as_deref(),
        Some(AZURE_USER_ASSIGNED_CLIENT_ID)
    );
    assert_eq!(azure.imds_requests(), 2, "one probe, one token request");

    // Off Azure (IMDS does not answer): a permanent error that says what to set, quickly.
    let away = env(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", closed_port())]);
    let e = default_credential_in(&away)
        .unwrap()
        .scope(ARM)
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(!e.is_transient());
    assert!(
        authwire::error_chain(&e).contains("not on Azure? set AZURE_CLIENT_ID"),
        "{}",
        authwire::error_chain(&e)
    );
    assert!(matches!(
        default_credential_in(&away).unwrap(),
        AzureCredential::Managed(_)
    ));
}

#[tokio::test]
async fn managed_identity_never_goes_through_the_transport_proxy() {
    let azure = AzureEmulator::start().await;
    let proxy = authwire_testkit::ForwardProxy::start().await;
    let transport = authwire_oauth2::Transport::new().proxy(&proxy.url()).unwrap();
    let provider = ManagedIdentity::new()
        .imds_endpoint(azure.url())
        .scope(ARM)
        .transport(transport.clone());
    let token = provider.fetch_token(None).await.unwrap();
    assert!(azure.check_token(token.access_token().expose_secret()).is_some());
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());

    // An Entra credential goes through it.
    let credential = EnvironmentCredential::from_env_in(&env(&[
        ("AZURE_TENANT_ID", AZURE_TENANT_ID.into()),
        ("AZURE_CLIENT_ID", AZURE_CLIENT_ID.into()),
        ("AZURE_CLIENT_SECRET", AZURE_CLIENT_SECRET.into()),
        ("AZURE_AUTHORITY_HOST", azure.url()),
    ]))
    .unwrap()
    .scope(ARM)
    .transport(transport);
    credential.fetch_token(None).await.unwrap();
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].contains("/oauth2/v2.0/token"), "{seen:?}");
}

#[cfg(unix)]
use authwire_testkit::fake_program;

#[cfg(unix)]
#[tokio::test]
async fn az_and_azd_give_a_developer_token_once_per_token() {
    use authwire_azure::{AzureCli, AzureDeveloperCli};
    let dir = TempDir::new("azure-dev");
    let calls = dir.path().join("calls");
    // The shapes az 2.6x and azd 1.x print.
    let az = fake_program(
        &dir,
        "az",
        &format!(
            "[ \"$1 $2 $3 $4 $5 $6\" = \"account get-access-token --output json --scope {ARM}\" ] || {{ echo \"unexpected: $*\" >&2; exit 9; }}\necho az >> {}\necho '{{\"accessToken\": \"eyJ.az.token\", \"expiresOn\": \"2099-01-01 00:00:00.000000\", \"expires_on\": 4070908800, \"subscription\": \"s\", \"tenant\": \"t\", \"tokenType\": \"Bearer\"}}'",
            calls.display()
        ),
    );
    let azd = fake_program(
        &dir,
        "azd",
        &format!(
            "[ \"$1 $2 $3 $4 $5 $6\" = \"auth token --output json --scope {ARM}\" ] || {{ echo \"unexpected: $*\" >&2; exit 9; }}\necho '{{\"token\": \"eyJ.azd.token\", \"expiresOn\": \"2099-01-01T00:00:00Z\"}}'"
        ),
    );
    let authorizer = Authorizer::new(AzureCli::new().program(&az).scope(ARM));
    for _ in 0..4 {
        assert_eq!(
            authorizer.authorization_header().await.unwrap(),
            "Bearer eyJ.az.token"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap().lines().count(),
        1,
        "az ran once"
    );
    let token = AzureDeveloperCli::new()
        .program(&azd)
        .scope(ARM)
        .fetch_token(None)
        .await
        .unwrap();
    assert_eq!(token.access_token().expose_secret(), "eyJ.azd.token");

    // Not logged in: az's own words, and `az login`.
    let failing = fake_program(
        &dir,
        "az-failing",
        "echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1",
    );
    let e = AzureCli::new()
        .program(&failing)
        .scope(ARM)
        .fetch_token(None)
        .await
        .unwrap_err();
    let text = authwire::error_chain(&e);
    assert!(
        text.contains("Please run 'az login'") && text.contains("run `az login`"),
        "{text}"
    );
    // Hung: killed, transient.
    let hung = fake_program(&dir, "azd-hung", "sleep 30");
    let e = AzureDeveloperCli::new()
        .program(&hung)
        .scope(ARM)
        .timeout(Duration::from_millis(300))
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    // A scope that would read as an option never reaches the command line.
    let e = AzureCli::new()
        .program(&az)
        .scope("--help")
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(authwire::error_chain(&e).contains("not valid"), "{e}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_default_chain_falls_back_to_az_then_azd_when_imds_does_not_answer() {
    let dir = TempDir::new("azure-chain");
    fake_program(
        &dir,
        "az",
        "echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1",
    );
    fake_program(
        &dir,
        "azd",
        "echo '{\"token\": \"eyJ.azd.chain\", \"expiresOn\": \"2099-01-01T00:00:00Z\"}'",
    );
    let chain = default_credential_in(&env(&[
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", closed_port()),
        ("PATH", dir.path().display().to_string()),
    ]))
    .unwrap()
    .scope(ARM);
    let token = chain.fetch_token(None).await.unwrap();
    assert_eq!(
        token.access_token().expose_secret(),
        "eyJ.azd.chain",
        "az failed, azd answered"
    );

    // Neither: one error that says each source's reason in order.
    let empty = TempDir::new("azure-chain-empty");
    let e = default_credential_in(&env(&[
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", closed_port()),
        ("PATH", empty.path().display().to_string()),
    ]))
    .unwrap()
    .scope(ARM)
    .fetch_token(None)
    .await
    .unwrap_err();
    assert!(
        authwire::error_chain(&e).contains("no managed identity endpoint answered"),
        "{e}"
    );
}

#[tokio::test]
async fn a_user_assigned_identity_by_object_id_or_resource_id_on_imds_and_app_service() {
    use authwire_testkit::{AZURE_USER_ASSIGNED_OBJECT_ID, AZURE_USER_ASSIGNED_RESOURCE_ID};
    let azure = AzureEmulator::start().await;
    let imds = || ManagedIdentity::new().imds_endpoint(azure.url()).scope(ARM);
    let app_service = || {
        ManagedIdentity::from_env_in(&env(&[
            ("IDENTITY_ENDPOINT", azure.identity_endpoint()),
            ("IDENTITY_HEADER", AZURE_IDENTITY_HEADER.into()),
        ]))
        .scope(ARM)
    };
    for (name, provider) in [
        ("imds object id", imds().object_id(AZURE_USER_ASSIGNED_OBJECT_ID)),
        (
            "imds resource id",
            imds().resource_id(AZURE_USER_ASSIGNED_RESOURCE_ID),
        ),
        (
            "app service object id",
            app_service().object_id(AZURE_USER_ASSIGNED_OBJECT_ID),
        ),
        (
            "app service resource id",
            app_service().resource_id(AZURE_USER_ASSIGNED_RESOURCE_ID),
        ),
    ] {
        let token = provider
            .fetch_token(None)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            azure.check_token(token.access_token().expose_secret()).as_deref(),
            Some(AZURE_USER_ASSIGNED_CLIENT_ID),
            "{name}: the user-assigned identity's token"
        );
    }
    // An object id that is not assigned: said so, naming the id kind.
    let e = imds()
        .object_id("11111111-2222-3333-4444-555555555555")
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(authwire::error_chain(&e).contains("with object id"), "{e}");
    // Different identities under different cache keys.
    assert_ne!(
        imds().object_id(AZURE_USER_ASSIGNED_OBJECT_ID).cache_key(),
        imds().resource_id(AZURE_USER_ASSIGNED_RESOURCE_ID).cache_key()
    );
}

#[tokio::test]
async fn entra_credentials_built_in_code_not_only_from_the_environment() {
    let azure = AzureEmulator::start().await;
    let secret = EnvironmentCredential::client_secret(AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)
        .unwrap()
        .authority_host(&azure.url())
        .unwrap()
        .scope(ARM);
    assert!(!format!("{secret:?}").contains(AZURE_CLIENT_SECRET));
    let token = secret.fetch_token(None).await.unwrap();
    assert!(azure.check_token(token.access_token().expose_secret()).is_some());

    let dir = TempDir::new("azure-wi-code");
    let file = dir.path().join("token");
    std::fs::write(&file, "eyJ.built-in-code.sig").unwrap();
    azure.set_federated_token("eyJ.built-in-code.sig");
    let workload = WorkloadIdentity::new(AZURE_TENANT_ID, AZURE_CLIENT_ID, &file)
        .unwrap()
        .authority_host(&azure.url())
        .unwrap()
        .scope(ARM);
    let token = workload.fetch_token(None).await.unwrap();
    assert!(azure.check_token(token.access_token().expose_secret()).is_some());
    assert_eq!(azure.last_form()["client_id"], AZURE_CLIENT_ID);

    // A tenant that is not a GUID or a domain is refused when built.
    assert!(EnvironmentCredential::client_secret("a/b", AZURE_CLIENT_ID, "s").is_err());
}

/// A self-signed certificate for the testkit's client key, made with the openssl tool, in
/// `dir`: its PEM path.
fn client_certificate(dir: &TempDir) -> std::path::PathBuf {
    let key = dir.path().join("key.pem");
    std::fs::write(&key, authwire_testkit::CLIENT_PRIVATE_KEY_PEM).unwrap();
    let cert = dir.path().join("cert.pem");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-key"])
        .arg(&key)
        .args(["-subj", "/CN=authwire-test", "-days", "2", "-out"])
        .arg(&cert)
        .output()
        .expect("the openssl tool is needed for this test");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    cert
}

/// `openssl pkcs12 -export` of the certificate and key, with `password`, in `dir` (`legacy`:
/// 3DES and RC2, as older Windows exports are; else OpenSSL 3's AES-256 and PBKDF2).
fn pfx(dir: &TempDir, cert: &std::path::Path, password: &str, legacy: bool) -> std::path::PathBuf {
    let out = dir.path().join(if legacy { "legacy.pfx" } else { "app.pfx" });
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["pkcs12", "-export", "-inkey"])
        .arg(dir.path().join("key.pem"))
        .arg("-in")
        .arg(cert)
        .args(["-passout", &format!("pass:{password}"), "-out"])
        .arg(&out);
    if legacy {
        cmd.arg("-legacy");
    }
    let made = cmd.output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    out
}

/// Issue 30: PFX certificates (AES and legacy 3DES/RC2), from code and from the environment,
/// and the chain in `x5c` when asked; a wrong password is a clear error that never shows it.
#[tokio::test]
async fn pfx_certificates_sign_assertions_and_send_their_chain_when_asked() {
    use authwire_azure::ClientCertificate;
    use base64::Engine as _;
    let azure = AzureEmulator::start().await;
    let dir = TempDir::new("azure-pfx");
    let cert = client_certificate(&dir);
    let cert_pem = std::fs::read_to_string(&cert).unwrap();
    azure.trust_certificate(&cert_pem);
    let leaf_der: String = cert_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let leaf = base64::engine::general_purpose::STANDARD
        .decode(leaf_der)
        .unwrap();

    for legacy in [false, true] {
        let file = pfx(&dir, &cert, "pfx-pass-1", legacy);
        let certificate = ClientCertificate::from_pkcs12_file(&file, "pfx-pass-1").unwrap();
        let credential = EnvironmentCredential::certificate(AZURE_TENANT_ID, AZURE_CLIENT_ID, certificate)
            .unwrap()
            .authority_host(&azure.url())
            .unwrap()
            .scope(ARM);
        let token = credential.fetch_token(None).await.unwrap();
        assert!(
            azure.check_token(token.access_token().expose_secret()).is_some(),
            "legacy: {legacy}"
        );
        assert_eq!(azure.last_x5c(), None, "no chain unless asked");
    }

    // From the environment, as azure-identity reads it, with the chain in x5c.
    let file = pfx(&dir, &cert, "pfx-pass-1", false);
    let vars = env(&[
        ("AZURE_TENANT_ID", AZURE_TENANT_ID.into()),
        ("AZURE_CLIENT_ID", AZURE_CLIENT_ID.into()),
        ("AZURE_CLIENT_CERTIFICATE_PATH", file.display().to_string()),
        ("AZURE_CLIENT_CERTIFICATE_PASSWORD", "pfx-pass-1".into()),
        ("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "true".into()),
        ("AZURE_AUTHORITY_HOST", azure.url()),
    ]);
    let credential = EnvironmentCredential::from_env_in(&vars).unwrap().scope(ARM);
    credential.fetch_token(None).await.unwrap();
    let x5c = azure.last_x5c().expect("the chain was sent");
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(&x5c[0]).unwrap(),
        leaf,
        "x5c starts with the certificate itself"
    );

    // A wrong password: one clear error, without the password tried.
    let e = ClientCertificate::from_pkcs12_file(&file, "wrong-password-7").unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{shown}");
    assert!(
        !shown.contains("wrong-password-7") && !shown.contains("pfx-pass-1"),
        "{shown}"
    );
}
