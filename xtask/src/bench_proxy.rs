//! `cargo xtask bench-proxy`: the sidecar against nginx, one after the other in one run, in front
//! of the same fast upstream (nginx answering `200 ok`), loaded by wrk: throughput and p99 at 64
//! keep-alive connections, the added latency at 1 connection, and the proxy's resident memory
//! idle and per open connection. Needs Debian's nginx and wrk (`apt-get install nginx-light
//! wrk`); not part of `ci`. Figures go to docs/PERFORMANCE.md.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Seconds each wrk run lasts.
const SECONDS: u32 = 10;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn wait_listening(port: u16) -> Result<(), String> {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("nothing listens on {port} after 10 s"))
}

/// An nginx with `server` as its `server` block contents, on `port`: one process
/// (`master_process off`), so that stopping it leaves no worker behind.
fn nginx(dir: &Path, name: &str, port: u16, server: &str, extra_http: &str) -> Result<Killed, String> {
    let prefix = dir.join(name);
    std::fs::create_dir_all(prefix.join("logs")).map_err(|e| e.to_string())?;
    let conf = format!(
        "user root;\nworker_processes 1;\nmaster_process off;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  \
         fastcgi_temp_path {p}/fcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  keepalive_requests 100000;\n  {extra_http}\n  \
         server {{\n    listen 127.0.0.1:{port};\n    {server}\n  }}\n}}\n",
        p = prefix.display()
    );
    let file = prefix.join("nginx.conf");
    std::fs::write(&file, conf).map_err(|e| e.to_string())?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("nginx: {e} (apt-get install nginx-light)"))?;
    let child = Killed(child);
    wait_listening(port)?;
    Ok(child)
}

/// One wrk run: (requests per second, p50 ms, p99 ms).
fn wrk(url: &str, connections: u32, header: Option<&str>) -> Result<(f64, f64, f64), String> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        "1",
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{SECONDS}s"),
        "--latency",
    ]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .output()
        .map_err(|e| format!("wrk: {e} (apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("wrk printed no Requests/sec:\n{text}"))?;
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(|v| v.trim().to_owned()))
            .and_then(|v| to_ms(&v))
            .ok_or_else(|| format!("wrk printed no {p} latency:\n{text}"))
    };
    let non2xx = text.lines().any(|l| l.contains("Non-2xx"));
    if non2xx {
        return Err(format!("{url} answered errors under load:\n{text}"));
    }
    Ok((rps, percentile("50%")?, percentile("99%")?))
}

/// `512.00us`, `1.20ms`, `2.00s` in milliseconds.
fn to_ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

pub(crate) fn run(root: &Path, target: &Path) -> Result<(), String> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "authwire-cli",
            "-p",
            "authwire-testkit",
            "--bin",
            "authwire",
            "--bin",
            "authwire-idp",
        ])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("cargo build --release failed".into());
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("authwire-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    let upstream_port = free_port()?;
    let _upstream = nginx(
        &dir,
        "upstream",
        upstream_port,
        "location / { default_type text/plain; return 200 \"ok\\n\"; }",
        "",
    )?;
    let nginx_port = free_port()?;
    let _front = nginx(
        &dir,
        "front",
        nginx_port,
        "location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; \
         proxy_set_header Authorization \"Bearer static-token-for-the-floor\"; }",
        &format!("upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}"),
    )?;

    // The identity provider (two ports: issuer and its API) and the proxy.
    let idp_port = loop {
        let p = free_port()?;
        if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let _idp = Killed(
        Command::new(target.join("release/authwire-idp"))
            .args(["--port", &idp_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("authwire-idp: {e}"))?,
    );
    wait_listening(idp_port)?;
    let proxy_port = free_port()?;
    let proxy = Killed(
        Command::new(target.join("release/authwire"))
            .args([
                "proxy",
                "--listen",
                &format!("127.0.0.1:{proxy_port}"),
                "--upstream",
                &format!("http://127.0.0.1:{upstream_port}"),
                "--issuer",
                &format!("http://127.0.0.1:{idp_port}"),
                "--client-id",
                "client-1",
                "--cache",
                "none",
            ])
            .env("AUTHWIRE_CLIENT_SECRET", "s3cret:with%special+chars")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("authwire proxy: {e}"))?,
    );
    wait_listening(proxy_port)?;
    let pid = proxy.0.id();
    // One request fetches the token; idle memory after it.
    wrk(&format!("http://127.0.0.1:{proxy_port}/"), 1, None).map(|_| ())?;
    let idle = rss_kib(pid)?;

    let direct = format!("http://127.0.0.1:{upstream_port}/");
    let via_nginx = format!("http://127.0.0.1:{nginx_port}/");
    let via_proxy = format!("http://127.0.0.1:{proxy_port}/");
    println!("wrk, 1 thread, {SECONDS} s each; the upstream is nginx answering 200 ok (worker_processes 1)");
    println!("| path | connections | requests/s | p50 ms | p99 ms |");
    println!("| --- | --- | --- | --- | --- |");
    for connections in [64u32, 1] {
        for (name, url, header) in [
            (
                "direct to the upstream",
                &direct,
                Some("Authorization: Bearer static"),
            ),
            ("nginx adding a static header", &via_nginx, None),
            ("authwire proxy", &via_proxy, None),
        ] {
            let (rps, p50, p99) = wrk(url, connections, header)?;
            println!("| {name} | {connections} | {rps:.0} | {p50:.3} | {p99:.3} |");
        }
    }

    // Memory per open connection: 500 idle keep-alive connections.
    let before = rss_kib(pid)?;
    let held: Vec<std::net::TcpStream> = (0..500)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy_port)).ok()?;
            use std::io::{Read as _, Write as _};
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).ok()?;
            Some(s)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let with_connections = rss_kib(pid)?;
    println!(
        "resident memory of the proxy: {idle} KiB idle with one route (after its first request); {} connections held open add {} KiB ({:.1} KiB each)",
        held.len(),
        with_connections.saturating_sub(before),
        with_connections.saturating_sub(before) as f64 / held.len().max(1) as f64
    );
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
