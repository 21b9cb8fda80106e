//! authwire-jwt against fixed RFC example tokens and tokens signed by the testkit's identity
//! server, over real HTTP where keys are fetched.

mod expiry;
mod fuzz;
mod verify;

use std::time::{Duration, UNIX_EPOCH};

/// RFC 7519 section 3.1 (HS256).
const RFC7519_EXAMPLE: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// RFC 7519 section 6.1: an unsecured JWT (`alg: none`, empty signature).
const RFC7519_UNSECURED: &str = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";

#[test]
fn rfc_7519_example_tokens() {
    for token in [RFC7519_EXAMPLE, RFC7519_UNSECURED] {
        let c = authwire_jwt::inspect(token).unwrap();
        assert_eq!(c.issuer(), Some("joe"));
        assert_eq!(
            c.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(1_300_819_380))
        );
        assert_eq!(c.all()["http://example.com/is_root"], true);
    }
    assert_eq!(
        authwire_jwt::inspect(RFC7519_UNSECURED).unwrap().algorithm(),
        Some("none")
    );
}
