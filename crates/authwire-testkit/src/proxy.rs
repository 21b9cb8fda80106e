//! A real forward proxy for tests: Debian's `tinyproxy`, started on a loopback port with its
//! own configuration, optionally asking for a user and password (407 otherwise). What it
//! forwarded is read back from its log.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A `tinyproxy` process on a loopback port; it stops when dropped.
///
/// ```no_run
/// # async fn run() {
/// let proxy = authwire_testkit::ForwardProxy::start().await;
/// // ... point a client at proxy.url() ...
/// assert!(proxy.requests().is_empty());
/// # }
/// ```
pub struct ForwardProxy {
    port: u16,
    dir: PathBuf,
    credentials: Option<(String, String)>,
    _child: Child,
}

impl ForwardProxy {
    /// A proxy that forwards for anyone on loopback.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A proxy that answers 407 unless the request carries `user` and `password`
    /// (`Proxy-Authorization: Basic`).
    pub async fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::start_with(Some((user.to_owned(), password.to_owned()))).await
    }

    async fn start_with(credentials: Option<(String, String)>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "authwire-proxy-{}-{}",
            std::process::id(),
            authwire::random::hex(6)
        ));
        std::fs::create_dir_all(&dir).expect("a folder for the proxy");
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\nMaxClients 64\nAllow 127.0.0.1\nDisableViaHeader Yes\n",
            dir.join("proxy.log").display()
        );
        if let Some((user, password)) = &credentials {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        std::fs::write(dir.join("tinyproxy.conf"), config).expect("write the proxy's configuration");
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(dir.join("tinyproxy.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tinyproxy is not installed: apt-get install tinyproxy (.ci/run does)");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Self {
                    port,
                    dir,
                    credentials,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("tinyproxy on port {port} did not listen within 5 s");
    }

    /// `http://127.0.0.1:PORT`, without credentials.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT` for a proxy that asks for them.
    pub fn url_with_credentials(&self) -> String {
        match &self.credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{}", self.port),
            None => self.url(),
        }
    }

    /// The request lines the proxy received, in order (`POST http://127.0.0.1:PORT/token
    /// HTTP/1.1`, `CONNECT 127.0.0.1:PORT HTTP/1.1`), refused ones included.
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                line.split_once("): ")
                    .filter(|_| line.contains("Request (file descriptor"))
            })
            .map(|(_, request)| request.to_owned())
            .collect()
    }

    /// The proxy's whole log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
