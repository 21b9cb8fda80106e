//! The cloud emulators as a process, for checking them with the vendors' own client libraries
//! (`cargo xtask interop` runs Google's google-auth and Microsoft's azure-identity against
//! them). Writes `emulators.json` and the credential files into the folder given as the first
//! argument, prints `ready`, and serves until stdin closes.

#![allow(missing_docs, clippy::print_stdout)]

use authwire_testkit::{AzureEmulator, GcpEmulator};
use tokio::io::AsyncReadExt as _;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: cloud_emulators DIR"));
    std::fs::create_dir_all(&dir).expect("the folder");
    let gcp = GcpEmulator::start().await;
    let azure = AzureEmulator::start().await;
    // Entra's token endpoint behind TLS: MSAL talks to an authority only over https.
    let entra = AzureEmulator::start_tls().await;
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        path.display().to_string()
    };
    let subject = write("subject-token", "eyJ.interop-subject-1.sig");
    let federated = write("azure-federated-token", "eyJ.interop-kube-token.sig");
    azure.set_federated_token("eyJ.interop-kube-token.sig");
    entra.set_federated_token("eyJ.interop-kube-token.sig");
    let ca = write(
        "entra-ca.pem",
        &String::from_utf8_lossy(entra.ca_pem().expect("a CA")),
    );
    // A certificate for the client key, and its thumbprint as Entra computes it.
    let key = write("client.key", authwire_testkit::CLIENT_PRIVATE_KEY_PEM);
    let cert = dir.join("client.crt");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-subj",
            "/CN=authwire-interop",
            "-days",
            "2",
            "-key",
            &key,
            "-out",
        ])
        .arg(&cert)
        .output()
        .expect("the openssl tool");
    assert!(made.status.success());
    entra.trust_certificate(&std::fs::read_to_string(&cert).expect("the certificate"));
    let bundle = write(
        "client-bundle.pem",
        &format!(
            "{}{}",
            std::fs::read_to_string(&cert).expect("the certificate"),
            authwire_testkit::CLIENT_PRIVATE_KEY_PEM
        ),
    );
    let config = serde_json::json!({
        "gcp": {
            "metadata_host": gcp.host(),
            "token_url": gcp.token_url(),
            "service_account_file": write("sa.json", &gcp.service_account_key_json()),
            "authorized_user_file": write("user.json", &gcp.authorized_user_json()),
            "external_account_file": write("wif.json", &gcp.external_account_json(&subject, None)),
            "external_account_impersonation_file": write(
                "wif-sa.json",
                &gcp.external_account_json(&subject, Some("deployer@authwire-test.iam.gserviceaccount.com")),
            ),
            "subject_token_file": subject,
            // AWS federation with credentials from the environment: google-auth accepts metadata
            // URLs only at AWS's link-local metadata address, so the file names none.
            "aws_external_account_file": write("aws.json", &{
                let mut doc: serde_json::Value = serde_json::from_str(&gcp.aws_external_account_json()).expect("json");
                let source = doc["credential_source"].as_object_mut().expect("credential_source");
                for field in ["region_url", "url", "imdsv2_session_token_url"] {
                    source.remove(field);
                }
                doc.to_string()
            }),
            "aws_access_key_id": authwire_testkit::AWS_ACCESS_KEY_ID,
            "aws_secret_access_key": authwire_testkit::AWS_SECRET_ACCESS_KEY,
            "aws_session_token": authwire_testkit::AWS_SESSION_TOKEN,
            "user_client_id": authwire_testkit::GCP_USER_CLIENT_ID,
            "sts_url": gcp.sts_url(),
            "wif_audience": authwire_testkit::GCP_WIF_AUDIENCE,
        },
        "azure": {
            "url": azure.url(),
            "identity_endpoint": azure.identity_endpoint(),
            "identity_header": authwire_testkit::AZURE_IDENTITY_HEADER,
            "tenant_id": authwire_testkit::AZURE_TENANT_ID,
            "client_id": authwire_testkit::AZURE_CLIENT_ID,
            "user_assigned_client_id": authwire_testkit::AZURE_USER_ASSIGNED_CLIENT_ID,
            "federated_token_file": federated,
            "entra_authority": entra.url(),
            "entra_ca_file": ca,
            "client_secret": authwire_testkit::AZURE_CLIENT_SECRET,
            "client_certificate_file": bundle,
        }
    });
    write("emulators.json", &config.to_string());
    println!("ready");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    drop((gcp, azure, entra));
}
