//! The OAuth2 provider against the testkit's identity server, over real HTTP on loopback.

mod browser;
mod discovery;
mod dpop;
mod end_to_end;
mod enterprise;
mod errors;
mod grants;
mod mtls;
mod transport;

use authwire_oauth2::OAuth2ProviderBuilder;
use authwire_testkit::IdentityServer;

/// A builder for the default confidential client of `idp`.
fn confidential(idp: &IdentityServer) -> OAuth2ProviderBuilder {
    idp.confidential_client()
}
