//! `authwire login`: log a person in through the browser or with the device flow, and cache
//! the refresh token.

use crate::args::{Credentials, LoginArgs};
use crate::error::CliError;
use crate::interactive::{self, LoginOptions};
use crate::settings;

/// Run `authwire login`.
pub(crate) async fn exec(credentials: &Credentials, args: LoginArgs) -> Result<u8, CliError> {
    let s = settings::resolve(credentials).await?;
    let options = LoginOptions {
        browser: args.browser,
        device: args.device,
        no_open: args.no_open,
        prompt: args.prompt,
        login_hint: args.login_hint,
        timeout: args.timeout,
        acr_values: args.acr_values,
        max_age: args.max_age,
    };
    interactive::log_in(&s, &options).await
}
