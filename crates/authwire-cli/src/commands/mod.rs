//! One file per command, each with an `exec` that takes the resolved settings (or the flags
//! to resolve) and returns the exit code. Commands depend on `settings`, `output`, `trace`,
//! `error` and the libraries; never on `main` or on one another.

pub(crate) mod completions;
pub(crate) mod curl;
pub(crate) mod docker_credential;
pub(crate) mod git_credential;
pub(crate) mod header;
pub(crate) mod inspect;
pub(crate) mod kube;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod proxy;
pub(crate) mod token;

mod helper;
