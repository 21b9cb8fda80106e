//! `cargo xtask idp`: the testkit's identity provider and protected API on loopback, until
//! Ctrl-C, with ready-to-paste `authwire` commands for each grant. Something to try the CLI and
//! the library on without an identity provider of your own.
//!
//! ```text
//! cargo xtask idp                # issuer on 127.0.0.1:9400, API on 127.0.0.1:9401
//! cargo xtask idp --port 19400   # issuer on 19400, API on 19401
//! ```
//!
//! Not for anything but trying things: it approves every login at once, and its clients and
//! secrets are published in the source.

#![allow(clippy::print_stdout)]

use authwire_testkit::{Client, IdentityServer, ResourceServer, Settings};
use std::net::SocketAddr;
use std::process::ExitCode;

/// The issuer's port unless `--port` says otherwise; the API listens on the next one.
const DEFAULT_PORT: u16 = 9400;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let port = match parse_port(std::env::args().skip(1)) {
        Ok(Some(p)) => p,
        Ok(None) => return ExitCode::SUCCESS, // --help
        Err(e) => {
            eprintln!("authwire-idp: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(api_port) = port.checked_add(1) else {
        eprintln!("authwire-idp: --port must leave room for the API on the next port");
        return ExitCode::from(2);
    };
    let idp = IdentityServer::builder()
        .settings(Settings {
            // No person is there to approve a device code: approve it at once.
            auto_approve_devices: true,
            ..Settings::default()
        })
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .try_start()
        .await;
    let idp = match idp {
        Ok(idp) => idp,
        Err(e) => {
            eprintln!("authwire-idp: cannot listen on 127.0.0.1:{port}: {e} (pass --port N for another)");
            return ExitCode::FAILURE;
        }
    };
    let api = match ResourceServer::try_start_on(&idp, SocketAddr::from(([127, 0, 0, 1], api_port))).await {
        Ok(api) => api,
        Err(e) => {
            eprintln!("authwire-idp: cannot listen on 127.0.0.1:{api_port}: {e} (pass --port N for another)");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", instructions(&idp.issuer(), &api.url()));
    println!("\n# serving until Ctrl-C");
    let _ = tokio::signal::ctrl_c().await;
    println!("# stopped");
    ExitCode::SUCCESS
}

/// `--port N`, or `None` for `--help` (printed here).
fn parse_port(mut args: impl Iterator<Item = String>) -> Result<Option<u16>, String> {
    let mut port = DEFAULT_PORT;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!(
                    "authwire-idp: a loopback identity provider and protected API to try authwire on\n\n\
                     Usage: cargo xtask idp [--port N]   (issuer on 127.0.0.1:N, API on N+1; default {DEFAULT_PORT})"
                );
                return Ok(None);
            }
            "--port" => {
                let value = args.next().ok_or("--port needs a number")?;
                port = value
                    .parse()
                    .map_err(|_| format!("--port {value:?} is not a port number"))?;
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(Some(port))
}

/// What to paste: the issuer first, then the API, then one complete command per line for each
/// grant, then a profile.
fn instructions(issuer: &str, api: &str) -> String {
    let secret = format!("AUTHWIRE_CLIENT_SECRET='{}'", Client::CONFIDENTIAL_SECRET);
    let service = format!(
        "--issuer {issuer} --client-id {} --cache file",
        Client::CONFIDENTIAL_ID
    );
    let person = format!("--issuer {issuer} --client-id {} --cache file", Client::PUBLIC_ID);
    format!(
        "issuer {issuer} (discovery: {issuer}/.well-known/openid-configuration)\n\
         api {api}/v1/items (200 with a valid token from this issuer, 401 without)\n\
         \n\
         # client credentials: a service's own token (a confidential client, its secret in the environment)\n\
         {secret} authwire token {service}\n\
         {secret} authwire curl {service} -i {api}/v1/items\n\
         # device flow: a person logs in with a code (this server approves it at once)\n\
         authwire login --device {person}\n\
         # browser login: authorization code with PKCE (this server approves at once; open the URL it prints)\n\
         authwire login --browser --no-open {person}\n\
         # refresh: after a login, asking for more time than the token has left redeems the refresh token\n\
         authwire token -v --min-ttl 2h {person}\n\
         authwire logout {person}\n\
         \n\
         # a profile to copy into ~/.config/authwire/config.toml, then: authwire token --profile local\n\
         [profiles.local]\n\
         issuer = \"{issuer}\"\n\
         client_id = \"{}\"\n\
         cache = \"file\"\n",
        Client::PUBLIC_ID
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_comes_first_then_the_api_then_commands() {
        let text = instructions("http://127.0.0.1:9400", "http://127.0.0.1:9401");
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("issuer http://127.0.0.1:9400 "));
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("api http://127.0.0.1:9401/v1/items ")
        );
        let commands: Vec<&str> = text.lines().filter(|l| l.contains("authwire ")).collect();
        for grant in ["token --issuer", "login --device", "login --browser", "--min-ttl"] {
            assert!(commands.iter().any(|c| c.contains(grant)), "{grant}: {text}");
        }
    }

    #[test]
    fn ports_are_read_and_checked() {
        let args = |a: &[&str]| parse_port(a.iter().map(|s| s.to_string()));
        assert_eq!(args(&[]), Ok(Some(DEFAULT_PORT)));
        assert_eq!(args(&["--port", "19400"]), Ok(Some(19400)));
        assert!(args(&["--port", "x"]).is_err());
        assert!(args(&["--verbose"]).is_err());
    }
}
