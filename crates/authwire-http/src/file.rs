//! Credential-bearing values: a header value marked sensitive, a credential read from a file.

use authwire::ProviderError;
use authwire::http::HeaderValue;

/// A header value that carries a secret: marked sensitive, so that HTTP/2's header
/// compression never indexes it and `Debug` of the request does not show it.
pub fn secret_header(value: &str) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| ProviderError::permanent("a credential cannot form a header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Read a credential kept in a file (a projected service-account token, a federated token, a
/// subject token), now: files are rotated in place. `what` names it in errors ("the assertion
/// file"). Refused with a permanent error: anything but a regular file (a FIFO or a device
/// would block until the fetch times out, a folder is a mistake), and a file over `max` bytes
/// (never silently cut). A missing file is permanent too (the volume is not mounted); other
/// read errors are transient.
pub async fn read_credential_file(
    path: &std::path::Path,
    what: &str,
    max: u64,
) -> Result<secrecy::SecretString, ProviderError> {
    use tokio::io::AsyncReadExt as _;
    let shown = path.display();
    let mut options = tokio::fs::OpenOptions::new();
    options.read(true);
    // Opening a FIFO for reading waits for a writer; non-blocking, the open returns at once
    // and the check below refuses it.
    #[cfg(unix)]
    options.custom_flags(libc::O_NONBLOCK);
    let file = options.open(path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ProviderError::permanent(format!(
            "{what} {shown} does not exist: is the token volume mounted?"
        )),
        _ => ProviderError::transient(format!("cannot read {what} {shown}: {e}")),
    })?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| ProviderError::transient(format!("cannot read {what} {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(ProviderError::permanent(format!(
            "{what} {shown} is not a regular file (a folder, a FIFO or a device): not read"
        )));
    }
    if meta.len() > max {
        return Err(ProviderError::permanent(format!(
            "{what} {shown} is larger than {max} bytes"
        )));
    }
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .await
        .map_err(|e| ProviderError::transient(format!("cannot read {what} {shown}: {e}")))?;
    if text.len() as u64 > max {
        // It grew between the check and the read.
        return Err(ProviderError::permanent(format!(
            "{what} {shown} is larger than {max} bytes"
        )));
    }
    Ok(secrecy::SecretString::from(text))
}
