//! `cargo xtask bench-proxy`: the sidecar against nginx, one after the other in one run, in front
//! of the same fast upstream (nginx answering `200 ok`), loaded by wrk: throughput and p99 at 64
//! keep-alive connections, the added latency at 1 connection, and the proxy's resident memory
//! idle and per open connection; the CPU time per request of the process under test, and (with
//! valgrind) its user-space instructions per request, which do not move with the machine's
//! load as times do. Needs Debian's nginx and wrk (`apt-get install nginx-light wrk`, and
//! `valgrind` for the instruction counts); not part of `ci`. Figures go to docs/PERFORMANCE.md.

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

/// The prefix folder and configuration file of an nginx with `server` as its `server` block
/// contents, on `port`: one process (`master_process off`), so that stopping it leaves no
/// worker behind.
fn nginx_conf(
    dir: &Path,
    name: &str,
    port: u16,
    server: &str,
    extra_http: &str,
) -> Result<(PathBuf, PathBuf), String> {
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
    Ok((prefix, file))
}

/// nginx as [`nginx_conf`] configures it, started and listening.
fn nginx(dir: &Path, name: &str, port: u16, server: &str, extra_http: &str) -> Result<Killed, String> {
    let (prefix, file) = nginx_conf(dir, name, port, server, extra_http)?;
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

/// Requests wrk completed in `seconds` at `connections`.
fn wrk_requests(url: &str, connections: u32, seconds: u32) -> Result<u64, String> {
    let out = Command::new("wrk")
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            url,
        ])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in")
                .map(|(n, _)| n.trim().parse::<u64>())
        })
        .and_then(Result::ok)
        .ok_or_else(|| format!("wrk printed no request count:\n{text}"))
}

/// User-space instructions per request (every thread), counted by valgrind's callgrind while
/// wrk loads `port` with 8 connections: a figure that does not move with the machine's load,
/// as times here do. `None` without valgrind.
fn instructions_per_request(
    dir: &Path,
    name: &str,
    port: u16,
    command: &mut Command,
) -> Result<Option<u64>, String> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Ok(None);
    }
    let out = dir.join(format!("callgrind.{name}"));
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
    let envs: Vec<_> = command
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let child = Killed(
        Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(program)
            .args(args)
            .envs(envs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("valgrind: {e}"))?,
    );
    let pid = child.0.id().to_string();
    let url = format!("http://127.0.0.1:{port}/");
    // Slow under valgrind: up to a minute to listen, then a warm-up (the proxy's token).
    for _ in 0..6 {
        if wait_listening(port).is_ok() {
            break;
        }
    }
    wrk_requests(&url, 8, 2)?;
    let control = |what: &str| {
        Command::new("callgrind_control")
            .args([what, &pid])
            .output()
            .map_err(|e| format!("callgrind_control: {e}"))
    };
    control("-z")?;
    let requests = wrk_requests(&url, 8, 5)?;
    control("-d")?;
    let dump = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("callgrind.{name}.")))
        })
        .ok_or("callgrind wrote no dump")?;
    let text = std::fs::read_to_string(&dump).map_err(|e| e.to_string())?;
    let total: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no summary in the callgrind dump")?;
    drop(child);
    Ok(Some(total / requests.max(1)))
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

/// CPU time the process has used so far (user and system, every thread), in microseconds.
fn cpu_micros(pid: u32, ticks_per_second: u64) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which may hold spaces): state is the first, utime the
    // 12th and stime the 13th (fields 14 and 15 of proc(5)).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("no ) in stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("short stat")
    };
    Ok((ticks(11)? + ticks(12)?) * 1_000_000 / ticks_per_second.max(1))
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(100)
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
    let front_server = "location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; \
         proxy_set_header Authorization \"Bearer static-token-for-the-floor\"; }";
    let front_upstream = format!("upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}");
    let _front = nginx(&dir, "front", nginx_port, front_server, &front_upstream)?;

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
    let proxy_args = |port: u16| {
        [
            "proxy".to_owned(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--upstream".to_owned(),
            format!("http://127.0.0.1:{upstream_port}"),
            "--issuer".to_owned(),
            format!("http://127.0.0.1:{idp_port}"),
            "--client-id".to_owned(),
            "client-1".to_owned(),
            "--cache".to_owned(),
            "none".to_owned(),
        ]
    };
    // The proxy as it starts by default (a worker per core), and with one worker, as the
    // nginx in front has.
    let start_proxy = |port: u16, workers: &[&str]| -> Result<Killed, String> {
        let proxy = Killed(
            Command::new(target.join("release/authwire"))
                .args(proxy_args(port))
                .args(workers)
                .env("AUTHWIRE_CLIENT_SECRET", "s3cret:with%special+chars")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("authwire proxy: {e}"))?,
        );
        wait_listening(port)?;
        // One request fetches the token.
        wrk(&format!("http://127.0.0.1:{port}/"), 1, None)?;
        Ok(proxy)
    };
    let proxy_port = free_port()?;
    let proxy = start_proxy(proxy_port, &[])?;
    let pid = proxy.0.id();
    // Idle memory after the first request.
    let idle = rss_kib(pid)?;
    let one_worker_port = free_port()?;
    let one_worker = start_proxy(one_worker_port, &["--workers", "1"])?;

    let direct = format!("http://127.0.0.1:{upstream_port}/");
    let via_nginx = format!("http://127.0.0.1:{nginx_port}/");
    let via_proxy = format!("http://127.0.0.1:{proxy_port}/");
    let via_one_worker = format!("http://127.0.0.1:{one_worker_port}/");
    let ticks = clock_ticks();
    println!("wrk, 1 thread, {SECONDS} s each; the upstream is nginx answering 200 ok (worker_processes 1)");
    println!(
        "(CPU per request: the CPU time, user and system, of the process wrk talks to, divided by the requests it answered)"
    );
    println!("| path | connections | requests/s | p50 ms | p99 ms | CPU per request |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for connections in [64u32, 1] {
        for (name, url, header, measured) in [
            (
                "direct to the upstream",
                &direct,
                Some("Authorization: Bearer static"),
                _upstream.0.id(),
            ),
            ("nginx adding a static header", &via_nginx, None, _front.0.id()),
            ("authwire proxy", &via_proxy, None, pid),
            (
                "authwire proxy, 1 worker",
                &via_one_worker,
                None,
                one_worker.0.id(),
            ),
        ] {
            let before = cpu_micros(measured, ticks)?;
            let (rps, p50, p99) = wrk(url, connections, header)?;
            let used = cpu_micros(measured, ticks)?.saturating_sub(before);
            let per_request = used as f64 / (rps * f64::from(SECONDS)).max(1.0);
            println!("| {name} | {connections} | {rps:.0} | {p50:.3} | {p99:.3} | {per_request:.1} µs |");
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
    drop(proxy);
    drop(one_worker);

    // Instructions per request, one worker each: nginx in front (a second instance, under
    // valgrind) and the proxy.
    let counted_port = free_port()?;
    let (prefix, file) = nginx_conf(&dir, "front-counted", counted_port, front_server, &front_upstream)?;
    let nginx_counted = instructions_per_request(
        &dir,
        "nginx",
        counted_port,
        Command::new("nginx").arg("-p").arg(&prefix).arg("-c").arg(&file),
    )?;
    let proxy_counted_port = free_port()?;
    let proxy_counted = instructions_per_request(
        &dir,
        "proxy",
        proxy_counted_port,
        Command::new(target.join("release/authwire"))
            .args(proxy_args(proxy_counted_port))
            .args(["--workers", "1"])
            .env("AUTHWIRE_CLIENT_SECRET", "s3cret:with%special+chars"),
    )?;
    match (nginx_counted, proxy_counted) {
        (Some(n), Some(p)) => println!(
            "user-space instructions per request (callgrind, one worker, 8 connections): nginx {n}, authwire proxy {p} ({:.2}x)",
            p as f64 / n.max(1) as f64
        ),
        _ => println!("instructions per request: not counted (apt-get install valgrind)"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
