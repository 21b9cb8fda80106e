//! Support for the outside bench: a loopback token endpoint that any of the libraries can use.
//!
//! The server answers every `POST` with the same JWT-sized bearer token valid for an hour, and
//! counts requests, so the bench can check that each library fetched once and then served its
//! cache. It listens on 127.0.0.1 only and closes each connection after one answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A token the size of a real RS256 JWT (about 480 bytes).
pub const JWT_SIZED_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwic3ViIjoiY2xpZW50LTEyMyIsImF1ZCI6Imh0dHBzOi8vYXBpLmV4YW1wbGUiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMCwic2NvcGUiOiJhcGk6cmVhZCBhcGk6d3JpdGUifQ.c2lnbmF0dXJlLXBsYWNlaG9sZGVyLXRoYXQtaXMtYWJvdXQtdGhlLXNpemUtb2YtYW4tcnNhLXNpZ25hdHVyZS14eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eA";

/// A token endpoint on loopback.
pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`
    pub url: String,
    requests: Arc<AtomicUsize>,
}

impl TokenServer {
    /// Start it on a thread of its own.
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/token", listener.local_addr()?);
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                count.fetch_add(1, Ordering::SeqCst);
                let json = format!(
                    r#"{{"access_token":"{JWT_SIZED_TOKEN}","token_type":"Bearer","expires_in":3600}}"#
                );
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                    json.len()
                );
                let _ = reader.get_mut().write_all(answer.as_bytes());
            }
        });
        Ok(Self { url, requests })
    }

    /// How many token requests it has answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A throwaway RSA key for gcp_auth's service-account flow, made by `openssl genpkey` (PKCS#8 PEM).
pub fn throwaway_rsa_key() -> String {
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .expect("openssl is needed to make a throwaway key for gcp_auth");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8(out.stdout).expect("PEM is ASCII")
}
