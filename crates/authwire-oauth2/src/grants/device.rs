//! The device authorization grant (RFC 8628): ask for a device code, show the person where to
//! enter it, poll until they approve. Every number the server sends is bounded, so that a
//! hostile or broken server cannot keep a login waiting for days or overflow the clock.

use super::DevicePrompt;
use crate::form::Form;
use crate::provider::Inner;
use authwire::{ProviderError, Token};
use secrecy::SecretString;
use serde_json::Value;
use std::time::Duration;

const GRANT_TYPE_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

impl Inner {
    /// RFC 8628: device authorization request, user prompt, polling.
    pub(crate) async fn device_flow(
        &self,
        prompt: &(dyn Fn(&DevicePrompt) + Send + Sync),
    ) -> Result<Token, ProviderError> {
        let endpoint = self.device_endpoint().await?;
        let mut form = Form::new();
        if !self.scopes.is_empty() {
            form.push("scope", &self.scopes.join(" "));
        }
        let (status, doc) = self
            .post(&endpoint, form, false, |status, retry_after, body| {
                let doc = self.json_answer(status, retry_after, body, || {
                    "device authorization response".into()
                })?;
                Ok((status, doc))
            })
            .await?;
        let text = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_owned);
        let device_code = text("device_code").ok_or_else(|| {
            ProviderError::invalid_response(Some(status), "device authorization response has no device_code")
        })?;
        let user_code = text("user_code").ok_or_else(|| {
            ProviderError::invalid_response(Some(status), "device authorization response has no user_code")
        })?;
        let verification_uri = text("verification_uri")
            .or_else(|| text("verification_url")) // an older draft's name, still served by some
            .ok_or_else(|| {
                ProviderError::invalid_response(
                    Some(status),
                    "device authorization response has no verification_uri",
                )
            })?;
        let (expires_in, mut interval) = device_timing(&doc);
        prompt(&DevicePrompt {
            user_code,
            verification_uri,
            verification_uri_complete: text("verification_uri_complete"),
            expires_in,
        });
        let deadline = self.clock.now() + expires_in;
        let device_code = SecretString::from(device_code);
        loop {
            self.clock.sleep(interval).await;
            if self.clock.now() >= deadline {
                return Err(ProviderError::rejected(
                    None,
                    "expired_token",
                    Some("the device code expired before the user approved it".into()),
                ));
            }
            let mut form = Form::new();
            form.push("grant_type", GRANT_TYPE_DEVICE_CODE);
            form.push_secret("device_code", device_code.clone());
            match self.token_request(form).await {
                Ok(token) => {
                    // The device flow has no nonce; the rest of the ID token is checked
                    // (OpenID Connect Core 3.1.3.7) before it is kept.
                    self.check_id_token(&token, &crate::oidc::Expect::default())
                        .await?;
                    return Ok(crate::provider::person_login(token, "device_code"));
                }
                Err(e) => match e.error_code() {
                    Some("authorization_pending") => continue,
                    // RFC 8628 section 3.5: slow down by 5 seconds for this and later polls.
                    Some("slow_down") => {
                        interval = (interval + Duration::from_secs(5)).min(MAX_DEVICE_POLL_INTERVAL);
                    }
                    _ => return Err(e),
                },
            }
        }
    }
}

/// The longest device code lifetime honoured (RFC 8628 `expires_in`); longer ones are cut, so
/// that a server cannot keep a login waiting for days.
pub const MAX_DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest wait between two device flow polls (`interval`, and after `slow_down`).
pub const MAX_DEVICE_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// A device authorization's lifetime and poll interval, bounded: a hostile or broken server
/// must not make us wait for hours between polls or overflow the clock.
fn device_timing(doc: &Value) -> (Duration, Duration) {
    let seconds = |name: &str, default: u64| doc.get(name).and_then(Value::as_u64).unwrap_or(default);
    let expires_in = Duration::from_secs(seconds("expires_in", 600)).min(MAX_DEVICE_CODE_LIFETIME);
    let interval =
        Duration::from_secs(seconds("interval", 5)).clamp(Duration::from_secs(1), MAX_DEVICE_POLL_INTERVAL);
    (expires_in, interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_timing_is_bounded() {
        // Issue 12, item 12: a huge expires_in panicked (clock overflow), a huge interval hung.
        let doc = serde_json::json!({"expires_in": u64::MAX, "interval": u64::MAX});
        assert_eq!(
            device_timing(&doc),
            (MAX_DEVICE_CODE_LIFETIME, MAX_DEVICE_POLL_INTERVAL)
        );
        let doc = serde_json::json!({"expires_in": 900, "interval": 0});
        assert_eq!(
            device_timing(&doc),
            (Duration::from_secs(900), Duration::from_secs(1))
        );
        let doc = serde_json::json!({});
        assert_eq!(
            device_timing(&doc),
            (Duration::from_secs(600), Duration::from_secs(5))
        );
    }
}
