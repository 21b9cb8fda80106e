//! Project automation, so that CI and developers run the same commands.
//!
//! - `cargo xtask ci`: format check, clippy (warnings are errors), every test including
//!   doctests, and rustdoc (warnings are errors). This is the test command `.ci/run` calls.
//! - `cargo xtask bench [FILTER]`: the criterion benchmarks (figures for docs/PERFORMANCE.md).
//! - `cargo xtask idp [--port N]`: a loopback identity provider and API to try the CLI and the
//!   library on, until Ctrl-C, with ready-to-paste commands.
//! - `cargo xtask outside [FILTER]`: authwire beside other Rust token libraries in one process
//!   (the outside harness in `xtask/outside`; needs crates.io, not part of `ci`).
//! - `cargo xtask interop`: the CLI against third-party servers on loopback (needs Node.js and
//!   npm; not part of `ci`, which must not depend on a package registry).

#![allow(clippy::print_stdout, clippy::disallowed_methods)]

mod advisories;
mod bench_proxy;
mod deps;
mod docs;
mod examples;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(&args[1..]),
        Some("bench-proxy") => bench_proxy::run(&root(), &target_dir()),
        Some("bench-fleet") => bench_fleet(),
        Some("demo") => demo(),
        Some("idp") => idp(&args[1..]),
        Some("soak") => soak(&args[1..]),
        Some("interop") => interop(),
        Some("outside") => outside(&args[1..]),
        Some("deps") => deps::unused(&root()).map(|unused| {
            for line in &unused {
                println!("unused: {line}");
            }
        }),
        Some("docs") => docs::check(&root(), &cli_binary()),
        Some("advisories") => advisories::check(&root()).map(|notes| println!("{notes}")),
        Some("examples") => examples::check(&root(), &target_dir()),
        Some("help" | "--help" | "-h") | None => {
            usage();
            Ok(())
        }
        Some(other) => Err(format!("unknown task {other:?}; run `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() {
    println!(
        "usage: cargo xtask <task>\n\n\
         tasks:\n  \
         demo            the pipeline at work against a loopback identity provider (under a minute)\n  \
         idp [--port N]  a loopback identity provider and API to try authwire on, until Ctrl-C; prints\n                  ready-to-paste commands for each grant (docs/cli.md)\n  \
         ci              fmt check, clippy -D warnings, all tests and doctests, rustdoc -D warnings\n  \
         bench [FILTER]  criterion benchmarks (see docs/PERFORMANCE.md)\n  \
         bench-proxy     authwire proxy against nginx in front of one upstream, loaded by wrk (needs nginx and\n                  wrk; see docs/PERFORMANCE.md)\n  \
         bench-fleet     token requests per lifetime of 8 processes against 1 on a real Redis Cluster (docs/fleet.md)\n  \
         deps            list dependencies declared but never used (part of ci)\n  \
         advisories      Cargo.lock against the RustSec advisory database in ../shared/advisory-db, offline (part of ci)\n  \
         docs            the docs match the code: a README row per crate, no CLI flag that does not exist (part of ci)\n  \
         examples        the README's quick start built in a new project from its own [dependencies] (part of ci)\n  \
         interop         the CLI against panva's oidc-provider, and the cloud emulators against google-auth and\n                  azure-identity, all on loopback (Node.js, npm, Python; see docs/interop.md)\n  \
         outside [FILTER] authwire beside google-cloud-auth and gcp_auth in one process (crates.io; see\n                  docs/PERFORMANCE.md)\n  \
         soak [--minutes N]  the soak: 64 tasks, 2 s tokens, random IdP faults (see docs/RELIABILITY.md)"
    );
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo xtask idp`: the testkit's identity provider and API on loopback until Ctrl-C.
fn idp(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "authwire-testkit",
        "--bin",
        "authwire-idp",
        "--",
    ])
    .args(args);
    let status = cmd.status().map_err(|e| format!("cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the identity provider stopped ({status})"))
    }
}

/// The debug build of the `authwire` binary.
fn cli_binary() -> PathBuf {
    target_dir()
        .join("debug")
        .join(format!("authwire{}", env::consts::EXE_SUFFIX))
}

/// The workspace's target folder (`CARGO_TARGET_DIR` when set).
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Run a step, report its time, fail with its name.
fn step(name: &str, mut cmd: Command) -> Result<(), String> {
    println!("==> {name}");
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: could not start: {e}"))?;
    println!(
        "<== {name}: {} in {:.1?}",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

/// Whether `program` is on the PATH.
fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

fn ci() -> Result<(), String> {
    let started = Instant::now();
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    step("cargo fmt --check", fmt)?;

    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    step("cargo clippy", clippy)?;

    println!("==> unused dependencies");
    let unused = deps::unused(&root())?;
    if !unused.is_empty() {
        return Err(format!(
            "declared but never used (remove them, or list them in xtask/src/deps.rs ALLOWED with why):\n  {}",
            unused.join("\n  ")
        ));
    }
    println!("<== unused dependencies: none");

    println!("==> RustSec advisories (offline, ../shared/advisory-db)");
    let notes = advisories::check(&root())?;
    println!("<== advisories: {notes}");

    // Docs that match the code: a README row per crate, no flag the CLI does not have.
    let mut build = cargo();
    build.args(["build", "--quiet", "-p", "authwire-cli", "--bin", "authwire"]);
    step("cargo build (the CLI, for the docs check)", build)?;
    println!("==> docs match the code");
    docs::check(&root(), &cli_binary())?;
    println!("<== docs match the code: ok");

    println!("==> the README's and the core crate's quick starts, built in a new project");
    examples::check(&root(), &target_dir())?;
    println!("<== quick starts: ok");

    // Every published crate packages and builds from its own tarball (docs/RELEASING.md).
    forget_unpacked_packages()?;
    let mut publish = cargo();
    publish.args([
        "publish",
        "--workspace",
        "--dry-run",
        "--locked",
        "--allow-dirty",
        "--quiet",
        "--exclude",
        "authwire-testkit",
        "--exclude",
        "authwire-reliability",
        "--exclude",
        "xtask",
    ]);
    step("cargo publish --dry-run (packages verified)", publish)?;
    println!("==> every package carries both license texts");
    licenses()?;
    println!("<== licenses: ok");

    msrv()?;
    platforms()?;

    // The keyring tests talk to the kernel's keyutils: give them a private session keyring
    // (Debian's `keyutils`; .ci/run installs it). Without it they use the caller's keyrings.
    let test = if have("keyctl") {
        let mut cmd = Command::new("keyctl");
        cmd.current_dir(root()).args([
            "session",
            "-",
            &env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        ]);
        cmd
    } else {
        println!(
            "note: keyctl not found (apt-get install keyutils); keyring tests run in this session's keyrings"
        );
        cargo()
    };
    let mut test = test;
    test.args(["test", "--workspace", "--no-fail-fast"]);
    step("cargo test", test)?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    step("cargo doc", doc)?;

    println!("ci: all steps passed in {:.1?}", started.elapsed());
    Ok(())
}

/// Every published crate's package lists `LICENSE-MIT` and `LICENSE-APACHE`, the same texts as
/// the root's.
fn licenses() -> Result<(), String> {
    let root = root();
    let texts: Vec<(&str, Vec<u8>)> = ["LICENSE-MIT", "LICENSE-APACHE"]
        .iter()
        .map(|f| {
            std::fs::read(root.join(f))
                .map(|t| (*f, t))
                .map_err(|e| format!("{f}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    for name in published_packages()? {
        let dir = root.join("crates").join(&name);
        let listed = cargo()
            .args(["package", "--list", "--allow-dirty", "--quiet", "-p", &name])
            .output()
            .map_err(|e| e.to_string())?;
        let listed = String::from_utf8_lossy(&listed.stdout);
        for (file, text) in &texts {
            if !listed.lines().any(|l| l == *file) {
                return Err(format!(
                    "the {name} package does not carry {file} (copy it from the root)"
                ));
            }
            if std::fs::read(dir.join(file)).ok().as_ref() != Some(text) {
                return Err(format!("crates/{name}/{file} differs from the root's {file}"));
            }
        }
    }
    Ok(())
}

/// Portability, seen the day it breaks: every published crate and the CLI check without a
/// warning for Windows (`x86_64-pc-windows-gnu`; aws-lc's C code needs the mingw-w64 cross
/// compiler, which .ci/run installs), and the crates with code of their own for macOS (file
/// permissions, the OS keyrings) for `aarch64-apple-darwin` (the others need a macOS C
/// toolchain for aws-lc, which no Linux package provides). The target's standard library comes
/// from rustup; without it, a note.
fn platforms() -> Result<(), String> {
    let published = published_packages()?;
    let windows: Vec<&str> = published.iter().map(String::as_str).collect();
    let targets: [(&str, Vec<&str>, &str); 2] = [
        (
            "x86_64-pc-windows-gnu",
            windows,
            "every published crate and the CLI",
        ),
        (
            "aarch64-apple-darwin",
            vec!["authwire-file", "authwire-keyring"],
            "file and keyring stores",
        ),
    ];
    for (target, packages, what) in targets {
        let added = Command::new("rustup")
            .args(["target", "add", target])
            .output()
            .is_ok_and(|o| o.status.success());
        if !added {
            println!("note: rustup cannot add {target} here; its check is skipped");
            continue;
        }
        let mut check = cargo();
        check.args(["check", "--quiet", "--target", target]);
        for p in packages {
            check.args(["-p", p]);
        }
        check.env("RUSTFLAGS", "-D warnings");
        step(&format!("cargo check --target {target} ({what})"), check)?;
    }
    Ok(())
}

/// Cargo verifies a `publish --workspace` dry run against a local registry of the packages it
/// just made, and unpacks each into `$CARGO_HOME/registry/src/-<hash>/NAME-VERSION`; it never
/// unpacks a name and version again once that folder exists, and never rebuilds a registry
/// crate it built before (registry crates are immutable to it). Our version stays 0.1.0
/// between releases, so a second dry run would build against the first one's sources (and
/// fail, or worse, pass). So, first: the folders of our own packages in those local registries
/// are removed (nothing else in the cargo home is touched), and so are the build fingerprints
/// of our own crates in the target folder (they are rebuilt; third-party crates are not).
fn forget_unpacked_packages() -> Result<(), String> {
    let fingerprints = target_dir().join("debug/.fingerprint");
    if let Ok(entries) = std::fs::read_dir(&fingerprints) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with("authwire") {
                std::fs::remove_dir_all(entry.path())
                    .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
            }
        }
    }
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry/src")) else {
        return Ok(());
    };
    let Ok(registries) = std::fs::read_dir(&src) else {
        return Ok(());
    };
    let ours = published_packages()?;
    for registry in registries.filter_map(Result::ok) {
        // Local registries are named "-<hash>"; crates.io's "index.crates.io-<hash>".
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_ours = ours.iter().any(|p| {
                name.strip_prefix(p.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
            });
            if is_ours {
                std::fs::remove_dir_all(entry.path())
                    .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

/// The workspace's published crates: the folders of `crates/` whose manifest does not say
/// `publish = false` (each folder is named after its package).
fn published_packages() -> Result<Vec<String>, String> {
    let crates = std::fs::read_dir(root().join("crates")).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = crates
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|dir| {
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
            !manifest.is_empty() && !manifest.contains("\npublish = false")
        })
        .map(|dir| dir.file_name().unwrap_or_default().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        return Err("no published crate under crates/".into());
    }
    Ok(names)
}

/// The declared `rust-version` builds: `cargo +<msrv> check`, when rustup can install that
/// toolchain here (it says so, and goes on, when it cannot).
fn msrv() -> Result<(), String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).map_err(|e| e.to_string())?;
    let Some(version) = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = \"")?.strip_suffix('"'))
    else {
        return Err("no rust-version in the workspace manifest".into());
    };
    let installed = Command::new("rustup")
        .args(["toolchain", "install", version, "--profile", "minimal"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        println!("note: the MSRV toolchain {version} cannot be installed here; MSRV not checked");
        return Ok(());
    }
    // `rustup run`, not `cargo +version`: $CARGO is the toolchain's cargo, not rustup's proxy.
    let mut check = Command::new("rustup");
    check
        .current_dir(root())
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .args([
            "run",
            version,
            "cargo",
            "check",
            "--workspace",
            "--all-targets",
            "--quiet",
        ]);
    step(&format!("cargo check on Rust {version} (MSRV)"), check)
}

fn demo() -> Result<(), String> {
    let mut build = cargo();
    build.args([
        "build",
        "--quiet",
        "-p",
        "authwire-cli",
        "--bin",
        "authwire",
        "--example",
        "demo",
    ]);
    step("build the demo and the authwire binary", build)?;
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let demo = target.join("debug/examples/demo");
    let cli = target.join("debug/authwire");
    let status = Command::new(&demo)
        .env("AUTHWIRE_DEMO_CLI", &cli)
        .status()
        .map_err(|e| format!("could not start {}: {e}", demo.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the demo failed ({status})"))
    }
}

/// The real `authwire` binary against third-party servers started on 127.0.0.1: panva's
/// oidc-provider (OpenID Certified; PKCE, DPoP with nonces, RFC 9207, revocation).
fn interop() -> Result<(), String> {
    let mut build = cargo();
    build.args(["build", "--quiet", "-p", "authwire-cli", "--bin", "authwire"]);
    step("build the authwire binary", build)?;
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let dir = root().join("xtask/interop/oidc-provider");
    let mut install = Command::new("npm");
    install
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir);
    step("npm ci (oidc-provider, pinned by package-lock.json)", install)?;
    let mut run = Command::new("node");
    run.arg("run.mjs")
        .arg(target.join("debug/authwire"))
        .current_dir(&dir);
    step("authwire against oidc-provider", run)?;
    cloud_interop(&target)
}

/// The cloud emulators (testkit) checked with Google's google-auth and Microsoft's
/// azure-identity, in a virtualenv under target/.
fn cloud_interop(target: &Path) -> Result<(), String> {
    let mut build = cargo();
    build.args([
        "build",
        "--quiet",
        "-p",
        "authwire-testkit",
        "--example",
        "cloud_emulators",
    ]);
    step("build the cloud emulators", build)?;
    let venv = target.join("interop-venv");
    if !venv.join("bin/python").exists() {
        let mut make = Command::new("python3");
        make.args(["-m", "venv"]).arg(&venv);
        step("python3 -m venv target/interop-venv", make)?;
    }
    let dir = root().join("xtask/interop/cloud");
    let mut install = Command::new(venv.join("bin/pip"));
    install
        .args(["install", "--quiet", "-r"])
        .arg(dir.join("requirements.txt"));
    step("pip install google-auth azure-identity (pinned)", install)?;
    let files = target.join("interop-cloud");
    let _ = std::fs::remove_dir_all(&files);
    let mut emulators = Command::new(target.join("debug/examples/cloud_emulators"))
        .arg(&files)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start the emulators: {e}"))?;
    // Wait for "ready".
    let mut line = String::new();
    if let Some(out) = emulators.stdout.take() {
        use std::io::BufRead as _;
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let mut check = Command::new(venv.join("bin/python"));
    check.arg(dir.join("check.py")).arg(&files);
    let result = step("the vendors' libraries against the cloud emulators", check);
    drop(emulators.stdin.take()); // the emulators stop when stdin closes
    let _ = emulators.wait();
    result
}

fn soak(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "authwire-reliability",
        "--example",
        "soak",
        "--",
    ]);
    cmd.args(args);
    step("soak", cmd)
}

/// The outside harness (xtask/outside, a project of its own with its own lockfile): authwire
/// beside other Rust token libraries in one process, built into the project's target directory.
fn outside(args: &[String]) -> Result<(), String> {
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let mut cmd = cargo();
    // Through the environment, not `--target-dir`: criterion reads it to put its reports in
    // target/criterion/outside beside the workspace's own.
    cmd.env("CARGO_TARGET_DIR", target)
        .arg("bench")
        .arg("--manifest-path")
        .arg(root().join("xtask/outside/Cargo.toml"))
        .arg("--");
    cmd.args(args);
    step("authwire beside other token libraries", cmd)
}

/// The fleet on a Redis Cluster: token requests per lifetime for 8 processes against 1.
fn bench_fleet() -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "-p",
        "authwire-redis",
        "--test",
        "all",
        "--",
        "--ignored",
        "--nocapture",
        "--exact",
        "fleet::fleet_on_a_cluster_table",
    ]);
    step("the fleet on a Redis Cluster", cmd)
}

fn bench(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args(["bench", "--workspace", "--benches", "--"]);
    cmd.args(args);
    step("cargo bench", cmd)
}
