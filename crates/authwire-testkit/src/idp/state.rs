//! The state every endpoint shares: the configuration, issued refresh tokens, codes and device
//! grants, counters, DPoP replay memory. Endpoint modules read and change it through these
//! methods; none of them imports another endpoint module.

use super::config::{Client, Fault, IdTokenTamper, Settings};
use super::wire::KEY_ID;
use authwire::Clock;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How the person authenticated, carried from the login to the tokens it leads to (and to
/// their refreshes): the `acr` and `auth_time` of ID tokens, a login's `nonce`, and the claims
/// a token was asked with (a claims challenge's answer).
#[derive(Clone, Debug, Default)]
pub(crate) struct AuthContext {
    pub(crate) acr: Option<String>,
    pub(crate) auth_time: Option<u64>,
    pub(crate) nonce: Option<String>,
    pub(crate) claims: Option<String>,
}

/// A pushed authorization request (RFC 9126): the client that pushed it, its parameters, and
/// when its `request_uri` expires.
pub(super) type PushedRequest = (String, HashMap<String, String>, SystemTime);

pub(super) struct RefreshRecord {
    pub(super) context: AuthContext,
    pub(super) client_id: String,
    pub(super) subject: String,
    pub(super) scope: Option<String>,
    pub(super) family: u64,
    pub(super) used: bool,
    /// The DPoP key (thumbprint) the refresh token is bound to, if any.
    pub(super) jkt: Option<String>,
}

/// An authorization code waiting to be redeemed.
pub(super) struct CodeRecord {
    pub(super) context: AuthContext,
    /// The DPoP key the authorization request was bound to (`dpop_jkt`, RFC 9449 section 10).
    pub(super) dpop_jkt: Option<String>,
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) code_challenge: String,
    pub(super) scope: Option<String>,
    pub(super) expires: SystemTime,
}

pub(super) struct DeviceRecord {
    pub(super) client_id: String,
    pub(super) user_code: String,
    pub(super) scope: Option<String>,
    pub(super) approved: bool,
    pub(super) denied: bool,
    pub(super) polls: u32,
}

pub(crate) struct IdpState {
    pub(crate) clock: Arc<dyn Clock>,
    pub(super) issuer: String,
    pub(super) settings: Mutex<Settings>,
    pub(super) clients: Mutex<HashMap<String, Client>>,
    pub(super) refresh_tokens: Mutex<HashMap<String, RefreshRecord>>,
    pub(super) revoked_families: Mutex<HashSet<u64>>,
    pub(super) devices: Mutex<HashMap<String, DeviceRecord>>,
    pub(super) codes: Mutex<HashMap<String, CodeRecord>>,
    pub(super) authorization_requests: AtomicUsize,
    pub(super) revocations: AtomicUsize,
    pub(super) seen_jti: Mutex<HashSet<String>>,
    /// `jti`s of DPoP proofs seen at the token endpoint.
    pub(super) dpop_seen: Mutex<HashSet<String>>,
    /// DPoP-bound opaque access tokens and their key thumbprints.
    pub(super) opaque_cnf: Mutex<HashMap<String, String>>,
    pub(crate) dpop_proofs: AtomicUsize,
    /// Opaque access tokens issued, with their expiry and subject.
    pub(super) opaque: Mutex<HashMap<String, (SystemTime, String)>>,
    pub(super) faults: Mutex<VecDeque<Fault>>,
    pub(super) serial: AtomicU64,
    pub(super) token_requests: AtomicUsize,
    pub(super) tokens_issued: AtomicUsize,
    pub(super) discovery_requests: AtomicUsize,
    pub(super) jwks_requests: AtomicUsize,
    pub(super) errors: Mutex<HashMap<String, usize>>,
    pub(super) grants: Mutex<HashMap<String, usize>>,
    pub(super) auth_methods: Mutex<Vec<String>>,
    pub(super) last_form: Mutex<HashMap<String, String>>,
    pub(super) last_assertion: Mutex<Option<String>>,
    /// The `aud` of each verified `private_key_jwt` client assertion, as JSON.
    pub(super) client_assertion_audiences: Mutex<Vec<String>>,
    /// The authentication context of each access token issued (by token).
    pub(super) contexts: Mutex<HashMap<String, AuthContext>>,
    /// Pushed authorization requests (RFC 9126) by `request_uri`: client, parameters, expiry.
    pub(super) pushed: Mutex<HashMap<String, PushedRequest>>,
    pub(super) par_requests: AtomicUsize,
    /// The CA whose client certificates `tls_client_auth` accepts (RFC 8705 section 2.1).
    pub(super) client_ca: Option<Vec<u8>>,
    /// Opaque access tokens bound to a certificate, by token: the `x5t#S256`.
    pub(super) cert_bound: Mutex<HashMap<String, String>>,
    /// The parameters of the last authorization request (after a pushed one was resolved).
    pub(super) last_authorization: Mutex<HashMap<String, String>>,
    pub(super) signing_key: EncodingKey,
    pub(crate) verifying_key: DecodingKey,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl IdpState {
    pub(super) fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::SeqCst)
    }

    pub(crate) fn now_secs(&self) -> u64 {
        secs(self.clock.now())
    }

    pub(super) fn new_refresh_token(
        &self,
        client_id: &str,
        subject: &str,
        scope: Option<String>,
        family: Option<u64>,
    ) -> String {
        self.new_refresh_token_in(client_id, subject, scope, family, AuthContext::default())
    }

    /// A refresh token that keeps `context` (its nonce dropped: a refresh has none).
    pub(super) fn new_refresh_token_in(
        &self,
        client_id: &str,
        subject: &str,
        scope: Option<String>,
        family: Option<u64>,
        mut context: AuthContext,
    ) -> String {
        context.nonce = None;
        let n = self.next_serial();
        let marker = lock(&self.settings).secret_marker.clone().unwrap_or_default();
        let token = format!("rt-{marker}{n}-{}", random_hex());
        lock(&self.refresh_tokens).insert(
            token.clone(),
            RefreshRecord {
                context,
                client_id: client_id.to_owned(),
                subject: subject.to_owned(),
                scope,
                family: family.unwrap_or(n),
                used: false,
                jkt: None,
            },
        );
        token
    }

    pub(super) fn jwt_access_token(
        &self,
        subject: &str,
        client_id: &str,
        scope: Option<&str>,
        audience: Option<&str>,
        lifetime: Duration,
    ) -> String {
        let now = self.now_secs();
        // `exp` is whole seconds: round up, so that the token lives at least `expires_in`.
        let exp = secs(self.clock.now() + lifetime) + 1;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.into());
        let claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience.unwrap_or("testkit-api"),
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": format!("at-{}", self.next_serial()),
        });
        jsonwebtoken::encode(&header, &claims, &self.signing_key).expect("sign with the test key")
    }

    /// The access token bound to the DPoP key `jkt` (`cnf.jkt`).
    pub(super) fn bind_access_token(&self, token: &str, jkt: &str) -> String {
        self.bind(token, "jkt", jkt, &self.opaque_cnf)
    }

    /// The access token bound to the certificate `x5t` (`cnf.x5t#S256`, RFC 8705 section 3).
    pub(super) fn bind_to_certificate(&self, token: &str, x5t: &str) -> String {
        self.bind(token, "x5t#S256", x5t, &self.cert_bound)
    }

    /// `token` bound by `cnf.<member>` = `value`: a JWT re-signed with it, or an opaque token
    /// recorded as bound in `opaque`. The authentication context moves with it.
    fn bind(
        &self,
        token: &str,
        member: &str,
        value: &str,
        opaque: &Mutex<HashMap<String, String>>,
    ) -> String {
        let bound = match self.decode_unchecked(token) {
            Some(mut claims) => {
                claims["cnf"][member] = json!(value);
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(KEY_ID.into());
                jsonwebtoken::encode(&header, &claims, &self.signing_key).expect("sign with the test key")
            }
            None => {
                lock(opaque).insert(token.to_owned(), value.to_owned());
                token.to_owned()
            }
        };
        let context = lock(&self.contexts).get(token).cloned();
        if let Some(c) = context {
            lock(&self.contexts).insert(bound.clone(), c);
        }
        bound
    }

    /// What `cnf.<member>` binds `token` to, if anything (opaque tokens: `opaque`). Call after
    /// [`check_access_token`](Self::check_access_token) succeeded.
    fn binding(&self, token: &str, member: &str, opaque: &Mutex<HashMap<String, String>>) -> Option<String> {
        if let Some(v) = lock(opaque).get(token) {
            return Some(v.clone());
        }
        self.decode_unchecked(token)?["cnf"][member]
            .as_str()
            .map(str::to_owned)
    }

    /// The claims of a JWT this server signed, whatever its expiry or audience.
    fn decode_unchecked(&self, token: &str) -> Option<Value> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        jsonwebtoken::decode::<Value>(token, &self.verifying_key, &validation)
            .ok()
            .map(|d| d.claims)
    }

    /// The certificate thumbprint an access token is bound to (`cnf.x5t#S256`), if any.
    pub(crate) fn access_token_x5t(&self, token: &str) -> Option<String> {
        self.binding(token, "x5t#S256", &self.cert_bound)
    }

    /// The DPoP key thumbprint an access token is bound to (`cnf.jkt`), if any. Call after
    /// [`check_access_token`](Self::check_access_token) succeeded.
    pub(crate) fn access_token_jkt(&self, token: &str) -> Option<String> {
        self.binding(token, "jkt", &self.opaque_cnf)
    }

    /// Whether `token` is a valid access token issued here, and its subject.
    pub(crate) fn check_access_token(&self, token: &str) -> Result<String, &'static str> {
        if let Some((exp, sub)) = lock(&self.opaque).get(token) {
            return if self.clock.now() < *exp {
                Ok(sub.clone())
            } else {
                Err("the access token expired")
            };
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false; // checked against the server's clock below
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Value>(token, &self.verifying_key, &validation)
            .map_err(|_| "the access token is not one this server issued")?;
        let exp = data.claims["exp"].as_u64().ok_or("the access token has no exp")?;
        if self.now_secs() >= exp {
            return Err("the access token expired");
        }
        Ok(data.claims["sub"].as_str().unwrap_or_default().to_owned())
    }

    pub(super) fn issue(
        &self,
        client_id: &str,
        subject: &str,
        scope: Option<String>,
        audience: Option<&str>,
        refresh: Option<String>,
    ) -> Value {
        self.issue_in(
            client_id,
            subject,
            scope,
            audience,
            refresh,
            &AuthContext::default(),
        )
    }

    /// [`issue`](Self::issue) within an authentication context.
    pub(super) fn issue_in(
        &self,
        client_id: &str,
        subject: &str,
        scope: Option<String>,
        audience: Option<&str>,
        refresh: Option<String>,
        context: &AuthContext,
    ) -> Value {
        let settings = lock(&self.settings).clone();
        let access = if settings.jwt_access_tokens {
            self.jwt_access_token(
                subject,
                client_id,
                scope.as_deref(),
                audience,
                settings.token_lifetime,
            )
        } else {
            let marker = settings.secret_marker.clone().unwrap_or_default();
            let t = format!("opaque-{marker}{}-{}", self.next_serial(), random_hex());
            lock(&self.opaque).insert(
                t.clone(),
                (self.clock.now() + settings.token_lifetime, subject.to_owned()),
            );
            t
        };
        self.tokens_issued.fetch_add(1, Ordering::SeqCst);
        lock(&self.contexts).insert(access.clone(), context.clone());
        let mut body = json!({"access_token": access, "token_type": "Bearer"});
        if settings.send_expires_in {
            body["expires_in"] = json!(settings.token_lifetime.as_secs());
        }
        // OpenID Connect: an ID token when `openid` was asked for.
        if scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|x| x == "openid"))
        {
            body["id_token"] = json!(self.id_token_in(subject, client_id, settings.token_lifetime, context));
        }
        if let Some(s) = scope {
            body["scope"] = json!(s);
        }
        if let Some(r) = refresh {
            body["refresh_token"] = json!(r);
        }
        body
    }

    /// An OpenID Connect ID token (RS256) for `subject`, audience `client_id` with the login's `nonce`, `acr` and `auth_time` (OpenID Connect Core
    /// section 2), and `azp`; [`crate::Settings::id_token_tamper`] spoils one claim on purpose.
    pub(super) fn id_token_in(
        &self,
        subject: &str,
        client_id: &str,
        lifetime: Duration,
        context: &AuthContext,
    ) -> String {
        let now = self.now_secs();
        let mut claims = json!({
            "iss": self.issuer, "sub": subject, "aud": client_id, "azp": client_id,
            "iat": now, "exp": now + lifetime.as_secs(),
            "jti": format!("id-{}", self.next_serial()),
        });
        if let Some(n) = &context.nonce {
            claims["nonce"] = json!(n);
        }
        if let Some(a) = &context.acr {
            claims["acr"] = json!(a);
        }
        if let Some(t) = context.auth_time {
            claims["auth_time"] = json!(t);
        }
        let tamper = lock(&self.settings).id_token_tamper;
        let mut signing_key = None;
        match tamper {
            Some(IdTokenTamper::Nonce) => claims["nonce"] = json!("not-the-nonce-that-was-sent"),
            Some(IdTokenTamper::Audience) => claims["aud"] = json!("another-client"),
            Some(IdTokenTamper::Issuer) => claims["iss"] = json!("https://issuer.invalid"),
            Some(IdTokenTamper::Expired) => {
                claims["iat"] = json!(now.saturating_sub(7200));
                claims["exp"] = json!(now.saturating_sub(3600));
            }
            Some(IdTokenTamper::Signature) => {
                signing_key = Some(
                    EncodingKey::from_rsa_pem(crate::CLIENT_PRIVATE_KEY_PEM.as_bytes()).expect("test key"),
                );
            }
            None => {}
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.into());
        jsonwebtoken::encode(
            &header,
            &claims,
            signing_key.as_ref().unwrap_or(&self.signing_key),
        )
        .expect("sign an ID token")
    }
}

pub(super) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn random_hex() -> String {
    authwire::random::hex(8)
}

impl IdpState {
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    pub(crate) fn client(&self, id: &str) -> Option<Client> {
        lock(&self.clients).get(id).cloned()
    }

    pub(crate) fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    pub(crate) fn count_authorization_request(&self) {
        self.authorization_requests.fetch_add(1, Ordering::SeqCst);
    }

    /// Keep a new authorization code for ten minutes.
    pub(crate) fn new_code(
        &self,
        client_id: &str,
        redirect_uri: &str,
        code_challenge: &str,
        scope: Option<String>,
        context: AuthContext,
        dpop_jkt: Option<String>,
    ) -> String {
        let code = format!("code-{}-{}", self.next_serial(), random_hex());
        lock(&self.codes).insert(
            code.clone(),
            CodeRecord {
                context,
                dpop_jkt,
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                code_challenge: code_challenge.to_owned(),
                scope,
                expires: self.clock.now() + Duration::from_secs(600),
            },
        );
        code
    }

    /// RFC 7009 section 2.1: revoke a refresh token (and its family) or an opaque access token
    /// of this client. Returns whether something was revoked.
    pub(crate) fn revoke(&self, client_id: &str, token: &str) -> bool {
        let family = lock(&self.refresh_tokens)
            .get(token)
            .filter(|r| r.client_id == client_id)
            .map(|r| r.family);
        let revoked = match family {
            Some(f) => {
                lock(&self.revoked_families).insert(f);
                true
            }
            None => lock(&self.opaque).remove(token).is_some(),
        };
        if revoked {
            self.revocations.fetch_add(1, Ordering::SeqCst);
        }
        revoked
    }
}

impl IdpState {
    /// The authentication context of an access token issued here.
    pub(crate) fn context_of(&self, access_token: &str) -> Option<AuthContext> {
        lock(&self.contexts).get(access_token).cloned()
    }
}
