//! [`Transport`]: how credential requests reach the network (proxy, roots, client identity,
//! timeout), configured once and handed to every provider.

use crate::pem;
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;
use zeroize::Zeroizing;

/// How every outgoing request of a credential reaches the network: which proxy, which roots of
/// trust, which client certificate, how long a request may take. One value, cheap to clone,
/// handed to each provider (`OAuth2Provider::builder().transport(..)`, the Google Cloud and
/// Azure credentials, `authwire_jwt::Verifier`), so that a corporate network is configured in
/// one place.
///
/// The rules that keep credentials safe hold whatever is configured here: redirects are never
/// followed, bodies are bounded, errors name no secret (a proxy's password included), and
/// metadata endpoints (the GCE metadata server, Azure IMDS and App Service) never go through a
/// proxy, as the clouds' own libraries do.
///
/// ```
/// use authwire_http::Transport;
/// use std::time::Duration;
///
/// # fn run(ca_pem: &[u8]) -> Result<(), authwire_http::TransportError> {
/// let transport = Transport::new()                 // the environment's proxy, the system's roots
///     .proxy("http://proxy.corp.example:3128")?    // or an explicit one (overrides the environment)
///     .root_certificates_pem(ca_pem)?              // a private CA, trusted beside the system's
///     .timeout(Duration::from_secs(10));
/// # let _ = transport; Ok(()) }
/// ```
///
/// # Proxies from the environment
///
/// By default the proxy comes from the variables curl reads, lower case first: `https_proxy`
/// for https URLs, `http_proxy` for http ones, `all_proxy` for both, and `no_proxy` (a comma
/// list of host names, domain suffixes, IP addresses or CIDR ranges, or `*`) for hosts that are
/// reached directly. The upper-case names are read too, except `HTTP_PROXY` in a CGI program
/// (one with `REQUEST_METHOD` set), where a request header could have set it ("httpoxy"). A
/// proxy's credentials go in its URL (`http://user:password@proxy:3128`) and are never shown.
#[derive(Clone, Default)]
pub struct Transport {
    inner: Arc<Settings>,
}

#[derive(Clone, Default)]
struct Settings {
    proxy: ProxyChoice,
    roots: Vec<CertificateDer<'static>>,
    only_these_roots: bool,
    identity: Option<Identity>,
    timeout: Option<Duration>,
}

#[derive(Clone, Default)]
enum ProxyChoice {
    /// From the environment, read when the client is built.
    #[default]
    Environment,
    /// One proxy for every URL (still subject to `no_proxy`).
    Explicit(ProxyUrl),
    /// Direct connections only.
    Off,
}

/// A client certificate chain and its private key.
#[derive(Clone)]
struct Identity {
    /// The certificates and the key, as one PEM document (what reqwest reads).
    pem: Arc<Zeroizing<Vec<u8>>>,
    /// The leaf certificate (DER).
    leaf: CertificateDer<'static>,
}

impl Transport {
    /// The defaults: the proxy from the environment, the system's roots of trust, no client
    /// certificate, each provider's own timeout.
    pub fn new() -> Self {
        Self::default()
    }

    fn edit(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// Send every request through this proxy (`http://` or `https://`; a URL without a scheme
    /// is `http://`, as curl reads it), with credentials in the URL if the proxy asks for them.
    /// The environment's proxy variables are then ignored, except `no_proxy`.
    pub fn proxy(self, url: &str) -> Result<Self, TransportError> {
        let proxy = ProxyUrl::parse(url, "the proxy URL")?;
        Ok(self.edit(|s| s.proxy = ProxyChoice::Explicit(proxy)))
    }

    /// Ignore the proxy variables and connect directly (`true`), or read them again (`false`).
    pub fn no_proxy(self, on: bool) -> Self {
        self.edit(|s| {
            s.proxy = match (on, &s.proxy) {
                (true, _) => ProxyChoice::Off,
                (false, ProxyChoice::Off) => ProxyChoice::Environment,
                (false, other) => other.clone(),
            }
        })
    }

    /// Trust the CA certificates in `pem` (one or more `CERTIFICATE` blocks), beside the
    /// system's roots, or instead of them with [`only_these_roots`](Self::only_these_roots).
    pub fn root_certificates_pem(self, pem: &[u8]) -> Result<Self, TransportError> {
        let certs =
            pem::certificates(pem).map_err(|e| TransportError::new(format!("the CA certificates: {e}")))?;
        Ok(self.edit(|s| s.roots.extend(certs)))
    }

    /// Trust only the certificates given to
    /// [`root_certificates_pem`](Self::root_certificates_pem), not the system's.
    pub fn only_these_roots(self, on: bool) -> Self {
        self.edit(|s| s.only_these_roots = on)
    }

    /// Present this client certificate when a server asks for one (mutual TLS, RFC 8705):
    /// `cert_chain_pem` holds the certificate first, then any intermediates; `key_pem` its
    /// private key (RSA or EC; PKCS#1, PKCS#8 or SEC1). An encrypted key is refused with an
    /// error that says so: decrypt it first (`openssl pkey -in key.pem -out plain.pem`).
    pub fn identity_pem(self, cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TransportError> {
        let chain = pem::certificates(cert_chain_pem)
            .map_err(|e| TransportError::new(format!("the client certificate: {e}")))?;
        let key =
            pem::private_key(key_pem).map_err(|e| TransportError::new(format!("the client key: {e}")))?;
        let mut joined = Zeroizing::new(Vec::with_capacity(cert_chain_pem.len() + key_pem.len() + 1));
        for cert in &chain {
            joined.extend_from_slice(pem::encode("CERTIFICATE", cert.as_ref()).as_bytes());
        }
        joined.extend_from_slice(pem::encode(key.label(), key.der()).as_bytes());
        let identity = Identity {
            pem: Arc::new(joined),
            leaf: chain[0].clone(),
        };
        Ok(self.edit(|s| s.identity = Some(identity)))
    }

    /// Allow each request this long in all (connect, TLS, answer), instead of each provider's
    /// default. A provider's own timeout setting, when given, wins.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.edit(|s| s.timeout = Some(timeout))
    }

    /// The timeout set with [`timeout`](Self::timeout).
    pub fn configured_timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// The DER of the client certificate given to [`identity_pem`](Self::identity_pem): its
    /// SHA-256 is what a certificate-bound token's `cnf.x5t#S256` names (RFC 8705).
    pub fn client_certificate_der(&self) -> Option<&[u8]> {
        self.inner.identity.as_ref().map(|i| i.leaf.as_ref())
    }

    /// The proxy a request to `url` would go through, without credentials, for messages.
    pub(crate) fn proxy_for(&self, url: &Url) -> Option<String> {
        let plan = self.plan();
        plan.proxy_for(url.scheme()).map(ProxyUrl::shown)
    }

    fn plan(&self) -> ProxyPlan {
        match &self.inner.proxy {
            ProxyChoice::Off => ProxyPlan::default(),
            ProxyChoice::Explicit(p) => ProxyPlan {
                http: Some(p.clone()),
                https: Some(p.clone()),
                no_proxy: env_no_proxy(),
            },
            ProxyChoice::Environment => ProxyPlan::from_env(),
        }
    }

    /// A reqwest builder with this transport's proxy, roots and client certificate, for the
    /// client an application sends its own requests through (with `authwire-reqwest`), so that
    /// they cross the same network as the token requests. It names reqwest 0.13's type, so it
    /// follows reqwest's major version; the redirect policy is left to the caller.
    pub fn reqwest_client_builder(&self, user_agent: &str) -> Result<reqwest::ClientBuilder, TransportError> {
        self.builder(user_agent, false).map_err(TransportError::new)
    }

    /// A rustls client configuration with this transport's roots of trust (the platform's
    /// verifier with the extra roots, or only the given roots) and client certificate, for a
    /// connection authwire does not make through reqwest (the sidecar's upstream). `alpn` is
    /// offered in order (`[b"h2", b"http/1.1"]`). The proxy and timeout do not apply here.
    pub fn rustls_client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TransportError> {
        let s = &self.inner;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::new(format!("TLS versions: {e}")))?;
        let builder = if s.only_these_roots {
            let mut roots = rustls::RootCertStore::empty();
            for cert in &s.roots {
                roots
                    .add(cert.clone())
                    .map_err(|e| TransportError::new(format!("a CA certificate cannot be used: {e}")))?;
            }
            builder.with_root_certificates(roots)
        } else {
            let verifier =
                rustls_platform_verifier::Verifier::new_with_extra_roots(s.roots.iter().cloned(), provider)
                    .map_err(|e| TransportError::new(format!("the system's roots of trust: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        };
        let mut config = match &s.identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let chain = pem::certificates(&id.pem).map_err(|e| TransportError::new(e.to_string()))?;
                let key = pem::private_key(&id.pem).map_err(|e| TransportError::new(e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key.to_rustls())
                    .map_err(|e| TransportError::new(format!("the client certificate and key: {e}")))?
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// A reqwest builder with these settings and `user_agent`; `direct` ignores every proxy
    /// (metadata endpoints).
    pub(crate) fn builder(&self, user_agent: &str, direct: bool) -> Result<reqwest::ClientBuilder, String> {
        let s = &self.inner;
        let mut b = reqwest::Client::builder().user_agent(user_agent).no_proxy();
        if !direct {
            let plan = self.plan();
            for proxy in plan.proxies()? {
                b = b.proxy(proxy);
            }
        }
        let roots = s
            .roots
            .iter()
            .map(|c| reqwest::Certificate::from_der(c.as_ref()).map_err(|e| authwire::error_chain(&e)))
            .collect::<Result<Vec<_>, _>>()?;
        b = if s.only_these_roots {
            b.tls_certs_only(roots)
        } else {
            b.tls_certs_merge(roots)
        };
        if let Some(id) = &s.identity {
            let identity = reqwest::Identity::from_pem(&id.pem)
                .map_err(|_| "the client certificate and key do not form a usable identity".to_owned())?;
            b = b.identity(identity);
        }
        Ok(b)
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner;
        f.debug_struct("Transport")
            .field(
                "proxy",
                &match &s.proxy {
                    ProxyChoice::Environment => "from the environment".to_owned(),
                    ProxyChoice::Explicit(p) => p.shown(),
                    ProxyChoice::Off => "none".to_owned(),
                },
            )
            .field("extra_roots", &s.roots.len())
            .field("only_these_roots", &s.only_these_roots)
            .field("client_certificate", &s.identity.is_some())
            .field("timeout", &s.timeout)
            .finish()
    }
}

/// A configuration that cannot be used: a proxy URL that does not parse, a PEM without what it
/// should hold, an encrypted key. Its message names the setting, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    message: String,
}

impl TransportError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {}

/// A proxy URL, kept whole for the client and shown without its credentials.
#[derive(Clone)]
struct ProxyUrl {
    url: Url,
}

impl ProxyUrl {
    fn parse(value: &str, what: &str) -> Result<Self, TransportError> {
        let value = value.trim();
        let with_scheme = if value.contains("://") {
            value.to_owned()
        } else {
            format!("http://{value}")
        };
        // The URL may hold a password: errors say what is wrong, never the value.
        let url = Url::parse(&with_scheme)
            .map_err(|e| TransportError::new(format!("{what} is not a valid URL ({e})")))?;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(TransportError::new(format!(
                    "{what} uses {other}://, which is not supported: use an http:// or https:// proxy"
                )));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(TransportError::new(format!("{what} has no host")));
        }
        Ok(Self { url })
    }

    /// `scheme://host:port`, without user information, path or query.
    fn shown(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{}://{host}:{port}", self.url.scheme()),
            None => format!("{}://{host}", self.url.scheme()),
        }
    }
}

/// Which proxy each scheme uses, and which hosts go direct.
#[derive(Default)]
struct ProxyPlan {
    http: Option<ProxyUrl>,
    https: Option<ProxyUrl>,
    no_proxy: Option<String>,
}

impl ProxyPlan {
    /// What curl would use: lower case first; `HTTP_PROXY` not in a CGI program. A variable
    /// that does not hold a usable URL is ignored (said once per process on stderr would be
    /// noise for every command; the proxy simply is not used, as curl does).
    fn from_env() -> Self {
        let cgi = std::env::var_os("REQUEST_METHOD").is_some();
        let read = |lower: &str, upper: &str, upper_allowed: bool| {
            let value = std::env::var(lower)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .or_else(|| {
                    upper_allowed
                        .then(|| std::env::var(upper).ok())
                        .flatten()
                        .filter(|v| !v.trim().is_empty())
                })?;
            ProxyUrl::parse(&value, lower).ok()
        };
        let all = read("all_proxy", "ALL_PROXY", true);
        Self {
            http: read("http_proxy", "HTTP_PROXY", !cgi).or_else(|| all.clone()),
            https: read("https_proxy", "HTTPS_PROXY", true).or(all),
            no_proxy: env_no_proxy(),
        }
    }

    fn proxy_for(&self, scheme: &str) -> Option<&ProxyUrl> {
        match scheme {
            "https" => self.https.as_ref(),
            _ => self.http.as_ref(),
        }
    }

    fn proxies(&self) -> Result<Vec<reqwest::Proxy>, String> {
        let no_proxy = || self.no_proxy.as_deref().and_then(reqwest::NoProxy::from_string);
        let mut out = Vec::new();
        // Errors from reqwest would repeat the URL (and its password): replaced by our own.
        if let Some(p) = &self.http {
            out.push(
                reqwest::Proxy::http(p.url.as_str())
                    .map_err(|_| format!("the proxy {} cannot be used", p.shown()))?
                    .no_proxy(no_proxy()),
            );
        }
        if let Some(p) = &self.https {
            out.push(
                reqwest::Proxy::https(p.url.as_str())
                    .map_err(|_| format!("the proxy {} cannot be used", p.shown()))?
                    .no_proxy(no_proxy()),
            );
        }
        Ok(out)
    }
}

fn env_no_proxy() -> Option<String> {
    ["no_proxy", "NO_PROXY"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_password_never_shows() {
        let t = Transport::new()
            .proxy("http://alice:hunter2-secret@proxy.example:3128")
            .unwrap();
        let shown = format!("{t:?}");
        assert!(shown.contains("http://proxy.example:3128"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let url = Url::parse("https://idp.example/token").unwrap();
        assert_eq!(t.proxy_for(&url).as_deref(), Some("http://proxy.example:3128"));
    }

    #[test]
    fn a_bad_proxy_url_is_refused_without_echoing_it() {
        let e = Transport::new()
            .proxy("socks5://bob:pw-secret@proxy.example:1080")
            .unwrap_err();
        assert!(e.to_string().contains("socks5"), "{e}");
        assert!(!e.to_string().contains("pw-secret"), "{e}");
        let e = Transport::new().proxy("http://bob:pw-secret@[::1").unwrap_err();
        assert!(!e.to_string().contains("pw-secret"), "{e}");
    }

    #[test]
    fn a_proxy_without_scheme_is_http_as_curl_reads_it() {
        let t = Transport::new().proxy("proxy.example:3128").unwrap();
        let url = Url::parse("https://idp.example/").unwrap();
        assert_eq!(t.proxy_for(&url).as_deref(), Some("http://proxy.example:3128"));
        assert!(t.no_proxy(true).proxy_for(&url).is_none());
    }
}
