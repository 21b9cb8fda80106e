//! `authwire curl URL`: one request with the `Authorization` header added (steps 4 and 5 by
//! the reqwest middleware, scoped to the URL's origin), the body on stdout.

use crate::args::{Credentials, CurlArgs};
use crate::error::{CliError, exit};
use crate::interactive::{self, LoginOptions};
use crate::output::out_bytes;
use crate::settings;
use crate::trace::{self, Trace};
use authwire::{AuthError, StepUpReason, error_chain};

/// Run `authwire curl`.
pub(crate) async fn exec(credentials: &Credentials, args: CurlArgs, trace: &Trace) -> Result<u8, CliError> {
    let s = settings::resolve(credentials).await?;
    let url = url::Url::parse(&args.url)
        .map_err(|e| CliError::config(format!("{} is not a URL: {e}", args.url)))?;
    let origin = url.origin().ascii_serialization();
    let authorizer = s.authorizer();
    let client = client_with(&s, authorizer.clone(), &origin)?;

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
    let request = request_for(&client, &method, &url, &args, body)?;
    // A copy for the one resend after a step-up login (bodies here are bytes: it always clones).
    let again = request.try_clone();

    trace::token(&authorizer, &s, trace).await?;
    trace.step(
        "step 4 prepare",
        "Authorization header prepared once for this token (marked sensitive)",
    );
    let sent = request.send().await;
    let challenge = match &sent {
        Err(reqwest_middleware::Error::Middleware(inner)) => inner
            .downcast_ref::<AuthError>()
            .and_then(AuthError::step_up_challenge)
            .cloned(),
        _ => None,
    };
    let response = match (sent, challenge) {
        (_, Some(challenge)) => {
            // Only an OAuth2 login can answer, and only with a person at the terminal.
            let can_log_in = s.oauth2("login").is_ok() && a_person_is_there();
            if !(challenge.reason == StepUpReason::Authentication && can_log_in) {
                return Err(CliError::step_up(url.as_str(), &challenge, &s.login_command));
            }
            // A person is there: the same login `authwire login` would start, with what the API
            // asked for; then the request once more, with the new token from the cache.
            eprintln!("authwire: {url} asks for a step-up ({challenge}); logging in again");
            let options = LoginOptions {
                browser: true,
                acr_values: challenge.acr_values.clone(),
                max_age: challenge.max_age,
                ..LoginOptions::default()
            };
            interactive::log_in(&s, &options).await?;
            let Some(again) = again else {
                return Err(CliError::step_up(url.as_str(), &challenge, &s.login_command));
            };
            let fresh = client_with(&s, s.authorizer(), &origin)?;
            let again = again.build().map_err(|e| CliError::config(e.to_string()))?;
            fresh
                .execute(again)
                .await
                .map_err(|e| send_error(e, &s, &method, &url))?
        }
        (sent, None) => sent.map_err(|e| send_error(e, &s, &method, &url))?,
    };
    finish(response, &authorizer, &args, &method, &origin, &url, trace).await
}

/// Whether a person can log in here: stdin and stderr are terminals.
fn a_person_is_there() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The reqwest client with the middleware for `origin`, on the settings' network.
fn client_with(
    s: &settings::Settings,
    authorizer: authwire::Authorizer,
    origin: &str,
) -> Result<reqwest_middleware::ClientWithMiddleware, CliError> {
    let middleware = authwire_reqwest::AuthMiddleware::builder(authorizer)
        .origin(origin.to_owned())
        .allow_insecure_http(s.allow_insecure_http)
        .build()
        .map_err(|e| CliError::config(e.to_string()))?;
    // The API is reached through the same network settings as the identity provider (and
    // presents the same client certificate: a certificate-bound token needs it, RFC 8705).
    let http = s
        .transport
        .reqwest_client_builder(concat!("authwire/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| CliError::config(e.to_string()))?
        .build()
        .map_err(|e| CliError::config(format!("HTTP client: {}", error_chain(&e))))?;
    Ok(reqwest_middleware::ClientBuilder::new(http)
        .with(middleware)
        .build())
}

/// The request the arguments describe.
fn request_for(
    client: &reqwest_middleware::ClientWithMiddleware,
    method: &reqwest::Method,
    url: &url::Url,
    args: &CurlArgs,
    body: Option<Vec<u8>>,
) -> Result<reqwest_middleware::RequestBuilder, CliError> {
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
    Ok(request)
}

/// What a failed send means for the user.
fn send_error(
    e: reqwest_middleware::Error,
    s: &settings::Settings,
    method: &reqwest::Method,
    url: &url::Url,
) -> CliError {
    match e {
        reqwest_middleware::Error::Middleware(inner) => match inner.downcast_ref::<AuthError>() {
            Some(auth) => match auth.step_up_challenge() {
                Some(challenge) => CliError::step_up(url.as_str(), challenge, &s.login_command),
                None => CliError::auth(auth, s),
            },
            None => CliError::network(inner.to_string()),
        },
        reqwest_middleware::Error::Reqwest(e) => match crate::error::transport_failure(&e, url.as_str()) {
            Some(line) => CliError::network(line),
            None => CliError::network(format!("{method} {}: {}", url, error_chain(&e))),
        },
    }
}

/// Step 5's report, and the answer printed.
async fn finish(
    response: reqwest::Response,
    authorizer: &authwire::Authorizer,
    args: &CurlArgs,
    method: &reqwest::Method,
    origin: &str,
    url: &url::Url,
    trace: &Trace,
) -> Result<u8, CliError> {
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
    let bytes = response
        .bytes()
        .await
        .map_err(|e| CliError::network(format!("reading the answer: {}", error_chain(&e))))?;
    let mut all = head.into_bytes();
    all.extend_from_slice(&bytes);
    out_bytes(&all)?;
    if status.is_client_error() || status.is_server_error() {
        eprintln!("authwire: {} answered {status}", url);
        return Ok(exit::HTTP);
    }
    Ok(0)
}
