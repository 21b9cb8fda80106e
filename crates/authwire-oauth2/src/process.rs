//! Credentials from a program a person already logged in with (`gcloud`, `az`, `azd`) or one a
//! credential file names: run it with no shell, no input, a bounded time and bounded output,
//! and turn what went wrong into an error that says what to do. Provider crates built on this
//! one share it.
//!
//! A program that fails has its message passed on (its first line on stderr, at most 300
//! characters), since that is where "run `az login`" is said; its output is never included.

use authwire::ProviderError;
use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

/// The largest output read from a credential program.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Run `program` with `args` and return its standard output. `what` names it in errors
/// (`"gcloud"`), `fix` says what to do when it fails (`"run \`gcloud auth login\`"`).
///
/// A program that is not installed is a permanent error; one that fails, a permanent error
/// with its message; one that does not finish within `timeout` is killed, a transient error.
pub async fn run_credential_program(
    program: &OsStr,
    args: &[&str],
    timeout: Duration,
    what: &str,
    fix: &str,
) -> Result<Vec<u8>, ProviderError> {
    run_credential_program_with_env(program, args, &[], timeout, what, fix).await
}

/// [`run_credential_program`] with these variables added to the program's environment (what
/// Google's executable-sourced credentials pass: the audience, the token type...).
pub async fn run_credential_program_with_env(
    program: &OsStr,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
    what: &str,
    fix: &str,
) -> Result<Vec<u8>, ProviderError> {
    use tokio::io::AsyncReadExt as _;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ProviderError::permanent(format!("{what} is not installed (not found on PATH); {fix}"))
            }
            _ => ProviderError::permanent(format!("cannot run {what}: {e}")),
        })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ProviderError::permanent(format!("cannot read {what}'s output")));
    };
    let finished = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let limit = MAX_OUTPUT_BYTES as u64 + 1;
        let (mut stdout, mut stderr) = (stdout.take(limit), stderr.take(limit));
        let (read_out, read_err, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        read_out
            .and(read_err)
            .and(status)
            .map(|status| (status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(timeout, finished).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(ProviderError::transient(format!("{what} failed: {e}"))),
        Err(_) => {
            return Err(ProviderError::transient(format!(
                "{what} did not finish within {} s (killed); {fix}",
                timeout.as_secs()
            )));
        }
    };
    if !status.success() {
        let said = first_line(&err);
        let code = status
            .code()
            .map_or_else(|| "a signal".to_owned(), |c| c.to_string());
        return Err(ProviderError::permanent(if said.is_empty() {
            format!("{what} failed (exit {code}); {fix}")
        } else {
            format!("{what} failed (exit {code}): {said}; {fix}")
        }));
    }
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(ProviderError::permanent(format!(
            "{what} wrote more than {MAX_OUTPUT_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// The name a command-line tool has on this platform: `name`, or `name.cmd` on Windows (where
/// `gcloud`, `az` and `azd` are batch files).
pub fn tool_name(name: &str) -> String {
    if cfg!(windows) {
        format!("{name}.cmd")
    } else {
        name.to_owned()
    }
}

/// The tool `name` (see [`tool_name`]) in one of the folders of `path` (a `PATH` value), if
/// it is there: how the default chains decide a developer tool is installed.
pub fn find_on_path(path: &str, name: &str) -> Option<std::path::PathBuf> {
    let program = tool_name(name);
    std::env::split_paths(path)
        .map(|dir| dir.join(&program))
        .find(|candidate| candidate.is_file())
}

/// The first non-empty line of `bytes`, at most 300 characters.
fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    line.chars().take(300).collect()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_program_that_is_missing_fails_or_hangs_says_so() {
        let missing = run_credential_program(
            OsStr::new("/nonexistent/authwire-no-such-program"),
            &[],
            Duration::from_secs(5),
            "gcloud",
            "install it",
        )
        .await
        .unwrap_err();
        assert!(
            authwire::error_chain(&missing).contains("not installed"),
            "{missing}"
        );
        assert!(!missing.is_transient());

        let failing = run_credential_program(
            OsStr::new("sh"),
            &["-c", "echo 'ERROR: please run az login' >&2; exit 3"],
            Duration::from_secs(5),
            "az",
            "run `az login`",
        )
        .await
        .unwrap_err();
        let text = authwire::error_chain(&failing);
        assert!(
            text.contains("exit 3") && text.contains("please run az login"),
            "{text}"
        );

        let hung = run_credential_program(
            OsStr::new("sleep"),
            &["30"],
            Duration::from_millis(200),
            "azd",
            "retry",
        )
        .await
        .unwrap_err();
        assert!(
            hung.is_transient() && authwire::error_chain(&hung).contains("did not finish"),
            "{hung}"
        );

        let out = run_credential_program(OsStr::new("echo"), &["{}"], Duration::from_secs(5), "echo", "")
            .await
            .unwrap();
        assert_eq!(out, b"{}\n");
    }
}
