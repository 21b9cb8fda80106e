//! The command line as clap sees it: every flag, subcommand and value type, and nothing else.
//!
//! Parsing only: what a flag means once combined with a profile and the environment is
//! [`crate::settings`]' business, and what a command does with it is in [`crate::commands`].

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// `authwire`: the top-level command.
#[derive(Parser)]
#[command(
    name = "authwire",
    version,
    about = "Tokens and authorized requests from a terminal",
    long_about = None,
    after_help = "Also a docker credential helper: installed (or linked) as `docker-credential-authwire`, \
it speaks docker's protocol (get, list, store, erase, version); see `docker-credential-authwire --help`."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) credentials: Credentials,

    /// Trace the pipeline's five steps on stderr, with timings (never with secrets).
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where tokens come from. Flags override the profile. The client secret is read from
/// AUTHWIRE_CLIENT_SECRET or --client-secret-file, never from the command line.
#[derive(Args, Default, Clone)]
pub(crate) struct Credentials {
    /// A profile from config.toml in the config folder ($AUTHWIRE_CONFIG_DIR, else
    /// $XDG_CONFIG_HOME/authwire, else the platform's: ~/.config/authwire, ~/Library/Application
    /// Support/authwire, %APPDATA%\authwire).
    #[arg(long, global = true)]
    pub(crate) profile: Option<String>,
    /// The issuer URL (endpoints found by discovery).
    #[arg(long, global = true)]
    pub(crate) issuer: Option<String>,
    /// The token endpoint URL.
    #[arg(long, global = true)]
    pub(crate) token_url: Option<String>,
    /// The client id.
    #[arg(long, global = true)]
    pub(crate) client_id: Option<String>,
    /// A file holding the client secret (instead of AUTHWIRE_CLIENT_SECRET).
    #[arg(long, global = true)]
    pub(crate) client_secret_file: Option<PathBuf>,
    /// A scope to ask for; repeatable, or space-delimited.
    #[arg(long, global = true)]
    pub(crate) scope: Vec<String>,
    /// The audience to ask for.
    #[arg(long, global = true)]
    pub(crate) audience: Option<String>,
    /// A resource indicator (RFC 8707); repeatable.
    #[arg(long, global = true)]
    pub(crate) resource: Vec<String>,
    /// How the client authenticates.
    #[arg(long, global = true, value_enum)]
    pub(crate) auth_method: Option<AuthMethod>,
    /// The private key (PEM) for --auth-method private-key-jwt.
    #[arg(long, global = true)]
    pub(crate) private_key_file: Option<PathBuf>,
    /// Where tokens are cached [default: keyring where available, else file].
    #[arg(long, global = true, value_enum)]
    pub(crate) cache: Option<CacheKind>,
    /// Allow plain http to hosts that are not loopback (tokens cross the network readable).
    #[arg(long, global = true)]
    pub(crate) allow_insecure_http: bool,
    /// Bind tokens to a DPoP key (RFC 9449), kept in the cache beside them; requests made with
    /// `curl` then carry a proof each.
    #[arg(long, global = true)]
    pub(crate) dpop: bool,
    /// Push browser logins' authorization requests first (RFC 9126): only the client id and a
    /// one-time request URI go through the browser. On by itself when the issuer requires it.
    #[arg(long, global = true)]
    pub(crate) par: bool,
    /// The authorization endpoint, for `login --browser` [default: from discovery].
    #[arg(long, global = true)]
    pub(crate) authorization_url: Option<String>,
    /// The revocation endpoint (RFC 7009), for `logout` [default: from discovery].
    #[arg(long, global = true)]
    pub(crate) revocation_url: Option<String>,
    /// Use the cloud platform's own credentials instead of an OAuth2 client: `gcp`
    /// (Application Default Credentials) or `azure` (environment, workload identity, managed
    /// identity). No client id or secret needed.
    #[arg(long, global = true, value_enum)]
    pub(crate) credential: Option<Cloud>,
    /// Send requests through this proxy (`http://[user:password@]host:port`) instead of the one
    /// in https_proxy / http_proxy / all_proxy (no_proxy still applies). A password here is
    /// visible to other users of this machine: prefer the variables for one.
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) proxy: Option<String>,
    /// Connect directly: ignore --proxy and the proxy variables.
    #[arg(long, global = true)]
    pub(crate) no_proxy: bool,
    /// Also trust the CA certificates in this PEM file (a private CA that signed the identity
    /// provider's or the API's certificate).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,
    /// Present this client certificate (PEM, the certificate first, then intermediates) when a
    /// server asks for one (mutual TLS); its key is in --key, or in the same file.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// The private key (PEM, not encrypted) of --cert.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// Authenticate the client with the assertion in this file (a federated token, read for
    /// every token request), instead of a secret.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) assertion_file: Option<PathBuf>,
    /// Authenticate the client with a workload's own token instead of a secret:
    /// `github-actions` (the job's OIDC token; needs `permissions: id-token: write`), or
    /// `github-actions=AUDIENCE` [default audience: the issuer, else the token URL].
    #[arg(long, global = true, value_name = "SOURCE")]
    pub(crate) assertion: Option<String>,
    /// The Redis for --cache redis: one server (`rediss://host:6379/`, or `redis://` to
    /// loopback), a cluster (`rediss+cluster://host:7000,host:7001`), or the master the
    /// sentinels name (`rediss+sentinel://host:26379,host:26380/mymaster`).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) redis_url: Option<String>,
}

impl Credentials {
    /// `authwire login` with the credential flags given here (never a secret: the client secret
    /// is never a flag), as a person would type it to log in with the same settings.
    pub(crate) fn login_command(&self) -> String {
        let mut words = vec!["authwire".to_owned(), "login".to_owned()];
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                words.push(format!("--{name}"));
                words.push(shell_word(&v));
            }
        };
        flag("profile", self.profile.clone());
        flag("issuer", self.issuer.clone());
        flag("token-url", self.token_url.clone());
        flag("client-id", self.client_id.clone());
        flag(
            "client-secret-file",
            self.client_secret_file.as_ref().map(|p| p.display().to_string()),
        );
        for s in &self.scope {
            flag("scope", Some(s.clone()));
        }
        flag("audience", self.audience.clone());
        for r in &self.resource {
            flag("resource", Some(r.clone()));
        }
        flag("auth-method", self.auth_method.map(value_name));
        flag(
            "private-key-file",
            self.private_key_file.as_ref().map(|p| p.display().to_string()),
        );
        flag("cache", self.cache.map(value_name));
        flag("authorization-url", self.authorization_url.clone());
        flag("revocation-url", self.revocation_url.clone());
        // A proxy URL with a password is not repeated in a message (the variables hold it).
        flag("proxy", self.proxy.clone().filter(|p| !p.contains('@')));
        flag("cacert", self.cacert.as_ref().map(|p| p.display().to_string()));
        flag("cert", self.cert.as_ref().map(|p| p.display().to_string()));
        flag("key", self.key.as_ref().map(|p| p.display().to_string()));
        flag(
            "assertion-file",
            self.assertion_file.as_ref().map(|p| p.display().to_string()),
        );
        flag("assertion", self.assertion.clone());
        // A Redis URL may hold a password.
        flag("redis-url", self.redis_url.clone().filter(|u| !u.contains('@')));
        if self.allow_insecure_http {
            words.push("--allow-insecure-http".into());
        }
        if self.dpop {
            words.push("--dpop".into());
        }
        if self.par {
            words.push("--par".into());
        }
        if self.no_proxy {
            words.push("--no-proxy".into());
        }
        words.join(" ")
    }

    /// The settings of one profile, with no flag overriding them.
    pub(crate) fn for_profile(name: &str) -> Self {
        Self {
            profile: Some(name.to_owned()),
            ..Self::default()
        }
    }
}

/// The subcommands; each runs from its own file in `commands/`.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Print the access token alone on stdout.
    Token(TokenArgs),
    /// Print the header line "Authorization: SCHEME TOKEN".
    Header,
    /// Send a request with the Authorization header added; print the body.
    Curl(CurlArgs),
    /// Log in as a person and cache the refresh token: through the browser (authorization code
    /// with PKCE) when one can be opened and the server supports it, otherwise with the device
    /// flow.
    Login(LoginArgs),
    /// Revoke the cached refresh token at the server (RFC 7009), then delete the cached token.
    Logout,
    /// Show a JWT's header and claims (the current token if none is given; "-" reads stdin).
    Inspect(InspectArgs),
    /// kubectl's exec credential plugin: print an ExecCredential (client.authentication.k8s.io)
    /// with the token and its expiry. Logs in only when kubectl says a person is there.
    Kube(KubeArgs),
    /// git's credential helper (gitcredentials(7)): `get` answers for the configured hosts,
    /// `erase` forgets a rejected token, `store` is ignored.
    GitCredential(GitArgs),
    /// Run the sidecar: programs send plain HTTP to a loopback listener, the proxy forwards each
    /// request to the upstream over TLS with the Authorization header added (docs/proxy.md).
    /// Without --listen, every [[proxy.route]] of the config file, one listener each.
    Proxy(ProxyArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `authwire token`.
#[derive(Args)]
pub(crate) struct TokenArgs {
    /// Print {"access_token","token_type","expires_at","scope"} instead.
    #[arg(long)]
    pub(crate) json: bool,
    /// Refresh first if the token has less than this left (`90s`, `5m`, `2h`, `1d`, or seconds).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) min_ttl: Option<Duration>,
}

/// `authwire proxy`.
#[derive(Args)]
pub(crate) struct ProxyArgs {
    /// Where programs connect: a loopback address (127.0.0.1:8081) or unix:/path/to.sock
    /// (created 0600).
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// Where requests go: https://host[:port][/base/path] (the request's path and query are
    /// joined to it byte for byte).
    #[arg(long, value_name = "URL")]
    pub(crate) upstream: Option<String>,
    /// Serve Prometheus metrics at /metrics and a health check at /healthz on this address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Listen on an address that is not loopback. A listener on the network lends this
    /// workload's identity to whoever can reach it.
    #[arg(long)]
    pub(crate) allow_remote: bool,
    /// How long requests in flight may take to finish after SIGTERM or SIGINT (`30s`, `2m`).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub(crate) drain_timeout: Duration,
    /// How many threads serve requests, each its own event loop (default: one per core the
    /// process may use, CPU quota included).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) workers: Option<u16>,
}

/// `authwire inspect`.
#[derive(Args)]
pub(crate) struct InspectArgs {
    /// The token, or "-" for stdin.
    pub(crate) token: Option<String>,
}

/// `authwire kube`.
#[derive(Args)]
pub(crate) struct KubeArgs {
    /// Send the OpenID Connect ID token (what Kubernetes' OIDC authenticator checks)
    /// instead of the access token.
    #[arg(long)]
    pub(crate) id_token: bool,
}

/// `authwire git-credential`.
#[derive(Args)]
pub(crate) struct GitArgs {
    /// A host to answer for (`git.example.com`, `127.0.0.1:8080`); repeatable. Other hosts get
    /// no answer, so the next helper in git's list can give one.
    #[arg(long = "host")]
    pub(crate) hosts: Vec<String>,
    /// The username sent with the token (`oauth2` for GitLab, `x-access-token` for GitHub).
    #[arg(long, default_value = "oauth2")]
    pub(crate) username: String,
    /// How to answer `get`: `auto` sends `authtype=Bearer` when git can and the server asks
    /// for Bearer, otherwise username and password.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) authtype: AuthType,
    /// git's action: get, store or erase.
    pub(crate) action: String,
}

/// `authwire login`.
#[derive(Args)]
pub(crate) struct LoginArgs {
    /// Log in through the browser: authorization code + PKCE on a loopback redirect (RFC 8252).
    #[arg(long, conflicts_with = "device")]
    pub(crate) browser: bool,
    /// Log in with the device authorization grant (RFC 8628): a code to enter on another device.
    #[arg(long)]
    pub(crate) device: bool,
    /// With the browser flow: only print the URL (on stderr), do not open a browser.
    #[arg(long)]
    pub(crate) no_open: bool,
    /// OpenID Connect `prompt` for the browser flow (login, consent, select_account).
    #[arg(long)]
    pub(crate) prompt: Option<String>,
    /// OpenID Connect `login_hint` for the browser flow (the account to preselect).
    #[arg(long)]
    pub(crate) login_hint: Option<String>,
    /// How long to wait for the browser or the device approval (`90s`, `5m`).
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub(crate) timeout: Duration,
    /// OpenID Connect `acr_values` for the browser flow: the authentication level to reach
    /// (what an API's step-up challenge asked for, RFC 9470).
    #[arg(long, value_name = "VALUES", conflicts_with = "device")]
    pub(crate) acr_values: Option<String>,
    /// OpenID Connect `max_age` for the browser flow: authenticate again unless the last
    /// authentication is at most this many seconds old.
    #[arg(long, value_name = "SECONDS", conflicts_with = "device")]
    pub(crate) max_age: Option<u64>,
}

/// `authwire curl`.
#[derive(Args)]
pub(crate) struct CurlArgs {
    /// The method [default: GET, or POST with data].
    #[arg(short = 'X', long = "request")]
    pub(crate) method: Option<String>,
    /// A header, "Name: value"; repeatable.
    #[arg(short = 'H', long = "header")]
    pub(crate) headers: Vec<String>,
    /// The request body.
    #[arg(short = 'd', long = "data", conflicts_with = "data_file")]
    pub(crate) data: Option<String>,
    /// A file holding the request body.
    #[arg(long)]
    pub(crate) data_file: Option<PathBuf>,
    /// Print the status line and headers before the body.
    #[arg(short = 'i', long = "include")]
    pub(crate) include: bool,
    /// The URL.
    pub(crate) url: String,
}

/// Which token cache to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CacheKind {
    /// The OS keyring.
    Keyring,
    /// A 0600 file in the cache folder ($AUTHWIRE_CACHE_DIR, else $XDG_CACHE_HOME/authwire, else
    /// the platform's).
    File,
    /// No cache: fetch every time.
    None,
    /// Redis (--redis-url): a fleet shares one token and one refresher.
    Redis,
}

/// How the client authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AuthMethod {
    /// `client_secret_basic`.
    Basic,
    /// `client_secret_post`.
    Post,
    /// `private_key_jwt` (with `--private-key-file`).
    PrivateKeyJwt,
    /// A public client.
    None,
    /// `tls_client_auth` (RFC 8705): the client certificate in --cert (issued by a CA the
    /// server trusts) authenticates the client; tokens are bound to it.
    TlsClientAuth,
    /// `self_signed_tls_client_auth` (RFC 8705): a self-signed --cert registered with the
    /// server authenticates the client; tokens are bound to it.
    SelfSignedTlsClientAuth,
}

/// A cloud platform's own credentials instead of an OAuth2 client (`--credential`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Cloud {
    /// Google Cloud Application Default Credentials (key file, gcloud login, metadata server).
    Gcp,
    /// Azure's default chain (environment, workload identity, managed identity).
    Azure,
}

/// How the git helper answers `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AuthType {
    /// Bearer when git can send it (`capability[]=authtype`) and the server asked for it
    /// (`wwwauth[]` names Bearer); otherwise username and password.
    Auto,
    /// Always username and password (the token as the password).
    Basic,
    /// Always `authtype=Bearer` (git 2.46 or later).
    Bearer,
}

/// A value enum's name on the command line (`private-key-jwt`, `file`).
fn value_name(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_owned())
}

/// `text` as one shell word: as is when it is plain, else in single quotes.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// `90s`, `5m`, `2h`, `1d`, or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 5m or 2h"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_login_command_repeats_the_flags_in_use() {
        let c = Credentials {
            profile: Some("me".into()),
            ..Credentials::default()
        };
        assert_eq!(c.login_command(), "authwire login --profile me");
        let c = Credentials {
            issuer: Some("https://idp.example".into()),
            client_id: Some("cli".into()),
            scope: vec!["openid offline_access".into()],
            cache: Some(CacheKind::File),
            ..Credentials::default()
        };
        assert_eq!(
            c.login_command(),
            "authwire login --issuer https://idp.example --client-id cli --scope 'openid offline_access' --cache file"
        );
    }

    #[test]
    fn durations_take_the_units_the_help_names() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("m").is_err());
    }
}
