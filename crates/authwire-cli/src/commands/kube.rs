//! `authwire kube`: kubectl's exec credential plugin (client-go's `ExecCredential`).

use super::helper::{current, needs_login};
use crate::args::{Credentials, KubeArgs};
use crate::error::{CliError, exit};
use crate::interactive::{self, LoginOptions};
use crate::output::{now, out, rfc3339};
use crate::settings::{self, Settings};
use authwire::Token;
use authwire::secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const KUBE_V1: &str = "client.authentication.k8s.io/v1";
const KUBE_V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// What `KUBERNETES_EXEC_INFO` says: the API version to answer in, and whether a person is there.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ExecInfo {
    pub(crate) api_version: String,
    pub(crate) interactive: bool,
}

/// Read `KUBERNETES_EXEC_INFO`.
pub(crate) fn exec_info(raw: Option<&str>) -> Result<ExecInfo, CliError> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        // client-go always sets it for v1; without it, answer v1 and never prompt.
        return Ok(ExecInfo {
            api_version: KUBE_V1.into(),
            interactive: false,
        });
    };
    let doc: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| CliError::config(format!("KUBERNETES_EXEC_INFO is not JSON: {e}")))?;
    let api_version = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or(KUBE_V1);
    if api_version != KUBE_V1 && api_version != KUBE_V1BETA1 {
        return Err(CliError::config(format!(
            "KUBERNETES_EXEC_INFO asks for apiVersion {api_version:?}; authwire speaks {KUBE_V1} and {KUBE_V1BETA1}"
        )));
    }
    let interactive = doc
        .pointer("/spec/interactive")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    Ok(ExecInfo {
        api_version: api_version.to_owned(),
        interactive,
    })
}

/// The `ExecCredential` kubectl reads: the token and when it expires (RFC 3339), so kubectl
/// caches it until then and asks again after.
pub(crate) fn exec_credential(info: &ExecInfo, token: &str, expires: Option<SystemTime>) -> String {
    let mut status = serde_json::json!({ "token": token });
    if let Some(at) = expires {
        status["expirationTimestamp"] = serde_json::json!(rfc3339(at));
    }
    let doc = serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": info.api_version,
        "spec": { "interactive": info.interactive },
        "status": status,
    });
    format!("{doc}\n")
}

/// Run `authwire kube`.
pub(crate) async fn exec(credentials: &Credentials, args: KubeArgs) -> Result<u8, CliError> {
    let info = exec_info(std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref())?;
    if credentials.dpop {
        return Err(CliError::config(
            "kubectl cannot send DPoP proofs: drop --dpop for `authwire kube`",
        ));
    }
    let s = settings::resolve(credentials).await?;
    let token = match current(&s).await {
        Ok(t) => t,
        Err(e) if needs_login(&e) && info.interactive => {
            eprintln!("authwire: no valid login for this cluster's identity provider; logging in");
            interactive::log_in(&s, &LoginOptions::default()).await?;
            current(&s).await.map_err(|e| CliError::auth(&e, &s))?
        }
        Err(e) => {
            let mut error = CliError::auth(&e, &s);
            if needs_login(&e) {
                error
                    .message
                    .push_str(" (in a terminal: kubectl runs this plugin without one)");
            }
            return Err(error);
        }
    };
    let (secret, expires) = if args.id_token {
        fresh_id_token(&s, token).await?
    } else {
        (
            token.access_token().expose_secret().to_owned(),
            token.expires_at(),
        )
    };
    out(&exec_credential(&info, &secret, expires))
}

/// The ID token and its `exp`: refreshed first when the cached one has expired or is about to
/// (kubectl would send it until the time we print).
async fn fresh_id_token(s: &Settings, token: Arc<Token>) -> Result<(String, Option<SystemTime>), CliError> {
    let read = |t: &Token| -> Result<(String, Option<SystemTime>), CliError> {
        let id = t.id_token().ok_or_else(|| {
            CliError::config(
                "the identity provider returned no ID token: add --scope openid (and log in again)",
            )
        })?;
        let exp = authwire_jwt::inspect(id.expose_secret())
            .map_err(|e| CliError::config(format!("the ID token cannot be read: {e}")))?
            .expires_at();
        Ok((id.expose_secret().to_owned(), exp))
    };
    let (id, exp) = read(&token)?;
    if exp.is_none_or(|e| e > now() + Duration::from_secs(60)) {
        return Ok((id, exp));
    }
    let authorizer = s.authorizer();
    let cached = authorizer.token().await.map_err(|e| CliError::auth(&e, s))?;
    authorizer.invalidate_token(&cached);
    let renewed = authorizer.token().await.map_err(|e| CliError::auth(&e, s))?;
    let (id, exp) = read(&renewed)?;
    if exp.is_some_and(|e| e <= now()) {
        return Err(CliError {
            message:
                "the identity provider did not issue a new ID token on refresh: run `authwire login` again"
                    .into(),
            code: exit::AUTH,
        });
    }
    Ok((id, exp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn exec_info_picks_the_version_and_interactivity() {
        let v1beta1 = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"interactive":true}}"#;
        assert_eq!(
            exec_info(Some(v1beta1))
                .ok()
                .map(|i| (i.api_version, i.interactive)),
            Some((KUBE_V1BETA1.to_owned(), true))
        );
        let none = exec_info(None).ok().unwrap();
        assert_eq!((none.api_version.as_str(), none.interactive), (KUBE_V1, false));
        assert!(exec_info(Some(r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#)).is_err());
        assert!(exec_info(Some("{")).is_err());
    }

    #[test]
    fn exec_credentials_have_the_shape_client_go_reads() {
        let info = ExecInfo {
            api_version: KUBE_V1.into(),
            interactive: false,
        };
        let doc: serde_json::Value = serde_json::from_str(&exec_credential(
            &info,
            "tok",
            Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
        ))
        .unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "kind": "ExecCredential",
                "apiVersion": "client.authentication.k8s.io/v1",
                "spec": {"interactive": false},
                "status": {"token": "tok", "expirationTimestamp": "2030-03-17T17:46:40Z"}
            })
        );
    }
}
