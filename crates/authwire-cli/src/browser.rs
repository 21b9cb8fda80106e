//! Opening the system browser (RFC 8252 section 4: the system browser, never an embedded one).

use std::process::{Command, Stdio};

/// Whether a browser can plausibly be opened here: `BROWSER` is set, or a desktop session (macOS,
/// Windows, or `DISPLAY` / `WAYLAND_DISPLAY` elsewhere). Over SSH without a display, no.
pub(crate) fn available() -> bool {
    if std::env::var_os("BROWSER").is_some_and(|b| !b.is_empty()) {
        return true;
    }
    if cfg!(any(target_os = "macos", target_os = "windows")) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()))
}

/// Start the browser on `url` and return what was run. The URL is passed as one argument,
/// never through a shell. `BROWSER` (a program, as Python's `webbrowser` and Go's tools read
/// it) wins over the platform's opener.
pub(crate) fn open(url: &str) -> Result<String, String> {
    let (program, mut args): (String, Vec<String>) = match std::env::var("BROWSER") {
        Ok(b) if !b.is_empty() => {
            let first = b.split(':').next().unwrap_or_default().to_owned();
            (first, vec![])
        }
        _ if cfg!(target_os = "macos") => ("open".into(), vec![]),
        // `start` would go through cmd.exe, which splits the URL at `&`.
        _ if cfg!(target_os = "windows") => ("rundll32".into(), vec!["url.dll,FileProtocolHandler".into()]),
        _ => ("xdg-open".into(), vec![]),
    };
    args.push(url.to_owned());
    let child = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    // Reap it in the background so that no zombie is left while we wait.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(program)
}
