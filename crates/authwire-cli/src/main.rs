//! `authwire`: tokens and authorized requests from a terminal.
//!
//! ```text
//! authwire token                      # the access token, alone on stdout
//! authwire header                     # Authorization: Bearer ...
//! authwire curl https://api/v1/x      # the request, with the header added
//! authwire login / logout             # browser (PKCE) or device login; logout revokes
//! authwire inspect [TOKEN|-]          # a JWT's header and claims, its expiry in human time
//! ```
//!
//! See docs/cli.md for every option and an example session.

#![allow(clippy::print_stdout)]

mod browser;
mod helpers;
mod settings;

use authwire::secrecy::ExposeSecret;
use authwire::{AuthError, Authorizer, Token, TokenState, error_chain};
use clap::{Args, CommandFactory, Parser, Subcommand};
use settings::{AuthMethod, CacheKind, SECRET_ENV, Settings};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exit codes, for scripts.
mod exit {
    /// A configuration or input problem.
    pub(crate) const CONFIG: u8 = 1;
    /// No token could be had (the identity provider refused, or could not be reached).
    pub(crate) const AUTH: u8 = 3;
    /// `curl`: the request could not be sent or its answer read.
    pub(crate) const NETWORK: u8 = 4;
    /// `curl`: the server answered with an HTTP error (as `curl -f` does).
    pub(crate) const HTTP: u8 = 22;
    /// `inspect`: the token has expired (scripts use `inspect` as a check).
    pub(crate) const EXPIRED: u8 = 5;
}

#[derive(Parser)]
#[command(name = "authwire", version, about = "Tokens and authorized requests from a terminal", long_about = None)]
struct Cli {
    #[command(flatten)]
    credentials: Credentials,

    /// Trace the pipeline's five steps on stderr, with timings (never with secrets).
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

/// Where tokens come from. Flags override the profile. The client secret is read from
/// AUTHWIRE_CLIENT_SECRET or --client-secret-file, never from the command line.
#[derive(Args, Default)]
struct Credentials {
    /// A profile from $XDG_CONFIG_HOME/authwire/config.toml.
    #[arg(long, global = true)]
    profile: Option<String>,
    /// The issuer URL (endpoints found by discovery).
    #[arg(long, global = true)]
    issuer: Option<String>,
    /// The token endpoint URL.
    #[arg(long, global = true)]
    token_url: Option<String>,
    /// The client id.
    #[arg(long, global = true)]
    client_id: Option<String>,
    /// A file holding the client secret (instead of AUTHWIRE_CLIENT_SECRET).
    #[arg(long, global = true)]
    client_secret_file: Option<PathBuf>,
    /// A scope to ask for; repeatable, or space-delimited.
    #[arg(long, global = true)]
    scope: Vec<String>,
    /// The audience to ask for.
    #[arg(long, global = true)]
    audience: Option<String>,
    /// A resource indicator (RFC 8707); repeatable.
    #[arg(long, global = true)]
    resource: Vec<String>,
    /// How the client authenticates.
    #[arg(long, global = true, value_enum)]
    auth_method: Option<AuthMethod>,
    /// The private key (PEM) for --auth-method private-key-jwt.
    #[arg(long, global = true)]
    private_key_file: Option<PathBuf>,
    /// Where tokens are cached [default: keyring where available, else file].
    #[arg(long, global = true, value_enum)]
    cache: Option<CacheKind>,
    /// Allow plain http to hosts that are not loopback (tokens cross the network readable).
    #[arg(long, global = true)]
    allow_insecure_http: bool,
    /// Bind tokens to a DPoP key (RFC 9449), kept in the cache beside them; requests made with
    /// `curl` then carry a proof each.
    #[arg(long, global = true)]
    dpop: bool,
    /// The authorization endpoint, for `login --browser` [default: from discovery].
    #[arg(long, global = true)]
    authorization_url: Option<String>,
    /// The revocation endpoint (RFC 7009), for `logout` [default: from discovery].
    #[arg(long, global = true)]
    revocation_url: Option<String>,
    /// Use the cloud platform's own credentials instead of an OAuth2 client: `gcp`
    /// (Application Default Credentials) or `azure` (environment, workload identity, managed
    /// identity). No client id or secret needed.
    #[arg(long, global = true, value_enum)]
    credential: Option<settings::Cloud>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the access token alone on stdout.
    Token {
        /// Print {"access_token","token_type","expires_at","scope"} instead.
        #[arg(long)]
        json: bool,
        /// Refresh first if the token has less than this left (`90s`, `5m`, `2h`, or seconds).
        #[arg(long, value_parser = parse_duration)]
        min_ttl: Option<std::time::Duration>,
    },
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
    Inspect {
        /// The token, or "-" for stdin.
        token: Option<String>,
    },
    /// kubectl's exec credential plugin: print an ExecCredential (client.authentication.k8s.io)
    /// with the token and its expiry. Logs in only when kubectl says a person is there.
    Kube {
        /// Send the OpenID Connect ID token (what Kubernetes' OIDC authenticator checks)
        /// instead of the access token.
        #[arg(long)]
        id_token: bool,
    },
    /// git's credential helper (gitcredentials(7)): `get` answers for the configured hosts,
    /// `erase` forgets a rejected token, `store` is ignored.
    GitCredential(GitArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
struct GitArgs {
    /// A host to answer for (`git.example.com`, `127.0.0.1:8080`); repeatable. Other hosts get
    /// no answer, so the next helper in git's list can give one.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// The username sent with the token (`oauth2` for GitLab, `x-access-token` for GitHub).
    #[arg(long, default_value = "oauth2")]
    username: String,
    /// How to answer `get`: `auto` sends `authtype=Bearer` when git can and the server asks
    /// for Bearer, otherwise username and password.
    #[arg(long, value_enum, default_value = "auto")]
    authtype: helpers::AuthType,
    /// git's action: get, store or erase.
    action: String,
}

#[derive(Args)]
struct LoginArgs {
    /// Log in through the browser: authorization code + PKCE on a loopback redirect (RFC 8252).
    #[arg(long, conflicts_with = "device")]
    browser: bool,
    /// Log in with the device authorization grant (RFC 8628): a code to enter on another device.
    #[arg(long)]
    device: bool,
    /// With the browser flow: only print the URL (on stderr), do not open a browser.
    #[arg(long)]
    no_open: bool,
    /// OpenID Connect `prompt` for the browser flow (login, consent, select_account).
    #[arg(long)]
    prompt: Option<String>,
    /// OpenID Connect `login_hint` for the browser flow (the account to preselect).
    #[arg(long)]
    login_hint: Option<String>,
    /// How long to wait for the browser or the device approval (`90s`, `5m`).
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    timeout: Duration,
}

impl LoginArgs {
    /// What a helper uses when it must log a person in: the default choice, 5 minutes.
    fn interactive() -> Self {
        Self {
            browser: false,
            device: false,
            no_open: false,
            prompt: None,
            login_hint: None,
            timeout: Duration::from_secs(300),
        }
    }
}

impl Credentials {
    /// The settings of one profile, with no flag overriding them.
    fn for_profile(name: &str) -> Self {
        Self {
            profile: Some(name.to_owned()),
            ..Self::default()
        }
    }
}

#[derive(Args)]
struct CurlArgs {
    /// The method [default: GET, or POST with data].
    #[arg(short = 'X', long = "request")]
    method: Option<String>,
    /// A header, "Name: value"; repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// The request body.
    #[arg(short = 'd', long = "data", conflicts_with = "data_file")]
    data: Option<String>,
    /// A file holding the request body.
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// Print the status line and headers before the body.
    #[arg(short = 'i', long = "include")]
    include: bool,
    /// The URL.
    url: String,
}

/// An error for the user: one line, the cause and the fix.
struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    fn config(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: exit::CONFIG,
        }
    }

    fn auth(e: &AuthError, endpoint: &str) -> Self {
        let hint = match e.provider_error().and_then(|p| p.error_code()) {
            Some("invalid_client") => format!("check --client-id and {SECRET_ENV} (or --client-secret-file)"),
            Some("login_required") => {
                format!(
                    "run `authwire login`, or give a client secret ({SECRET_ENV} or --client-secret-file)"
                )
            }
            Some("invalid_grant") => {
                "the stored login expired or was revoked: run `authwire login` again".into()
            }
            Some("invalid_scope") => "check --scope".into(),
            Some("access_denied") => {
                "the login was refused at the identity provider; run `authwire login` to try again".into()
            }
            _ if e.is_transient() => format!("is the identity provider at {endpoint} up? try again later"),
            _ => format!("check the identity provider settings (--issuer / --token-url {endpoint})"),
        };
        let what = error_chain(e);
        let what = what.strip_prefix("no valid token: ").unwrap_or(&what).to_owned();
        Self {
            message: format!("{what} (from {endpoint}); {hint}"),
            code: exit::AUTH,
        }
    }
}

/// The -v trace: numbered pipeline steps with the time since start, on stderr.
struct Trace {
    on: bool,
    start: SystemTime,
}

impl Trace {
    fn step(&self, step: &str, what: &str) {
        if self.on {
            let now = authwire::Clock::now(&authwire::SystemClock);
            let ms = now.duration_since(self.start).unwrap_or_default().as_secs_f64() * 1000.0;
            eprintln!("authwire: [{ms:8.1} ms] {step}: {what}");
        }
    }
}

fn main() -> ExitCode {
    // Installed as `docker-credential-authwire` (a link to this binary), speak docker's protocol.
    let args: Vec<String> = std::env::args().collect();
    if args.first().is_some_and(|a| {
        std::path::Path::new(a)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("docker-credential-"))
    }) {
        return helpers::docker_main(&args);
    }
    let cli = Cli::parse();
    if cli.verbose {
        // The library's own events (refresh started, refreshed, failed): never a secret.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(tracing::Level::DEBUG)
            .with_target(false)
            .without_time()
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("authwire: cannot start: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let trace = Trace {
        on: cli.verbose,
        start: authwire::Clock::now(&authwire::SystemClock),
    };
    match runtime.block_on(run(cli, &trace)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("authwire: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

async fn run(cli: Cli, trace: &Trace) -> Result<u8, CliError> {
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "authwire", &mut std::io::stdout());
            Ok(0)
        }
        Command::Inspect { token: Some(t) } => inspect(&read_token_arg(&t).await?),
        Command::Inspect { token: None } => {
            let s = settings::resolve(&cli.credentials, false).await?;
            let token = current_token(&s, trace).await?;
            inspect_with_key(token.access_token().expose_secret(), s.dpop_key.as_ref())
        }
        Command::Token { json, min_ttl } => {
            let s = settings::resolve(&cli.credentials, false).await?;
            let authorizer = settings::authorizer(&s);
            let mut token = get_token(&authorizer, &s, trace).await?;
            if let Some(min) = min_ttl
                && time_left(&token) < min
            {
                // Less than asked for: forget the cached token (bearer or DPoP-bound) and fetch
                // a new one.
                authorizer.invalidate_token(&token);
                trace.step(
                    "step 2 refresh",
                    &format!("less than --min-ttl {min:?} left: refreshing first"),
                );
                token = get_token(&authorizer, &s, trace).await?;
                if time_left(&token) < min {
                    eprintln!(
                        "authwire: the new token lives less than --min-ttl {min:?}: the identity provider issues shorter ones"
                    );
                }
            }
            print_token(&token, json)
        }
        Command::Header => {
            let s = settings::resolve(&cli.credentials, false).await?;
            let authorizer = settings::authorizer(&s);
            get_token(&authorizer, &s, trace).await?;
            let header = authorizer
                .authorization_header()
                .await
                .map_err(|e| CliError::auth(&e, &s.endpoint))?;
            trace.step(
                "step 4 prepare",
                "Authorization header prepared (marked sensitive)",
            );
            let value = header
                .to_str()
                .map_err(|_| CliError::config("the header is not printable"))?;
            out(&format!("Authorization: {value}\n"))
        }
        Command::Curl(args) => {
            let s = settings::resolve(&cli.credentials, false).await?;
            curl(&s, args, trace).await
        }
        Command::Login(args) => {
            let s = settings::resolve(&cli.credentials, true).await?;
            login(&s, &args).await
        }
        Command::Logout => {
            let s = settings::resolve(&cli.credentials, false).await?;
            logout(&s).await
        }
        Command::Kube { id_token } => helpers::kube(&cli.credentials, id_token).await,
        Command::GitCredential(g) => {
            helpers::git(&cli.credentials, &g.action, &g.hosts, &g.username, g.authtype).await
        }
    }
}

fn out(text: &str) -> Result<u8, CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::config(format!("cannot write to stdout: {e}")))?;
    Ok(0)
}

/// Steps 1-3 with the trace.
async fn get_token(
    authorizer: &Authorizer,
    s: &Settings,
    trace: &Trace,
) -> Result<std::sync::Arc<Token>, CliError> {
    let cache = s.store.as_ref().map_or("no cache", |(_, d)| d.as_str());
    let state = match authorizer.state() {
        TokenState::Missing => "no token in memory (a new process); the refresh reads the cache first",
        TokenState::Fresh { .. } => "the token in memory is fresh",
        TokenState::RefreshDue { .. } => "the token in memory is due for refresh",
        TokenState::Expired => "the token in memory expired",
        _ => "unknown",
    };
    trace.step("step 1 check", &format!("{state} ({cache})"));
    let token = authorizer
        .token()
        .await
        .map_err(|e| CliError::auth(&e, &s.endpoint))?;
    let m = authorizer.metrics();
    let how = if m.store_hits > 0 {
        format!("cache hit in the {cache}: no request to the identity provider")
    } else if m.fetches > 0 {
        format!("fetched a new token from {}", s.endpoint)
    } else {
        "served from memory".into()
    };
    trace.step("step 2 refresh", &how);
    let expiry = token
        .expires_at()
        .map_or_else(|| "no known expiry".to_owned(), human_expiry);
    trace.step(
        "step 3 retrieve",
        &format!(
            "{} token, {} bytes, {expiry}",
            token.token_type().scheme(),
            token.access_token().expose_secret().len()
        ),
    );
    Ok(token)
}

async fn current_token(s: &Settings, trace: &Trace) -> Result<std::sync::Arc<Token>, CliError> {
    get_token(&settings::authorizer(s), s, trace).await
}

/// How long `token` has left (a token without a known expiry never counts as too short).
fn time_left(token: &Token) -> std::time::Duration {
    let now = authwire::Clock::now(&authwire::SystemClock);
    token.expires_at().map_or(std::time::Duration::MAX, |exp| {
        exp.duration_since(now).unwrap_or_default()
    })
}

/// `90s`, `5m`, `2h`, `1d`, or plain seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
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
    Ok(std::time::Duration::from_secs(n.saturating_mul(seconds)))
}

fn print_token(token: &Token, json: bool) -> Result<u8, CliError> {
    if !json {
        return out(&format!("{}\n", token.access_token().expose_secret()));
    }
    let body = serde_json::json!({
        "access_token": token.access_token().expose_secret(),
        "token_type": token.token_type().scheme(),
        "expires_at": token.expires_at().map(rfc3339),
        "scope": token.scope(),
    });
    out(&format!("{body}\n"))
}

async fn read_token_arg(arg: &str) -> Result<String, CliError> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    use tokio::io::AsyncReadExt;
    let mut s = String::new();
    tokio::io::stdin()
        .take(authwire_jwt::MAX_TOKEN_BYTES as u64 + 1)
        .read_to_string(&mut s)
        .await
        .map_err(|e| CliError::config(format!("cannot read the token from stdin: {e}")))?;
    Ok(s.trim().to_owned())
}

fn inspect(token: &str) -> Result<u8, CliError> {
    inspect_with_key(token, None)
}

/// Show a token's claims; for a DPoP-bound one, its `cnf.jkt` and whether this client's key is
/// the one it is bound to.
fn inspect_with_key(token: &str, key: Option<&authwire_oauth2::DpopKey>) -> Result<u8, CliError> {
    let claims =
        authwire_jwt::inspect(token).map_err(|e| CliError::config(format!("cannot inspect: {e}")))?;
    let pretty = |v: &serde_json::Map<String, serde_json::Value>| {
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into())
    };
    let mut text = format!(
        "header: {}\nclaims: {}\n",
        pretty(claims.header()),
        pretty(claims.all())
    );
    if let Some(exp) = claims.expires_at() {
        text.push_str(&format!("expires: {} ({})\n", rfc3339(exp), human_expiry(exp)));
    }
    if let Some(jkt) = claims
        .all()
        .get("cnf")
        .and_then(|c| c.get("jkt"))
        .and_then(|j| j.as_str())
    {
        let verdict = match key {
            Some(k) if k.thumbprint() == jkt => "matches this client's DPoP key",
            Some(_) => "does NOT match this client's DPoP key",
            None => "DPoP-bound; pass --dpop to compare with this client's key",
        };
        text.push_str(&format!("cnf.jkt: {jkt} ({verdict})\n"));
    }
    text.push_str("(not verified: inspect reads a token, it does not check its signature)\n");
    let printed = out(&text)?;
    if claims
        .expires_at()
        .is_some_and(|exp| exp <= authwire::Clock::now(&authwire::SystemClock))
    {
        eprintln!("authwire: the token has expired");
        return Ok(exit::EXPIRED);
    }
    Ok(printed)
}

/// Which way to log in: what the user asked for, else the browser when one can be opened here
/// and the server has an authorization endpoint, else the device flow.
async fn use_browser(s: &Settings, args: &LoginArgs) -> bool {
    if args.browser || args.device {
        return args.browser;
    }
    let can_open = args.no_open || browser::available();
    let Ok(provider) = s.oauth2("login") else {
        return false;
    };
    can_open && provider.authorization_endpoint().await.is_ok()
}

async fn login(s: &Settings, args: &LoginArgs) -> Result<u8, CliError> {
    let Some((store, description)) = &s.store else {
        return Err(CliError::config(
            "login needs a cache to keep the refresh token in (not --cache none)",
        ));
    };
    let provider = s.oauth2("login")?;
    let token = if use_browser(s, args).await {
        let mut options = authwire_oauth2::BrowserLogin::new().timeout(args.timeout);
        if let Some(p) = &args.prompt {
            options = options.prompt(p);
        }
        if let Some(h) = &args.login_hint {
            options = options.login_hint(h);
        }
        // The URL carries no secret (state and the PKCE challenge are single-use and public);
        // the code comes back to our listener, never to the terminal.
        provider
            .browser_login_with(&options, |url| {
                eprintln!("authwire: to log in, open this URL in a browser:\n\n    {url}\n");
                if !args.no_open {
                    match browser::open(url.as_str()) {
                        Ok(how) => eprintln!("authwire: opened it with {how}"),
                        Err(why) => {
                            eprintln!("authwire: could not open a browser ({why}); open the URL yourself")
                        }
                    }
                }
                eprintln!(
                    "authwire: waiting for the browser to come back (up to {})...",
                    human_duration(args.timeout)
                );
            })
            .await
    } else {
        provider
            .device_login(|p| {
                let url = p
                    .verification_uri_complete
                    .as_deref()
                    .unwrap_or(&p.verification_uri);
                eprintln!("authwire: open {url} and enter the code {}", p.user_code);
                eprintln!(
                    "authwire: waiting for approval (the code expires in {})...",
                    human_duration(p.expires_in)
                );
            })
            .await
    }
    .map_err(|e| CliError::auth(&AuthError::Refresh(e), &s.endpoint))?;
    let key = s.cache_key();
    store
        .save(&key, &token)
        .await
        .map_err(|e| CliError::config(error_chain(&e)))?;
    let refresh = if token.refresh_token().is_some() {
        "with a refresh token"
    } else {
        "without a refresh token"
    };
    eprintln!("authwire: logged in; token cached {refresh} in the {description}");
    Ok(0)
}

/// Revoke the cached refresh token at the server (RFC 7009), then delete exactly the entries
/// `authwire token` with the same flags uses. A failed revocation is reported (exit 3) and the
/// local copy is deleted anyway.
async fn logout(s: &Settings) -> Result<u8, CliError> {
    let Some((store, description)) = &s.store else {
        return Err(CliError::config("there is no cache to log out of (--cache none)"));
    };
    let token_key = s.cache_key();
    let mut keys = vec![token_key.clone()];
    if s.dpop_key.is_some() {
        keys.push(settings::dpop_key_entry(&s.endpoint, &s.client_id));
    }
    let mut revocation_failed = false;
    if let Ok(Some(token)) = store.load(&token_key).await
        && token.refresh_token().is_some()
        && let Some(provider) = &s.oauth2
    {
        match provider.revoke(&token).await {
            Ok(()) => eprintln!("authwire: the refresh token was revoked at the server"),
            Err(e) => {
                revocation_failed = true;
                let what = error_chain(&e);
                let hint = if what.contains("no revocation endpoint") {
                    "pass --revocation-url"
                } else {
                    "it may stay valid at the server until it expires"
                };
                eprintln!("authwire: the refresh token was NOT revoked at the server: {what}; {hint}");
            }
        }
    }
    let mut removed = 0;
    for key in &keys {
        let there = store.load(key).await.map(|t| t.is_some()).unwrap_or(true);
        store
            .delete(key)
            .await
            .map_err(|e| CliError::config(error_chain(&e)))?;
        removed += usize::from(there);
    }
    match removed {
        0 => eprintln!(
            "authwire: nothing to log out of: no cached token for these settings in the {description}"
        ),
        1 => eprintln!("authwire: logged out; the cached token was removed from the {description}"),
        _ => eprintln!(
            "authwire: logged out; the cached token and its DPoP key were removed from the {description}"
        ),
    }
    Ok(if revocation_failed { exit::AUTH } else { 0 })
}

async fn curl(s: &Settings, args: CurlArgs, trace: &Trace) -> Result<u8, CliError> {
    let url = url::Url::parse(&args.url)
        .map_err(|e| CliError::config(format!("{} is not a URL: {e}", args.url)))?;
    let origin = url.origin().ascii_serialization();
    let authorizer = settings::authorizer(s);
    let middleware = authwire_reqwest::AuthMiddleware::builder(authorizer.clone())
        .origin(origin.clone())
        .allow_insecure_http(s.allow_insecure_http)
        .build()
        .map_err(|e| CliError::config(e.to_string()))?;
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| CliError::config(format!("HTTP client: {}", error_chain(&e))))?;
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(middleware)
        .build();

    let body = match (&args.data, &args.data_file) {
        (Some(d), _) => Some(d.clone().into_bytes()),
        (None, Some(path)) => Some(
            tokio::fs::read(path)
                .await
                .map_err(|e| CliError::config(format!("cannot read {}: {e}", path.display())))?,
        ),
        (None, None) => None,
    };
    let method = args.method.clone().unwrap_or_else(|| {
        if body.is_some() {
            "POST".into()
        } else {
            "GET".into()
        }
    });
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| CliError::config(format!("{method:?} is not an HTTP method")))?;
    let mut request = client.request(method.clone(), url.clone());
    let mut has_content_type = false;
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| CliError::config(format!("header {h:?} is not \"Name: value\"")))?;
        has_content_type |= name.trim().eq_ignore_ascii_case("content-type");
        request = request.header(name.trim(), value.trim());
    }
    if let Some(b) = body {
        if !has_content_type {
            request = request.header("content-type", "application/x-www-form-urlencoded");
        }
        request = request.body(b);
    }

    get_token(&authorizer, s, trace).await?;
    trace.step(
        "step 4 prepare",
        "Authorization header prepared once for this token (marked sensitive)",
    );
    let response = request.send().await.map_err(|e| match e {
        reqwest_middleware::Error::Middleware(inner) => match inner.downcast_ref::<AuthError>() {
            Some(auth) => CliError::auth(auth, &s.endpoint),
            None => CliError {
                message: inner.to_string(),
                code: exit::NETWORK,
            },
        },
        reqwest_middleware::Error::Reqwest(e) => CliError {
            message: format!("{method} {}: {}", url, error_chain(&e)),
            code: exit::NETWORK,
        },
    })?;
    let retried = authorizer.metrics().invalidations > 0;
    trace.step(
        "step 5 update",
        &format!(
            "header added to {method} {origin}; answered {}{}",
            response.status().as_u16(),
            if retried {
                " (after one refresh and retry: the first token was rejected)"
            } else {
                ""
            }
        ),
    );
    let status = response.status();
    let mut head = String::new();
    if args.include {
        head.push_str(&format!("{:?} {}\n", response.version(), status));
        for (name, value) in response.headers() {
            head.push_str(&format!("{}: {}\n", name, value.to_str().unwrap_or("<binary>")));
        }
        head.push('\n');
    }
    let bytes = response.bytes().await.map_err(|e| CliError {
        message: format!("reading the answer: {}", error_chain(&e)),
        code: exit::NETWORK,
    })?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(head.as_bytes())
        .and_then(|()| stdout.write_all(&bytes))
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::config(format!("cannot write to stdout: {e}")))?;
    if status.is_client_error() || status.is_server_error() {
        eprintln!("authwire: {} answered {status}", url);
        return Ok(exit::HTTP);
    }
    Ok(0)
}

/// "expires in 4m12s" / "expired 3m ago".
fn human_expiry(at: SystemTime) -> String {
    let now = authwire::Clock::now(&authwire::SystemClock);
    match at.duration_since(now) {
        Ok(left) => format!("expires in {}", human_duration(left)),
        Err(past) => format!("expired {} ago", human_duration(past.duration())),
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// RFC 3339 in UTC, to the second.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations_read_like_a_person_would_write_them() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
            "2030-03-17T17:46:40Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(human_duration(Duration::from_secs(252)), "4m12s");
        assert_eq!(human_duration(Duration::from_secs(7260)), "2h01m");
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
