//! The OAuth2 provider against the testkit's identity server, over real HTTP on loopback.

mod discovery;
mod end_to_end;
mod errors;
mod grants;

use authwire_oauth2::{OAuth2Provider, OAuth2ProviderBuilder};
use authwire_testkit::{Client, IdentityServer};

/// A builder for the default confidential client of `idp`.
fn confidential(idp: &IdentityServer) -> OAuth2ProviderBuilder {
    OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
}
