//! A real `redis-server` on a free loopback port, for store tests.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A `redis-server` process (Debian's `redis-server`; `.ci/run` installs it), without persistence,
/// on `127.0.0.1` and a free port. Killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    tls: Option<Tls>,
}

/// The throwaway CA and server certificate of a TLS server, in a private folder.
struct Tls {
    dir: std::path::PathBuf,
    ca_pem: Vec<u8>,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// Start one and wait until it answers `PING`. Panics with the fix if `redis-server` is not
    /// installed.
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port).await
    }

    async fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server (.ci/run does)");
        let server = Self {
            port,
            child: Some(child),
            tls: None,
        };
        for _ in 0..200 {
            if server.ping().await {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {port} did not answer PING within 5 s");
    }

    /// Start one that speaks only TLS (`rediss://`), with a certificate for `127.0.0.1` from a
    /// throwaway CA ([`ca_pem`](Self::ca_pem)), made with the `openssl` tool. Debian's
    /// `redis-server` is built with TLS.
    pub async fn start_tls() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("authwire-redis-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder for the certificates");
        let tls = Tls {
            ca_pem: make_certificates(&dir),
            dir,
        };
        let file = |name: &str| tls.dir.join(name).display().to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &file("server.pem"),
                "--tls-key-file",
                &file("server.key"),
            ])
            .args(["--tls-ca-cert-file", &file("ca.pem"), "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server (.ci/run does)");
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Self {
                    port,
                    child: Some(child),
                    tls: Some(tls),
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server (TLS) on port {port} did not listen within 5 s");
    }

    /// The CA certificate (PEM) that signed a TLS server's certificate.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.tls.as_ref().map(|t| t.ca_pem.as_slice())
    }

    async fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        use tokio::io::AsyncReadExt;
        stream.read_exact(&mut buf).await.is_ok() && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:PORT/`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Stop the server (as an outage would), keeping its port for [`restart`](Self::restart).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Start it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        let again = Self::start_on(self.port).await;
        self.child = again.into_child();
    }

    fn into_child(mut self) -> Option<Child> {
        self.tls.take();
        self.child.take()
    }
}

/// A CA and a server certificate for `127.0.0.1` signed by it, in `dir`; returns the CA (PEM).
pub(crate) fn make_certificates(dir: &std::path::Path) -> Vec<u8> {
    let run = |args: &[&str]| openssl(dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=authwire test CA",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write the extension file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    std::fs::read(dir.join("ca.pem")).expect("read the CA certificate")
}

/// A client certificate `{stem}.pem` with key `{stem}.key` (P-256, PKCS#8) for `name`, signed
/// by the CA in `dir` (made by [`make_certificates`]).
pub(crate) fn make_client_certificate(dir: &std::path::Path, stem: &str, name: &str) {
    let run = |args: &[&str]| openssl(dir, args);
    let (key, csr, pem, ext) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.pem"),
        format!("{stem}.ext"),
    );
    let subject = format!("/CN={name}");
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        &subject,
    ]);
    std::fs::write(
        dir.join(&ext),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("write the extension file");
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        &pem,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
}

/// Run the `openssl` tool in `dir` with `args`; panics (a test's set-up) if it fails.
pub(crate) fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl tool is needed for TLS tests (Debian's openssl)");
    assert!(status.success(), "openssl {args:?} failed");
}
