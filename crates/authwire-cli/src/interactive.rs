//! Logging a person in: through the browser (authorization code with PKCE on a loopback
//! redirect) or with the device flow, then keeping the token in the cache. `authwire login`
//! runs it, and so do the credential helpers when their caller says a person is there.

use crate::browser;
use crate::error::CliError;
use crate::output::human_duration;
use crate::settings::Settings;
use authwire::{AuthError, error_chain};
use std::time::Duration;

/// How to log in.
pub(crate) struct LoginOptions {
    /// Insist on the browser.
    pub(crate) browser: bool,
    /// Insist on the device flow.
    pub(crate) device: bool,
    /// Print the URL, do not open a browser.
    pub(crate) no_open: bool,
    /// OpenID Connect `prompt`.
    pub(crate) prompt: Option<String>,
    /// OpenID Connect `login_hint`.
    pub(crate) login_hint: Option<String>,
    /// How long to wait for the person.
    pub(crate) timeout: Duration,
    /// OpenID Connect `acr_values` (a step-up).
    pub(crate) acr_values: Option<String>,
    /// OpenID Connect `max_age`, in seconds.
    pub(crate) max_age: Option<u64>,
}

impl Default for LoginOptions {
    /// What a helper uses when it must log a person in: the default choice, 5 minutes.
    fn default() -> Self {
        Self {
            browser: false,
            device: false,
            no_open: false,
            prompt: None,
            login_hint: None,
            timeout: Duration::from_secs(300),
            acr_values: None,
            max_age: None,
        }
    }
}

/// Which way to log in: what the user asked for, else the browser when one can be opened here
/// and the server has an authorization endpoint, else the device flow.
async fn use_browser(s: &Settings, o: &LoginOptions) -> bool {
    if o.browser || o.device {
        return o.browser;
    }
    // Only the browser flow carries acr_values and max_age.
    if o.acr_values.is_some() || o.max_age.is_some() {
        return true;
    }
    let can_open = o.no_open || browser::available();
    let Ok(provider) = s.oauth2("login") else {
        return false;
    };
    can_open && provider.authorization_endpoint().await.is_ok()
}

/// Log a person in and save the token (with its refresh token) in the settings' cache.
pub(crate) async fn log_in(s: &Settings, o: &LoginOptions) -> Result<u8, CliError> {
    let Some((store, description)) = &s.store else {
        return Err(CliError::config(
            "login needs a cache to keep the refresh token in (not --cache none)",
        ));
    };
    let provider = s.oauth2("login")?;
    let token = if use_browser(s, o).await {
        let mut options = authwire_oauth2::BrowserLogin::new().timeout(o.timeout);
        if let Some(p) = &o.prompt {
            options = options.prompt(p);
        }
        if let Some(h) = &o.login_hint {
            options = options.login_hint(h);
        }
        if let Some(a) = &o.acr_values {
            options = options.acr_values(a);
        }
        if let Some(m) = o.max_age {
            options = options.max_age(m);
        }
        // The URL carries no secret (state and the PKCE challenge are single-use and public);
        // the code comes back to our listener, never to the terminal.
        provider
            .browser_login_with(&options, |url| {
                eprintln!("authwire: to log in, open this URL in a browser:\n\n    {url}\n");
                if !o.no_open {
                    match browser::open(url.as_str()) {
                        Ok(how) => eprintln!("authwire: opened it with {how}"),
                        Err(why) => {
                            eprintln!("authwire: could not open a browser ({why}); open the URL yourself")
                        }
                    }
                }
                eprintln!(
                    "authwire: waiting for the browser to come back (up to {})...",
                    human_duration(o.timeout)
                );
            })
            .await
    } else {
        provider
            .device_login(|p| {
                let url = p
                    .verification_uri_complete
                    .as_deref()
                    .unwrap_or(&p.verification_uri);
                eprintln!("authwire: open {url} and enter the code {}", p.user_code);
                eprintln!(
                    "authwire: waiting for approval (the code expires in {})...",
                    human_duration(p.expires_in)
                );
            })
            .await
    }
    .map_err(|e| CliError::auth(&AuthError::Refresh(e), s))?;
    store
        .save(&s.cache_key(), &token)
        .await
        .map_err(|e| CliError::config(error_chain(&e)))?;
    let refresh = if token.refresh_token().is_some() {
        "with a refresh token"
    } else {
        "without a refresh token"
    };
    eprintln!("authwire: logged in; token cached {refresh} in the {description}");
    Ok(0)
}
