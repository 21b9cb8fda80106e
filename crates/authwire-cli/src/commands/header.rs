//! `authwire header`: the line `Authorization: SCHEME TOKEN` (step 4 of the pipeline, printed).

use crate::args::Credentials;
use crate::error::CliError;
use crate::output::out;
use crate::settings;
use crate::trace::{self, Trace};

/// Run `authwire header`.
pub(crate) async fn exec(credentials: &Credentials, trace: &Trace) -> Result<u8, CliError> {
    let s = settings::resolve(credentials).await?;
    let authorizer = s.authorizer();
    trace::token(&authorizer, &s, trace).await?;
    let header = authorizer
        .authorization_header()
        .await
        .map_err(|e| CliError::auth(&e, &s))?;
    trace.step(
        "step 4 prepare",
        "Authorization header prepared (marked sensitive)",
    );
    let value = header
        .to_str()
        .map_err(|_| CliError::config("the header is not printable"))?;
    out(&format!("Authorization: {value}\n"))
}
