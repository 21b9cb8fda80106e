//! `authwire curl URL`: one request with the `Authorization` header added (steps 4 and 5 by
//! the reqwest middleware, scoped to the URL's origin), the body on stdout.

use crate::args::{Credentials, CurlArgs};
use crate::error::{CliError, exit};
use crate::output::out_bytes;
use crate::settings;
use crate::trace::{self, Trace};
use authwire::{AuthError, error_chain};

/// Run `authwire curl`.
pub(crate) async fn exec(credentials: &Credentials, args: CurlArgs, trace: &Trace) -> Result<u8, CliError> {
    let s = settings::resolve(credentials, false).await?;
    let url = url::Url::parse(&args.url)
        .map_err(|e| CliError::config(format!("{} is not a URL: {e}", args.url)))?;
    let origin = url.origin().ascii_serialization();
    let authorizer = s.authorizer();
    let middleware = authwire_reqwest::AuthMiddleware::builder(authorizer.clone())
        .origin(origin.clone())
        .allow_insecure_http(s.allow_insecure_http)
        .build()
        .map_err(|e| CliError::config(e.to_string()))?;
    // The API is reached through the same network settings as the identity provider.
    let http = s
        .transport
        .reqwest_client_builder(concat!("authwire/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| CliError::config(e.to_string()))?
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

    trace::token(&authorizer, &s, trace).await?;
    trace.step(
        "step 4 prepare",
        "Authorization header prepared once for this token (marked sensitive)",
    );
    let response = request.send().await.map_err(|e| match e {
        reqwest_middleware::Error::Middleware(inner) => match inner.downcast_ref::<AuthError>() {
            Some(auth) => CliError::auth(auth, &s),
            None => CliError::network(inner.to_string()),
        },
        reqwest_middleware::Error::Reqwest(e) => match crate::error::transport_failure(&e, url.as_str()) {
            Some(line) => CliError::network(line),
            None => CliError::network(format!("{method} {}: {}", url, error_chain(&e))),
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
