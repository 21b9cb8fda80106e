//! Property tests over `inspect`: no input makes it panic (cargo-fuzz needs a nightly toolchain,
//! which CI does not have; see docs/jwt.md).

use base64::Engine as _;
use proptest::prelude::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        let _ = authwire_jwt::inspect(&s);
    }

    #[test]
    fn three_segments_of_arbitrary_bytes_never_panic(h in any::<Vec<u8>>(), p in any::<Vec<u8>>(), sig in "[A-Za-z0-9_-]{0,20}") {
        let _ = authwire_jwt::inspect(&format!("{}.{}.{sig}", b64(&h), b64(&p)));
    }

    #[test]
    fn json_payloads_with_odd_dates_never_panic(exp in any::<f64>(), iat in any::<i64>(), nbf in "[0-9eE.+-]{1,30}") {
        let payload = format!(r#"{{"exp":{},"iat":{iat},"nbf":{nbf}}}"#, if exp.is_finite() { exp.to_string() } else { "0".into() });
        let _ = authwire_jwt::inspect(&format!("{}.{}.x", b64(br#"{"alg":"RS256"}"#), b64(payload.as_bytes())));
    }

    #[test]
    fn a_valid_token_is_read_back(sub in "[a-z0-9-]{1,40}", exp in 0u64..253_402_300_799) {
        let payload = format!(r#"{{"sub":"{sub}","exp":{exp}}}"#);
        let c = authwire_jwt::inspect(&format!("{}.{}.sig", b64(br#"{"alg":"ES256"}"#), b64(payload.as_bytes()))).unwrap();
        prop_assert_eq!(c.subject(), Some(sub.as_str()));
        prop_assert_eq!(c.expires_at(), Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp)));
    }
}
