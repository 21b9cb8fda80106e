//! `WWW-Authenticate` challenges (RFC 9110 section 11.6.1; RFC 6750 section 3 for Bearer), so
//! that HTTP adapters can tell "this token is bad, refresh it" from other 401s.
//!
//! ```
//! use authwire::challenge::{parse, Challenge};
//!
//! let c = parse(r#"Bearer realm="api", error="invalid_token", error_description="expired""#);
//! assert_eq!(c.len(), 1);
//! assert_eq!(c[0].scheme, "Bearer");
//! assert_eq!(c[0].param("error"), Some("invalid_token"));
//! assert!(c[0].says_invalid_token());
//! ```

use http::HeaderMap;
use http::header::WWW_AUTHENTICATE;

/// One challenge: a scheme with either a `token68` or parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Challenge {
    /// The auth scheme, as sent (compare case-insensitively).
    pub scheme: String,
    /// A `token68`, for schemes that use one.
    pub token68: Option<String>,
    /// The parameters, names lowercased, quoted values unescaped.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a Bearer or DPoP challenge saying the token is invalid, expired or revoked
    /// (`error="invalid_token"`, RFC 6750 section 3.1 and RFC 9449 section 7.1).
    pub fn says_invalid_token(&self) -> bool {
        let token_scheme =
            self.scheme.eq_ignore_ascii_case("bearer") || self.scheme.eq_ignore_ascii_case("dpop");
        token_scheme && self.param("error") == Some("invalid_token")
    }
}

/// Parse one `WWW-Authenticate` field value into its challenges. Lenient: malformed parts are
/// skipped, and it never panics, whatever the input.
pub fn parse(value: &str) -> Vec<Challenge> {
    let mut p = Parser {
        s: value.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip(|b| b == b',' || is_ws(b));
        if p.eof() {
            return out;
        }
        let scheme = p.token();
        if scheme.is_empty() {
            p.i += 1; // not a token character: skip it
            continue;
        }
        let mut challenge = Challenge {
            scheme,
            token68: None,
            params: Vec::new(),
        };
        p.parse_rest(&mut challenge);
        out.push(challenge);
    }
}

/// Whether a response's challenges say the token it carried was rejected.
pub fn token_rejected(headers: &HeaderMap) -> bool {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse)
        .any(|c| c.says_invalid_token())
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

impl Parser<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, pred: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.i += 1;
        }
    }

    fn take(&mut self, pred: impl Fn(u8) -> bool) -> String {
        let start = self.i;
        self.skip(pred);
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn token(&mut self) -> String {
        self.take(is_tchar)
    }

    fn quoted(&mut self) -> String {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        out.push(escaped);
                        self.i += 1;
                    }
                }
                other => out.push(other),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// After the scheme: a token68, or a comma-separated list of parameters, up to the start of
    /// the next challenge.
    fn parse_rest(&mut self, challenge: &mut Challenge) {
        let mut first = true;
        loop {
            self.skip(is_ws);
            if self.eof() {
                return;
            }
            if self.peek() == Some(b',') {
                // A comma ends a parameter; what follows is another parameter (`name=`) or the
                // next challenge (`Scheme ...`).
                let at_comma = self.i;
                self.skip(|b| b == b',' || is_ws(b));
                let mark = self.i;
                let name = self.token();
                self.skip(is_ws);
                let is_param = !name.is_empty() && self.peek() == Some(b'=') && !self.token68_ahead(mark);
                self.i = if is_param { mark } else { at_comma };
                if !is_param {
                    return;
                }
            } else if !first {
                // Two items without a comma: the next challenge starts here.
                return;
            }
            first = false;
            let start = self.i;
            if self.token68_ahead(start) {
                self.i = start;
                let mut t = self.take(is_token68_char);
                t.push_str(&self.take(|b| b == b'='));
                challenge.token68 = Some(t);
                continue;
            }
            let name = self.token();
            self.skip(is_ws);
            if name.is_empty() || self.peek() != Some(b'=') {
                if self.i == start {
                    self.i += 1; // garbage: make progress
                }
                continue;
            }
            self.i += 1; // '='
            self.skip(is_ws);
            let value = if self.peek() == Some(b'"') {
                self.quoted()
            } else {
                self.token()
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
        }
    }

    /// Whether a token68 starts at `at`: token68 characters, then `=`s, then the end, a comma or
    /// white space (so that `name=value` is not taken for one).
    fn token68_ahead(&self, at: usize) -> bool {
        let mut j = at;
        while self.s.get(j).copied().is_some_and(is_token68_char) {
            j += 1;
        }
        if j == at {
            return false;
        }
        let body_end = j;
        while self.s.get(j) == Some(&b'=') {
            j += 1;
        }
        if j == body_end {
            // No padding: a token68 only if no `=` follows after white space (`name = value`
            // is a parameter with BWS).
            while self.s.get(j).copied().is_some_and(is_ws) {
                j += 1;
            }
            return self.s.get(j) != Some(&b'=');
        }
        // Padding: `abc==` is a token68 when it ends there; `abc=def` is a parameter.
        self.s.get(j).is_none_or(|&b| b == b',' || is_ws(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn rfc_6750_examples() {
        let c = parse(r#"Bearer realm="example""#);
        assert_eq!(params(&c[0]), [("realm", "example")]);
        assert!(!c[0].says_invalid_token());
        let c = parse(
            r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("error_description"), Some("The access token expired"));
        assert!(c[0].says_invalid_token());
        let c = parse(r#"Bearer error="insufficient_scope", scope="a b""#);
        assert!(!c[0].says_invalid_token());
    }

    #[test]
    fn several_challenges_in_one_field() {
        let c = parse(r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple""#);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "Newauth");
        assert_eq!(
            params(&c[0]),
            [("realm", "apps"), ("type", "1"), ("title", "Login to \"apps\"")]
        );
        assert_eq!(c[1].scheme, "Basic");
        assert_eq!(c[1].param("realm"), Some("simple"));
        let c = parse(r#"Basic realm="x", DPoP algs="ES256", error="invalid_token""#);
        assert_eq!(c.len(), 2);
        assert!(c[1].says_invalid_token());
    }

    #[test]
    fn token68_and_bare_schemes() {
        let c = parse("Negotiate abc+/def==, Bearer");
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].token68.as_deref(), Some("abc+/def=="));
        assert_eq!(c[1].scheme, "Bearer");
        assert!(c[1].params.is_empty());
        let c = parse("Bearer");
        assert_eq!(c[0].scheme, "Bearer");
    }

    #[test]
    fn case_and_spacing_are_tolerated() {
        let c = parse("bearer   ERROR = \"invalid_token\" ,realm=x");
        assert!(c[0].says_invalid_token(), "{c:?}");
        assert_eq!(c[0].param("realm"), Some("x"));
    }

    #[test]
    fn garbage_never_panics_or_loops() {
        for s in [
            "",
            ",,,",
            "=",
            "\"",
            "Bearer \"unterminated",
            "Bearer a=\"x\\",
            "Bearer ,=,=",
            "€ Bearer error=invalid_token",
            "Bearer error=\"invalid_token\"\u{0}",
            "a b c d",
            "Bearer ===",
            "Basic ==abc",
        ] {
            let _ = parse(s);
        }
        assert!(parse("€ Bearer error=invalid_token")[0].says_invalid_token());
    }

    #[test]
    fn token_rejected_reads_every_header_field() {
        let mut h = HeaderMap::new();
        h.append(WWW_AUTHENTICATE, "Basic realm=x".parse().unwrap());
        assert!(!token_rejected(&h));
        h.append(
            WWW_AUTHENTICATE,
            r#"Bearer error="invalid_token""#.parse().unwrap(),
        );
        assert!(token_rejected(&h));
    }
}
