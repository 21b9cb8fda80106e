//! Where the CLI's credentials come from: flags, a profile in the config file, the environment.
//! The client secret never comes from argv (other users can read it there).

use crate::args::{AuthMethod, CacheKind, Cloud, Credentials};
use crate::error::CliError;
use authwire::{Authorizer, TokenStore};
use authwire_file::FileStore;
use authwire_keyring::KeyringStore;
use authwire_oauth2::{ClientAuthMethod, DpopKey, Grant, OAuth2Provider, PrivateKey, Transport};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The environment variable that holds the client secret.
pub(crate) const SECRET_ENV: &str = "AUTHWIRE_CLIENT_SECRET";

/// `config.toml` in the [config folder](config_dir).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
    /// `[[proxy.route]]` tables, for `authwire proxy`.
    #[serde(default)]
    proxy: ProxySection,
}

/// The `[proxy]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProxySection {
    #[serde(default)]
    route: Vec<RouteConfig>,
}

/// One `[[proxy.route]]`: where programs connect, where requests go, whose credentials.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    pub(crate) listen: String,
    pub(crate) upstream: String,
    pub(crate) profile: String,
    #[serde(default)]
    pub(crate) allow_remote: bool,
}

/// One `[profiles.NAME]` table; every field is optional and a flag overrides it.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Profile {
    issuer: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    #[serde(default)]
    scope: Vec<String>,
    audience: Option<String>,
    #[serde(default)]
    resource: Vec<String>,
    auth_method: Option<String>,
    private_key_file: Option<PathBuf>,
    cache: Option<String>,
    #[serde(default)]
    allow_insecure_http: bool,
    #[serde(default)]
    dpop: bool,
    #[serde(default)]
    par: bool,
    authorization_url: Option<String>,
    revocation_url: Option<String>,
    /// Hosts `git-credential` answers for.
    #[serde(default)]
    hosts: Vec<String>,
    /// `gcp` or `azure`: the platform's credentials instead of an OAuth2 client.
    credential: Option<String>,
    /// The username the git and docker helpers send with the token.
    username: Option<String>,
    /// `--proxy`, `--no-proxy`, `--cacert`, `--cert`, `--key`.
    proxy: Option<String>,
    #[serde(default)]
    no_proxy: bool,
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// `--redis-url`, for `cache = "redis"`.
    redis_url: Option<String>,
    /// `--assertion-file`, `--assertion`.
    assertion_file: Option<PathBuf>,
    assertion: Option<String>,
}

/// The token store behind `--cache`, and how to name it to the user.
pub(crate) type ChosenStore = (Arc<dyn TokenStore>, String);

/// The resolved configuration.
pub(crate) struct Settings {
    /// The OAuth2 client; `None` with `--credential gcp|azure`.
    pub(crate) oauth2: Option<OAuth2Provider>,
    /// The identity provider tokens come from: the OAuth2 client, or the cloud's credentials.
    pub(crate) provider: Arc<dyn authwire::IdentityProvider>,
    pub(crate) store: Option<ChosenStore>,
    pub(crate) allow_insecure_http: bool,
    pub(crate) endpoint: String,
    pub(crate) client_id: String,
    /// The DPoP key tokens are bound to, with `--dpop`.
    pub(crate) dpop_key: Option<DpopKey>,
    /// The profile's hosts, for `git-credential`.
    pub(crate) hosts: Vec<String>,
    /// The profile's username, for the git and docker helpers.
    pub(crate) username: Option<String>,
    /// `authwire login ...` with the flags in use, for messages that ask a person to log in.
    pub(crate) login_command: String,
    /// How requests reach the network: the identity provider's, and `curl`'s to the API.
    pub(crate) transport: Transport,
}

/// The client assertion from `--assertion-file PATH` or `--assertion github-actions[=AUDIENCE]`
/// (the audience defaults to the issuer, else the token URL).
fn assertion_source(
    file: Option<PathBuf>,
    source: Option<String>,
    issuer: Option<&str>,
    token_url: Option<&str>,
) -> Result<Option<authwire_oauth2::AssertionSource>, CliError> {
    match (file, source) {
        (Some(_), Some(_)) => Err(CliError::config("--assertion-file and --assertion: give one")),
        (Some(path), None) => Ok(Some(authwire_oauth2::AssertionSource::file(path))),
        (None, Some(source)) => {
            let (kind, audience) = match source.split_once('=') {
                Some((kind, audience)) => (kind, Some(audience.to_owned())),
                None => (source.as_str(), None),
            };
            if kind != "github-actions" {
                return Err(CliError::config(format!(
                    "--assertion {kind:?} is not known: use github-actions[=AUDIENCE], or --assertion-file PATH"
                )));
            }
            let audience = audience
                .or_else(|| issuer.map(str::to_owned))
                .or_else(|| token_url.map(str::to_owned))
                .ok_or_else(|| {
                    CliError::config("--assertion github-actions needs an audience: github-actions=AUDIENCE")
                })?;
            Ok(Some(authwire_oauth2::AssertionSource::github_actions(audience)))
        }
        (None, None) => Ok(None),
    }
}

/// The transport from `--proxy`, `--no-proxy`, `--cacert`, `--cert`, `--key` (or the profile's
/// `proxy`, `no_proxy`, `cacert`, `cert`, `key`); errors name the flag.
fn transport(c: &Credentials, profile: &Profile) -> Result<Transport, CliError> {
    let mut t = Transport::new();
    if let Some(proxy) = c.proxy.as_deref().or(profile.proxy.as_deref()) {
        t = t
            .proxy(proxy)
            .map_err(|e| CliError::config(format!("--proxy: {e}")))?;
    }
    if c.no_proxy || profile.no_proxy {
        t = t.no_proxy(true);
    }
    let read = |flag: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| CliError::config(format!("--{flag} {}: cannot read it: {e}", path.display())))
    };
    if let Some(path) = c.cacert.as_deref().or(profile.cacert.as_deref()) {
        t = t
            .root_certificates_pem(&read("cacert", path)?)
            .map_err(|e| CliError::config(format!("--cacert {}: {e}", path.display())))?;
    }
    let cert = c.cert.as_deref().or(profile.cert.as_deref());
    let key = c.key.as_deref().or(profile.key.as_deref());
    match (cert, key) {
        (Some(cert), key) => {
            let chain = read("cert", cert)?;
            // Without --key, the key is in the certificate's file, as curl reads it.
            let key_pem = match key {
                Some(path) => zeroize::Zeroizing::new(read("key", path)?),
                None => zeroize::Zeroizing::new(chain.clone()),
            };
            let shown = key.unwrap_or(cert).display().to_string();
            t = t
                .identity_pem(&chain, &key_pem)
                .map_err(|e| CliError::config(format!("--cert {} / --key {shown}: {e}", cert.display())))?;
        }
        (None, Some(_)) => {
            return Err(CliError::config(
                "--key needs --cert (the certificate it belongs to)",
            ));
        }
        (None, None) => {}
    }
    Ok(t)
}

/// The config folder: `$AUTHWIRE_CONFIG_DIR` itself; else `$XDG_CONFIG_HOME/authwire` when
/// set, on every platform; else the platform's (Linux `~/.config/authwire`, macOS
/// `~/Library/Application Support/authwire`, Windows `%APPDATA%\authwire`).
pub(crate) fn config_dir() -> Option<PathBuf> {
    folder(
        &env_var,
        "AUTHWIRE_CONFIG_DIR",
        "XDG_CONFIG_HOME",
        dirs::config_dir(),
    )
}

/// The cache folder: `$AUTHWIRE_CACHE_DIR` itself; else `$XDG_CACHE_HOME/authwire` when set;
/// else the platform's (Linux `~/.cache/authwire`, macOS `~/Library/Caches/authwire`, Windows
/// `%LOCALAPPDATA%\authwire`).
pub(crate) fn cache_dir() -> Option<PathBuf> {
    folder(
        &env_var,
        "AUTHWIRE_CACHE_DIR",
        "XDG_CACHE_HOME",
        dirs::cache_dir(),
    )
}

fn env_var(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}

/// The folder rules, with the environment and the platform's folder given: `own` names the
/// folder itself; `xdg` its parent, and only as an absolute path (the XDG specification says a
/// relative one is to be ignored); then the platform's parent.
fn folder(
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    own: &str,
    xdg: &str,
    platform: Option<PathBuf>,
) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set(own)
        .or_else(|| set(xdg).filter(|p| p.is_absolute()).map(|p| p.join("authwire")))
        .or_else(|| platform.map(|p| p.join("authwire")))
}

fn config_file() -> Result<PathBuf, CliError> {
    Ok(config_dir()
        .ok_or_else(|| CliError::config("cannot find the config folder: set AUTHWIRE_CONFIG_DIR"))?
        .join("config.toml"))
}

fn parse_config(path: &Path, text: &str) -> Result<ConfigFile, CliError> {
    toml::from_str(text)
        .map_err(|e| CliError::config(format!("{} is not valid: {}", path.display(), e.message())))
}

/// The names of the profiles in the config file (none when there is no file).
pub(crate) fn profile_names() -> Result<Vec<String>, CliError> {
    let path = config_file()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_config(&path, &text)?.profiles.into_keys().collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(CliError::config(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The `[[proxy.route]]` tables of the config file (none when there is no file).
pub(crate) fn proxy_routes() -> Result<(PathBuf, Vec<RouteConfig>), CliError> {
    let path = config_file()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((path.clone(), parse_config(&path, &text)?.proxy.route)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((path, Vec::new())),
        Err(e) => Err(CliError::config(format!("cannot read {}: {e}", path.display()))),
    }
}

/// A profile's `username`.
pub(crate) fn profile_username(name: &str) -> Result<Option<String>, CliError> {
    Ok(load_profile(name)?.username)
}

fn load_profile(name: &str) -> Result<Profile, CliError> {
    let path = config_file()?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::config(format!("profile {name:?} needs {}: {e}", path.display())))?;
    let file = parse_config(&path, &text)?;
    let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
    file.profiles.get(name).cloned().ok_or_else(|| {
        CliError::config(format!(
            "no profile {name:?} in {} (profiles: {})",
            path.display(),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ))
    })
}

fn read_secret_file(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::config(format!(
            "cannot read the client secret file {}: {e}",
            path.display()
        ))
    })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

pub(crate) async fn resolve(c: &Credentials) -> Result<Settings, CliError> {
    let profile = match &c.profile {
        Some(name) => load_profile(name)?,
        None => Profile::default(),
    };
    let cloud = match (c.credential, profile.credential.as_deref()) {
        (Some(k), _) => Some(k),
        (None, Some(name)) => Some(
            <Cloud as clap::ValueEnum>::from_str(name, true)
                .map_err(|_| CliError::config(format!("credential {name:?} is not gcp or azure")))?,
        ),
        (None, None) => None,
    };
    let transport = transport(c, &profile)?;
    if let Some(cloud) = cloud {
        return resolve_cloud(c, &profile, cloud, transport).await;
    }
    let (cache, redis_url) = cache_choice(c, &profile)?;
    let issuer = c.issuer.clone().or(profile.issuer);
    let token_url = c.token_url.clone().or(profile.token_url);
    let client_id = c.client_id.clone().or(profile.client_id).ok_or_else(|| {
        CliError::config("no client id: pass --client-id or use a --profile that sets client_id")
    })?;
    let secret = match c
        .client_secret_file
        .as_deref()
        .or(profile.client_secret_file.as_deref())
    {
        Some(path) => Some(read_secret_file(path)?),
        None => std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty()),
    };
    let auth_method = match (c.auth_method, profile.auth_method.as_deref()) {
        (Some(m), _) => Some(m),
        (None, Some(name)) => Some(
            <AuthMethod as clap::ValueEnum>::from_str(name, true).map_err(|_| {
                CliError::config(format!(
                    "auth_method {name:?} is not basic, post, private-key-jwt, none, tls-client-auth or self-signed-tls-client-auth"
                ))
            })?,
        ),
        (None, None) => None,
    };
    let private_key = c.private_key_file.clone().or(profile.private_key_file);
    let assertion = assertion_source(
        c.assertion_file.clone().or(profile.assertion_file.clone()),
        c.assertion.clone().or(profile.assertion.clone()),
        issuer.as_deref(),
        token_url.as_deref(),
    )?;
    let (hosts, username) = (profile.hosts.clone(), profile.username.clone());
    let allow_insecure_http = c.allow_insecure_http || profile.allow_insecure_http;

    let mut b = OAuth2Provider::builder()
        .client_id(&client_id)
        .transport(transport.clone());
    let endpoint = match (&issuer, &token_url) {
        (_, Some(t)) => {
            b = b.token_url(t);
            t.clone()
        }
        (Some(i), None) => {
            b = b.issuer(i);
            i.clone()
        }
        (None, None) => {
            return Err(CliError::config(
                "no identity provider: pass --issuer or --token-url, or use a --profile",
            ));
        }
    };
    let tls_auth = matches!(
        auth_method,
        Some(AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth)
    );
    let confidential = secret.is_some() || private_key.is_some() || assertion.is_some() || tls_auth;
    if let Some(s) = &secret {
        b = b.client_secret(s);
    }
    match (auth_method, assertion) {
        (None, Some(source)) => b = b.auth_method(ClientAuthMethod::ClientAssertion(source)),
        (Some(_), Some(_)) => {
            return Err(CliError::config(
                "--assertion / --assertion-file authenticate the client: leave out --auth-method",
            ));
        }
        (auth_method, None) => match auth_method {
            Some(AuthMethod::Basic) => b = b.auth_method(ClientAuthMethod::ClientSecretBasic),
            Some(AuthMethod::Post) => b = b.auth_method(ClientAuthMethod::ClientSecretPost),
            Some(AuthMethod::None) => b = b.auth_method(ClientAuthMethod::None),
            Some(AuthMethod::TlsClientAuth) => b = b.auth_method(ClientAuthMethod::TlsClientAuth),
            Some(AuthMethod::SelfSignedTlsClientAuth) => {
                b = b.auth_method(ClientAuthMethod::SelfSignedTlsClientAuth)
            }
            Some(AuthMethod::PrivateKeyJwt) | None if private_key.is_some() => {
                let path = private_key.as_deref().unwrap_or(Path::new(""));
                let pem = std::fs::read(path).map_err(|e| {
                    CliError::config(format!("cannot read the private key {}: {e}", path.display()))
                })?;
                let key = PrivateKey::rsa_pem(&pem)
                    .or_else(|_| PrivateKey::ec_pem(&pem))
                    .map_err(|e| CliError::config(format!("{}: {e}", path.display())))?;
                b = b.auth_method(ClientAuthMethod::PrivateKeyJwt { key });
            }
            Some(AuthMethod::PrivateKeyJwt) => {
                return Err(CliError::config(
                    "--auth-method private-key-jwt needs --private-key-file",
                ));
            }
            None => {}
        },
    }
    // A client that can authenticate gets its own tokens; a public one refreshes what `login`
    // stored. `login` keeps its token under the key the other commands read: for a
    // confidential client that logs a person in (a FAPI client), the stored login's refresh
    // token is used first, under the same key as its client credentials.
    b = b.grant(if confidential {
        Grant::ClientCredentials
    } else {
        Grant::RefreshToken
    });
    for s in c.scope.iter().chain(&profile.scope) {
        b = b.scope(s);
    }
    if let Some(a) = c.audience.clone().or(profile.audience) {
        b = b.audience(a);
    }
    for r in c.resource.iter().chain(&profile.resource) {
        b = b.resource(r);
    }
    b = b
        .allow_insecure_http(allow_insecure_http)
        .par(c.par || profile.par);
    if let Some(u) = c.authorization_url.clone().or(profile.authorization_url) {
        b = b.authorization_url(u);
    }
    if let Some(u) = c.revocation_url.clone().or(profile.revocation_url) {
        b = b.revocation_url(u);
    }

    let store = open_store(cache, redis_url.as_deref()).await?;
    let dpop_key = if c.dpop || profile.dpop {
        let key = dpop_key(store.as_ref(), &endpoint, &client_id).await?;
        b = b.dpop(key.clone());
        Some(key)
    } else {
        None
    };
    let provider = b.build().map_err(|e| crate::error::build_error(&e))?;
    Ok(Settings {
        oauth2: Some(provider.clone()),
        provider: Arc::new(provider),
        store,
        allow_insecure_http,
        endpoint,
        client_id,
        dpop_key,
        hosts,
        username,
        login_command: c.login_command(),
        transport,
    })
}

/// Google's Application Default Credentials with `scopes` (cloud-platform when none). When no
/// credential file is configured, the chain would probe the metadata server (up to 500 ms on a
/// machine that has none, every run); a source whose token is still in `store` is used
/// without the probe, so a cached run costs what any cached run costs.
async fn gcp_credentials(
    scopes: &[String],
    transport: &Transport,
    store: Option<&dyn authwire::TokenStore>,
) -> Result<authwire_gcp::GcpCredentials, CliError> {
    let env = |name: &str| std::env::var(name).ok();
    let scoped = |mut found: authwire_gcp::GcpCredentials| {
        found = found.transport(transport.clone());
        if scopes.is_empty() {
            found = found.scope(authwire_gcp::CLOUD_PLATFORM_SCOPE);
        }
        for s in scopes {
            found = found.scope(s);
        }
        found
    };
    let config = |e: authwire_gcp::GcpError| CliError::config(e.to_string());
    if let Some(found) = authwire_gcp::credential_file_in(env).map_err(config)? {
        return Ok(scoped(found));
    }
    if let Some(store) = store {
        let now = authwire::Clock::now(&authwire::SystemClock);
        for source in authwire_gcp::unprobed_sources_in(env) {
            let source = scoped(source);
            let key = authwire::IdentityProvider::cache_key(&source);
            if let Ok(Some(token)) = store.load(&key).await
                && token
                    .expires_at()
                    .is_some_and(|at| at > now + std::time::Duration::from_secs(60))
            {
                return Ok(source);
            }
        }
    }
    authwire_gcp::default_credentials()
        .await
        .map(scoped)
        .map_err(config)
}

/// `--credential gcp|azure`: the platform's own credentials, scopes from `--scope`.
async fn resolve_cloud(
    c: &Credentials,
    profile: &Profile,
    cloud: Cloud,
    transport: Transport,
) -> Result<Settings, CliError> {
    if c.dpop || profile.dpop {
        return Err(CliError::config(
            "--dpop needs an OAuth2 identity provider, not --credential",
        ));
    }
    let scopes: Vec<String> = c
        .scope
        .iter()
        .chain(&profile.scope)
        .flat_map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let (cache, redis_url) = cache_choice(c, profile)?;
    let store = open_store(cache, redis_url.as_deref()).await?;
    let (provider, endpoint): (Arc<dyn authwire::IdentityProvider>, String) = match cloud {
        Cloud::Gcp => {
            let found = gcp_credentials(&scopes, &transport, store.as_ref().map(|(s, _)| s.as_ref())).await?;
            let kind = found.kind();
            (Arc::new(found), format!("Google Cloud ({kind})"))
        }
        Cloud::Azure => {
            let [scope] = scopes.as_slice() else {
                return Err(CliError::config(
                    "--credential azure needs exactly one --scope, such as https://management.azure.com/.default",
                ));
            };
            let found = authwire_azure::default_credential()
                .map_err(|e| CliError::config(e.to_string()))?
                .transport(transport.clone())
                .scope(scope);
            let kind = found.kind();
            (Arc::new(found), format!("Azure ({kind})"))
        }
    };
    Ok(Settings {
        oauth2: None,
        provider,
        store,
        allow_insecure_http: c.allow_insecure_http || profile.allow_insecure_http,
        endpoint,
        client_id: String::new(),
        dpop_key: None,
        hosts: profile.hosts.clone(),
        username: profile.username.clone(),
        login_command: c.login_command(),
        transport,
    })
}

impl Settings {
    /// The OAuth2 client, for what only an OAuth2 identity provider does (log in, revoke).
    pub(crate) fn oauth2(&self, what: &str) -> Result<&OAuth2Provider, CliError> {
        self.oauth2.as_ref().ok_or_else(|| {
            CliError::config(format!(
                "{what} needs an OAuth2 identity provider (--issuer or --token-url), not --credential"
            ))
        })
    }

    /// The cache key of this configuration's tokens.
    pub(crate) fn cache_key(&self) -> authwire::CacheKey {
        self.provider.cache_key()
    }

    /// The authorizer for a long-running process (the proxy): a token that cannot be saved to
    /// the store is still used (the process keeps it, rotated refresh token included), so a
    /// store's outage does not stop requests.
    pub(crate) fn serving_authorizer(&self) -> Authorizer {
        let mut b = Authorizer::builder(self.provider.clone());
        if let Some((store, _)) = &self.store {
            b = b.store(store.clone());
        }
        b.build()
    }

    /// The authorizer for these settings. With a store, a token that cannot be saved fails the
    /// command: a rotated refresh token must not be lost when the process exits.
    pub(crate) fn authorizer(&self) -> Authorizer {
        let mut b = Authorizer::builder(self.provider.clone());
        if let Some((store, _)) = &self.store {
            b = b.store(store.clone()).require_store(true);
        }
        b.build()
    }
}

/// Where the client's DPoP key is kept in the cache.
pub(crate) fn dpop_key_entry(endpoint: &str, client_id: &str) -> authwire::CacheKey {
    authwire::CacheKey::new(format!("dpop-key|{endpoint}|{client_id}"))
}

/// The client's DPoP key: the one kept in the cache (an entry of its own, beside the tokens it
/// binds), or a new one, saved there. Without a cache, a new key each run.
///
/// Two first runs on one cache must end with one key: each would otherwise save its own, and
/// the loser's bound tokens (and a refresh token the identity provider bound to its key) would
/// be lost. The run that takes the cache's lease for the key's entry generates it; the others
/// wait for it and use it.
async fn dpop_key(store: Option<&ChosenStore>, endpoint: &str, client_id: &str) -> Result<DpopKey, CliError> {
    let entry = dpop_key_entry(endpoint, client_id);
    let Some((store, description)) = store else {
        return DpopKey::generate_es256().map_err(|e| CliError::config(e.to_string()));
    };
    if let Some(kept) = kept_dpop_key(store.as_ref(), &entry).await {
        return Ok(kept);
    }
    let clock = authwire::SystemClock;
    for _ in 0..DPOP_KEY_WAITS {
        match store.begin_refresh(&entry, DPOP_KEY_LEASE).await {
            Ok(authwire::RefreshLease::HeldElsewhere) => {
                authwire::Clock::sleep(&clock, DPOP_KEY_POLL).await;
                if let Some(kept) = kept_dpop_key(store.as_ref(), &entry).await {
                    return Ok(kept);
                }
            }
            Ok(authwire::RefreshLease::Held(guard)) => {
                // Another run may have saved it while this one waited for the lease.
                let result = match kept_dpop_key(store.as_ref(), &entry).await {
                    Some(kept) => Ok(kept),
                    None => new_dpop_key(store.as_ref(), &entry, description).await,
                };
                guard.release().await;
                return result;
            }
            // A store that cannot coordinate (or failed to): as before, one run's key wins.
            _ => return new_dpop_key(store.as_ref(), &entry, description).await,
        }
    }
    Err(CliError::config(
        "another authwire process is creating this client's DPoP key and has not finished: try again",
    ))
}

/// How long a first run may hold the lease while it makes and saves the key.
const DPOP_KEY_LEASE: std::time::Duration = std::time::Duration::from_secs(30);
/// How often a waiting first run looks for the key, and how many times.
const DPOP_KEY_POLL: std::time::Duration = std::time::Duration::from_millis(100);
const DPOP_KEY_WAITS: usize = 300;

/// The key kept in the cache, if there is a usable one.
async fn kept_dpop_key(store: &dyn TokenStore, entry: &authwire::CacheKey) -> Option<DpopKey> {
    use authwire::secrecy::ExposeSecret;
    let kept = store.load(entry).await.ok()??;
    let material = kept.stored_proof_key()?;
    DpopKey::from_pkcs8_pem(material.material.expose_secret().as_bytes()).ok()
}

/// A new key, saved in the cache.
async fn new_dpop_key(
    store: &dyn TokenStore,
    entry: &authwire::CacheKey,
    description: &str,
) -> Result<DpopKey, CliError> {
    let dpop = DpopKey::generate_es256().map_err(|e| CliError::config(e.to_string()))?;
    // An entry that is never served: it only carries the key.
    let carrier = authwire::Token::new("dpop-key").with_stored_proof_key(authwire::ProofKey {
        kind: "dpop+es256".into(),
        material: dpop.to_pkcs8_pem(),
    });
    store.save(entry, &carrier).await.map_err(|e| {
        CliError::config(format!(
            "cannot keep the DPoP key in the {description}: {}",
            authwire::error_chain(&e)
        ))
    })?;
    Ok(dpop)
}

fn file_store() -> Result<ChosenStore, CliError> {
    let dir = cache_dir()
        .ok_or_else(|| CliError::config("cannot find the cache folder: set AUTHWIRE_CACHE_DIR"))?
        .join("tokens");
    if cfg!(not(unix)) {
        return Err(CliError::config(
            "--cache file is not available here: the file store cannot make its folder private to you on this platform (it sets no Windows ACL); use --cache keyring (the Windows Credential Manager)",
        ));
    }
    let store = FileStore::new(&dir).map_err(|e| CliError::config(authwire::error_chain(&e)))?;
    Ok((Arc::new(store), format!("file cache {}", dir.display())))
}

/// The keyring for tokens, with refresh leases from lock files in the cache folder: two
/// `authwire` processes on one keyring must not both redeem a rotating refresh token.
fn keyring_store(keyring: KeyringStore) -> Result<ChosenStore, CliError> {
    let dir = cache_dir()
        .ok_or_else(|| {
            CliError::config("cannot find the cache folder for lock files: set AUTHWIRE_CACHE_DIR")
        })?
        .join("leases");
    // Lease files hold no secret: on Windows, the folder's inherited ACL (the user's profile)
    // is enough for them.
    let leases = FileStore::with_inherited_permissions(&dir)
        .map_err(|e| CliError::config(authwire::error_chain(&e)))?;
    Ok((
        Arc::new(authwire::store::LeasedStore::new(keyring, leases)),
        "OS keyring".into(),
    ))
}

/// The store the flags or the profile choose (`--cache`, `--redis-url`), not opened yet.
fn cache_choice(c: &Credentials, profile: &Profile) -> Result<(Option<CacheKind>, Option<String>), CliError> {
    let cache = match (c.cache, profile.cache.as_deref()) {
        (Some(k), _) => Some(k),
        (None, Some(name)) => {
            Some(<CacheKind as clap::ValueEnum>::from_str(name, true).map_err(|_| {
                CliError::config(format!("cache {name:?} is not keyring, file, none or redis"))
            })?)
        }
        (None, None) => None,
    };
    Ok((cache, c.redis_url.clone().or(profile.redis_url.clone())))
}

async fn open_store(
    kind: Option<CacheKind>,
    redis_url: Option<&str>,
) -> Result<Option<ChosenStore>, CliError> {
    match kind {
        Some(CacheKind::None) => Ok(None),
        Some(CacheKind::Redis) => {
            let url = redis_url.ok_or_else(|| CliError::config("--cache redis needs --redis-url"))?;
            // One server, a cluster (redis+cluster://) or sentinels (redis+sentinel://).
            let store = authwire_redis::RedisStore::from_url(url)
                .connect()
                .await
                .map_err(|e| CliError::config(format!("--redis-url: {}", authwire::error_chain(&e))))?;
            Ok(Some((Arc::new(store), "Redis".into())))
        }
        Some(CacheKind::File) => file_store().map(Some),
        Some(CacheKind::Keyring) => {
            let store = KeyringStore::new("authwire");
            store
                .backend_available()
                .map_err(|e| CliError::config(format!("{e} (or pass --cache file)")))?;
            Ok(Some(keyring_store(store)?))
        }
        None => {
            let keyring = KeyringStore::new("authwire");
            if keyring.backend_available().is_ok() {
                return Ok(Some(keyring_store(keyring)?));
            }
            let (store, description) = file_store()?;
            // Said once: a marker in the cache folder remembers that the user was told.
            if let Some(dir) = cache_dir() {
                let marker = dir.join(".told-file-cache");
                if !marker.exists() {
                    eprintln!("authwire: no OS keyring here; caching tokens in {description} (mode 0600)");
                    let _ = std::fs::write(marker, b"");
                }
            }
            Ok(Some((store, description)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::folder;
    use std::path::PathBuf;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.into())
    }

    #[test]
    fn the_own_variable_wins_then_xdg_then_the_platform() {
        let platform = Some(PathBuf::from("/platform/config"));
        let both = env(&[("AUTHWIRE_CONFIG_DIR", "/mine"), ("XDG_CONFIG_HOME", "/xdg")]);
        assert_eq!(
            folder(&both, "AUTHWIRE_CONFIG_DIR", "XDG_CONFIG_HOME", platform.clone()),
            Some(PathBuf::from("/mine")),
            "AUTHWIRE_CONFIG_DIR names the folder itself"
        );
        let xdg = env(&[("XDG_CONFIG_HOME", "/xdg")]);
        assert_eq!(
            folder(&xdg, "AUTHWIRE_CONFIG_DIR", "XDG_CONFIG_HOME", platform.clone()),
            Some(PathBuf::from("/xdg/authwire"))
        );
        let relative = env(&[("XDG_CONFIG_HOME", "relative/xdg"), ("AUTHWIRE_CONFIG_DIR", "")]);
        assert_eq!(
            folder(
                &relative,
                "AUTHWIRE_CONFIG_DIR",
                "XDG_CONFIG_HOME",
                platform.clone()
            ),
            Some(PathBuf::from("/platform/config/authwire")),
            "a relative XDG path and an empty variable are ignored"
        );
        assert_eq!(
            folder(&env(&[]), "AUTHWIRE_CONFIG_DIR", "XDG_CONFIG_HOME", None),
            None
        );
    }

    /// What the platform's own folders are, where this test runs.
    #[test]
    fn the_platform_folders_follow_its_convention() {
        let (config, cache) = (dirs::config_dir(), dirs::cache_dir());
        if cfg!(target_os = "linux") && std::env::var_os("XDG_CONFIG_HOME").is_none() {
            let home = dirs::home_dir().unwrap();
            assert_eq!(config, Some(home.join(".config")));
        }
        if cfg!(target_os = "linux") && std::env::var_os("XDG_CACHE_HOME").is_none() {
            let home = dirs::home_dir().unwrap();
            assert_eq!(cache, Some(home.join(".cache")));
        }
        if cfg!(target_os = "macos") {
            let home = dirs::home_dir().unwrap();
            assert_eq!(config, Some(home.join("Library/Application Support")));
            assert_eq!(cache, Some(home.join("Library/Caches")));
        }
        if cfg!(windows) {
            assert_eq!(config.map(|p| p.ends_with("Roaming")), Some(true));
            assert_eq!(cache.map(|p| p.ends_with("Local")), Some(true));
        }
    }
}
