//! Memory per authorizer in a multi-tenant process (issue 16, part 4): 10,000 authorizers, each
//! with its own 1 KB token, measured as resident memory. Prints the bytes per
//! authorizer beyond the token, and the parts they come from.
//!
//! `cargo run --release -p authwire --example many_authorizers`

#![allow(missing_docs, clippy::print_stdout)]

use authwire::{Authorizer, StaticTokenProvider};

/// Resident memory now (bytes), from /proc/self/statm: the workspace forbids the `unsafe` a
/// counting allocator needs, and at tens of megabytes the page granularity does not matter.
fn resident() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: isize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const N: usize = 10_000;
const TOKEN_BYTES: usize = 1024;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tokens: Vec<String> = (0..N)
        .map(|i| format!("{i:08}{}", "x".repeat(TOKEN_BYTES - 8)))
        .collect();
    let before = resident();
    let authorizers: Vec<Authorizer> = tokens
        .iter()
        .map(|t| Authorizer::new(StaticTokenProvider::new(t.clone())))
        .collect();
    let built = resident();
    rt.block_on(async {
        for a in &authorizers {
            a.authorization_header().await.unwrap();
        }
    });
    let warm = resident();
    let idle_tasks = rt.metrics().num_alive_tasks();
    let per = |bytes: isize| bytes as f64 / N as f64;
    println!("authorizers: {N}, token: {TOKEN_BYTES} bytes each");
    println!(
        "built (no token yet):        {:8.0} bytes per authorizer (the provider holds its token)",
        per(built - before)
    );
    println!(
        "after the first header:      {:8.0} bytes per authorizer",
        per(warm - before)
    );
    // Subtract the token twice: the authorizer's token, and the copy this test's provider
    // keeps (a real identity provider keeps none).
    let beyond = per(warm - before) - 2.0 * TOKEN_BYTES as f64;
    println!("beyond the token:            {beyond:8.0} bytes per authorizer");
    println!(
        "100,000 authorizers: {:.0} MB beyond their tokens, {:.0} MB with them",
        beyond * 100_000.0 / 1e6,
        (beyond + TOKEN_BYTES as f64) * 100_000.0 / 1e6
    );
    println!("tasks alive with {N} idle authorizers: {idle_tasks} (no task or timer per authorizer)");
    drop(authorizers);
}
