//! `authwire proxy`: the sidecar. Resolves each route's settings (the flags, or each
//! `[[proxy.route]]`'s profile) into an `Authorizer` and a transport, and hands them to
//! `authwire-proxy`; everything else (listening, forwarding, judging, draining) is that
//! crate's.

use crate::args::{Credentials, ProxyArgs};
use crate::error::CliError;
use crate::settings::{self, RouteConfig};
use authwire_proxy::{Listen, Proxy, Route};

/// Run `authwire proxy` until SIGTERM or SIGINT; exit 0 once drained.
pub(crate) async fn exec(credentials: &Credentials, args: ProxyArgs) -> Result<u8, CliError> {
    let configs = match (&args.listen, &args.upstream) {
        (Some(listen), Some(upstream)) => vec![(
            "default".to_owned(),
            RouteConfig {
                listen: listen.clone(),
                upstream: upstream.clone(),
                profile: String::new(),
                allow_remote: false,
            },
            credentials.clone(),
        )],
        (None, None) => {
            let (path, routes) = settings::proxy_routes()?;
            if routes.is_empty() {
                return Err(CliError::config(format!(
                    "nothing to serve: pass --listen and --upstream, or add [[proxy.route]] tables to {}",
                    path.display()
                )));
            }
            routes
                .into_iter()
                .map(|r| {
                    // The route's profile, with the command line's flags over it.
                    let c = Credentials {
                        profile: Some(r.profile.clone()),
                        ..credentials.clone()
                    };
                    (r.profile.clone(), r, c)
                })
                .collect()
        }
        _ => return Err(CliError::config("--listen and --upstream go together")),
    };
    let mut builder = Proxy::builder().drain_timeout(args.drain_timeout);
    if let Some(addr) = args.metrics {
        builder = builder.metrics(addr);
    }
    if let Some(workers) = args.workers {
        builder = builder.workers(usize::from(workers));
    }
    let mut names = std::collections::HashSet::new();
    for (name, config, c) in configs {
        let s = settings::resolve(&c).await?;
        let name = if names.insert(name.clone()) {
            name
        } else {
            format!("{name}-{}", names.len())
        };
        let listen: Listen = config
            .listen
            .parse()
            .map_err(|e| CliError::config(format!("{e}")))?;
        let route = Route::new(name, listen, &config.upstream, s.serving_authorizer())
            .map_err(|e| CliError::config(e.to_string()))?
            .transport(s.transport.clone())
            .allow_remote(args.allow_remote || config.allow_remote)
            .allow_insecure_http(s.allow_insecure_http);
        builder = builder.route(route);
    }
    let running = builder
        .start()
        .await
        .map_err(|e| CliError::config(e.to_string()))?;
    for (name, bound) in running.bound() {
        let at = match bound {
            authwire_proxy::Bound::Tcp(addr) => format!("http://{addr}"),
            authwire_proxy::Bound::Unix(path) => format!("unix:{}", path.display()),
        };
        eprintln!("authwire: proxy route {name} listening on {at}");
    }
    if let Some(addr) = running.metrics_addr() {
        eprintln!("authwire: metrics at http://{addr}/metrics");
    }
    let drained = running.run_until_signal().await;
    eprintln!(
        "authwire: proxy stopped{}",
        if drained {
            ""
        } else {
            " (the drain timeout closed requests still in flight)"
        }
    );
    Ok(0)
}
