//! A route: where programs connect ([`Listen`]), where their requests go ([`Upstream`]), and
//! the [`Authorizer`] whose token they carry.

use crate::ProxyError;
use authwire::Authorizer;
use authwire::http::{self, Uri};
use authwire_http::Transport;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a route listens: a TCP address, or a unix socket (created `0600`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address; loopback unless the route allows remote clients by name.
    Tcp(SocketAddr),
    /// A unix socket at this path (Unix only).
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = ProxyError;

    /// `127.0.0.1:8081`, `[::1]:8081`, or `unix:/run/authwire/orders.sock`.
    fn from_str(s: &str) -> Result<Self, ProxyError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ProxyError::config(format!(
                    "listen {s:?}: no socket path after unix:"
                )));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse().map(Self::Tcp).map_err(|_| {
            ProxyError::config(format!(
                "listen {s:?} is not an address (127.0.0.1:8081) or a unix socket (unix:/path/to.sock)"
            ))
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// One route: a listener, an upstream origin (with an optional base path), and the
/// authorizer whose token every request carries.
///
/// ```
/// use authwire::{Authorizer, StaticTokenProvider};
/// use authwire_proxy::Route;
///
/// # fn run() -> Result<(), authwire_proxy::ProxyError> {
/// let route = Route::new(
///     "orders",
///     "127.0.0.1:8081".parse()?,
///     "https://orders.example/v2",
///     Authorizer::new(StaticTokenProvider::new("t0k3n")),
/// )?;
/// # let _ = route; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Route {
    pub(crate) name: String,
    pub(crate) listen: Listen,
    pub(crate) upstream: Upstream,
    pub(crate) authorizer: Authorizer,
    pub(crate) transport: Transport,
    pub(crate) allow_remote: bool,
    pub(crate) allow_insecure_http: bool,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("upstream", &self.upstream.shown)
            .field("cache_key", &format_args!("{}", self.authorizer.cache_key()))
            .finish_non_exhaustive()
    }
}

impl Route {
    /// A route named `name` (it labels metrics and logs) from `listen` to `upstream`
    /// (`https://host[:port][/base/path]`), authorized by `authorizer`. The upstream URL must
    /// have no query, fragment or user information.
    pub fn new(
        name: impl Into<String>,
        listen: Listen,
        upstream: &str,
        authorizer: Authorizer,
    ) -> Result<Self, ProxyError> {
        let name = name.into();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ProxyError::config(format!(
                "route name {name:?}: letters, digits, '-', '_' and '.' only (it labels metrics)"
            )));
        }
        Ok(Self {
            name,
            listen,
            upstream: Upstream::parse(upstream)?,
            authorizer,
            transport: Transport::new(),
            allow_remote: false,
            allow_insecure_http: false,
        })
    }

    /// Reach the upstream with `transport`'s roots of trust and client certificate (mutual
    /// TLS). Its proxy does not apply to the upstream.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Listen on an address that is not loopback (`true`). A listener on the network lends the
    /// workload's identity to whoever can reach it: put it behind a network policy.
    pub fn allow_remote(mut self, on: bool) -> Self {
        self.allow_remote = on;
        self
    }

    /// Allow a plain-http upstream that is not loopback (`true`): tokens then cross the network
    /// readable.
    pub fn allow_insecure_http(mut self, on: bool) -> Self {
        self.allow_insecure_http = on;
        self
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Refuse what must not start: a listener off loopback without `allow_remote`, an http
    /// upstream off loopback without `allow_insecure_http`. The error names the flag.
    pub(crate) fn check(&self) -> Result<(), ProxyError> {
        if let Listen::Tcp(addr) = &self.listen
            && !addr.ip().is_loopback()
            && !self.allow_remote
        {
            return Err(ProxyError::config(format!(
                "route {}: {addr} is not a loopback address; a listener on the network lends this workload's identity to whoever reaches it: pass --allow-remote to mean it",
                self.name
            )));
        }
        if self.upstream.scheme == Scheme::Http && !self.upstream.loopback && !self.allow_insecure_http {
            return Err(ProxyError::config(format!(
                "route {}: the upstream {} is plain http to a host that is not loopback, which would send tokens readable; use https, or pass --allow-insecure-http",
                self.name, self.upstream.shown
            )));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// The upstream: an origin and a base path, joined to each request's path byte for byte.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    pub(crate) scheme: Scheme,
    pub(crate) authority: http::uri::Authority,
    /// The `Host` header every request carries: the authority as written (equal to HTTP/2's
    /// `:authority`, RFC 9113 section 8.3.1).
    pub(crate) host: http::HeaderValue,
    /// The base path without a trailing `/` (empty for none).
    pub(crate) base_path: String,
    pub(crate) loopback: bool,
    /// `scheme://authority/base`, for messages.
    pub(crate) shown: String,
}

impl Upstream {
    pub(crate) fn parse(value: &str) -> Result<Self, ProxyError> {
        let bad = |why: &str| ProxyError::config(format!("upstream {value:?}: {why}"));
        let uri: Uri = value.parse().map_err(|_| bad("not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return Err(bad("use an https:// (or loopback http://) URL")),
        };
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "user information in the URL is not supported (the token is the credential)",
            ));
        }
        if uri.query().is_some() || value.contains('#') {
            return Err(bad("a query or fragment is not supported in the upstream URL"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let loopback = authwire::is_loopback_host(authority.host());
        let shown = format!(
            "{}://{}{}",
            if scheme == Scheme::Https { "https" } else { "http" },
            authority,
            base_path
        );
        let host = http::HeaderValue::from_str(authority.as_str()).map_err(|_| bad("not a host"))?;
        Ok(Self {
            scheme,
            authority,
            host,
            base_path,
            loopback,
            shown,
        })
    }

    /// The upstream URI for a request's path and query: the base path, then the request's
    /// path and query exactly as the program sent them.
    pub(crate) fn join(&self, path_and_query: &http::uri::PathAndQuery) -> Result<Uri, http::Error> {
        let scheme = if self.scheme == Scheme::Https {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let path_and_query = if self.base_path.is_empty() && path_and_query.as_str().starts_with('/') {
            // Nothing to join: the request's own bytes, not copied.
            path_and_query.clone()
        } else {
            self.joined(path_and_query.as_str())?
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Ok(Uri::from_parts(parts)?)
    }

    /// The base path, then `path_and_query`.
    fn joined(&self, path_and_query: &str) -> Result<http::uri::PathAndQuery, http::Error> {
        let mut joined = String::with_capacity(self.base_path.len() + path_and_query.len());
        joined.push_str(&self.base_path);
        if !path_and_query.starts_with('/') {
            joined.push('/');
        }
        joined.push_str(path_and_query);
        Ok(http::uri::PathAndQuery::try_from(joined)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_path_is_joined_byte_for_byte() {
        let up = Upstream::parse("https://orders.example/v2/").unwrap();
        assert_eq!(
            up.join(&"/items/%2F..%2F?b=2&a=1&a=%20".parse().unwrap())
                .unwrap()
                .to_string(),
            "https://orders.example/v2/items/%2F..%2F?b=2&a=1&a=%20"
        );
        let bare = Upstream::parse("https://orders.example").unwrap();
        assert_eq!(
            bare.join(&"/x?y".parse().unwrap()).unwrap().to_string(),
            "https://orders.example/x?y"
        );
        assert!(Upstream::parse("https://u:p@orders.example").is_err());
        assert!(Upstream::parse("ftp://orders.example").is_err());
        assert!(Upstream::parse("https://orders.example/?q=1").is_err());
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "unix:/run/a.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/run/a.sock".into())
        );
        assert!("localhost:80".parse::<Listen>().is_err());
        assert!("unix:".parse::<Listen>().is_err());
    }
}
