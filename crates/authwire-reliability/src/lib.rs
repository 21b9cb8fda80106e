//! Evidence that authwire survives what it should (not published).
//!
//! - `tests/all/faults.rs`: the fault table of docs/RELIABILITY.md, across the whole stack
//!   (OAuth2 provider, authorizer, real loopback servers, `ManualClock` where time matters);
//! - `tests/all/fuzz.rs`: property-based fuzz targets for every parser that reads untrusted input,
//!   and a regression run over the corpus in `corpus/`;
//! - `tests/all/leaks.rs`: the secret-leak guard;
//! - `examples/soak.rs`: the soak, run by `cargo xtask soak --minutes N`.

/// The folder that holds the fuzz corpus, one sub-folder per target.
pub fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}
