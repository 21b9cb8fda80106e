//! OpenID Connect ID tokens checked before they are kept (OpenID Connect Core 1.0 section
//! 3.1.3.7 for a login's, 12.2 for a refresh's), and the claims requests that client
//! capabilities and claims challenges add to token requests (section 5.5).

use crate::discovery::Endpoints;
use crate::provider::Inner;
use authwire::{ProviderError, Token};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

/// What a login expects of its ID token beside the signature, `iss`, `aud`, `azp`, `exp`, `iat`.
#[derive(Default)]
pub(crate) struct Expect<'a> {
    /// The login's `nonce` (none for a refresh).
    pub(crate) nonce: Option<&'a str>,
    /// The login's `max_age`: `auth_time` must be there and recent enough.
    pub(crate) max_age: Option<u64>,
    /// A refresh's ID token must name the subject of the one it replaces (section 12.2).
    pub(crate) subject: Option<String>,
}

impl Inner {
    /// Check the token's ID token, if it has one: signed by a key of the issuer's JWKS, `iss`
    /// the issuer, `aud` this client (and `azp`, when present or needed, this client), `exp`
    /// in the future, `iat` present, and what `expect` adds. A client with a fixed token URL
    /// and no issuer cannot know the keys: its ID tokens are kept unchecked (and documented
    /// so). Failures are permanent errors that name the check, never the token.
    pub(crate) async fn check_id_token(
        &self,
        token: &Token,
        expect: &Expect<'_>,
    ) -> Result<(), ProviderError> {
        let Some(id_token) = token.id_token() else {
            return Ok(());
        };
        let Endpoints::Discovered { .. } = &self.endpoints else {
            return Ok(());
        };
        let verifier = self
            .id_token_verifier
            .get_or_try_init(|| async {
                let m = self.metadata().await?;
                let jwks = m.jwks_uri.as_ref().ok_or_else(|| {
                    ProviderError::invalid_response(
                        None,
                        "the issuer publishes no jwks_uri, so its ID tokens cannot be checked",
                    )
                })?;
                authwire_jwt::Verifier::builder()
                    .jwks_url(jwks.as_str())
                    .issuer(m.issuer.clone())
                    .audience(self.client_id.clone())
                    .clock(self.clock.clone())
                    .transport(self.transport.clone())
                    .allow_insecure_http(self.allow_insecure_http)
                    .build()
                    .map_err(|e| ProviderError::permanent(format!("cannot check ID tokens: {e}")))
            })
            .await?;
        let refused = |why: String| {
            ProviderError::invalid_response(Some(200), format!("the ID token was refused: {why}"))
        };
        let claims = verifier
            .verify(id_token.expose_secret())
            .await
            .map_err(|e| refused(e.to_string()))?;
        let all = claims.all();
        // Section 3.1.3.7 items 4 and 5: several audiences need an azp, and an azp must be us.
        let audiences = claims.audience();
        match all.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.client_id => {
                return Err(refused(format!("azp names another client ({azp:?})")));
            }
            None if audiences.len() > 1 => return Err(refused("several audiences and no azp".into())),
            _ => {}
        }
        if claims.issued_at().is_none() {
            return Err(refused("no iat".into()));
        }
        match (expect.nonce, all.get("nonce").and_then(Value::as_str)) {
            (Some(sent), Some(got)) if sent == got => {}
            (Some(_), _) => return Err(refused("its nonce is not the one this login sent".into())),
            (None, _) => {}
        }
        if let Some(max_age) = expect.max_age {
            let auth_time = all.get("auth_time").and_then(Value::as_u64).ok_or_else(|| {
                refused("max_age was asked for and there is no auth_time (section 3.1.2.1)".into())
            })?;
            let now = authwire::Clock::now(&*self.clock)
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // The verifier's leeway (30 s) for clocks that differ.
            if auth_time.saturating_add(max_age).saturating_add(30) < now {
                return Err(refused(format!(
                    "the person authenticated longer than max_age ({max_age} s) ago"
                )));
            }
        }
        if let (Some(before), Some(now)) = (&expect.subject, claims.subject())
            && before != now
        {
            return Err(refused(
                "a refresh's ID token names another subject (section 12.2)".into(),
            ));
        }
        Ok(())
    }

    /// The subject of a token's ID token, read without checking (it was checked when kept).
    pub(crate) fn id_token_subject(token: Option<&Token>) -> Option<String> {
        let id = token?.id_token()?;
        authwire_jwt::inspect(id.expose_secret())
            .ok()
            .and_then(|c| c.subject().map(str::to_owned))
    }

    /// The claims request for a token request: the client's capabilities (`xms_cc`) and a
    /// challenge's claims, merged member by member; `None` when there is neither.
    pub(crate) fn claims_request(&self, challenge: Option<&str>) -> Result<Option<String>, ProviderError> {
        let mut request = match challenge {
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(ProviderError::permanent(
                        "the claims challenge is not a JSON object",
                    ));
                }
            },
            None if self.client_capabilities.is_empty() => return Ok(None),
            None => Map::new(),
        };
        if !self.client_capabilities.is_empty() {
            let access = request
                .entry("access_token")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(access) = access {
                access.insert("xms_cc".into(), json!({ "values": self.client_capabilities }));
            }
        }
        Ok(Some(Value::Object(request).to_string()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn capabilities_and_a_challenge_merge_into_one_claims_request() {
        let p = crate::OAuth2Provider::builder()
            .token_url("https://idp.example/token")
            .client_id("c")
            .client_secret("s")
            .client_capabilities(["cp1"])
            .build()
            .unwrap();
        let merged = p
            .inner()
            .claims_request(Some(r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#))
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(v["access_token"]["nbf"]["value"], "1");
        assert_eq!(v["access_token"]["xms_cc"]["values"][0], "cp1");
        let only = p.inner().claims_request(None).unwrap().unwrap();
        assert_eq!(only, r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#);
        assert!(p.inner().claims_request(Some("[1]")).is_err());
    }
}
