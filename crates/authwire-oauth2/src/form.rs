//! The form body of a request to an authorization server (`application/x-www-form-urlencoded`).
//! Secret values stay `SecretString`s until the form is serialised for the wire, and the form
//! knows every secret it carries, as sent, so that an error echoing one can be scrubbed.

use secrecy::{ExposeSecret, SecretString};

/// A form body being built. Secret values are exposed only here, when serialised for the wire.
#[derive(Clone)]
pub(crate) struct Form {
    fields: Vec<(String, FieldValue)>,
}

#[derive(Clone)]
enum FieldValue {
    Plain(String),
    Secret(SecretString),
}

impl Form {
    pub(crate) fn new() -> Self {
        Self { fields: Vec::new() }
    }

    pub(crate) fn push(&mut self, name: &str, value: &str) {
        self.fields
            .push((name.to_owned(), FieldValue::Plain(value.to_owned())));
    }

    /// Push `name` unless the form has it already (`client_id`, which a pushed authorization
    /// request carries as a request parameter and client authentication adds too).
    pub(crate) fn push_once(&mut self, name: &str, value: &str) {
        if !self.fields.iter().any(|(n, _)| n == name) {
            self.push(name, value);
        }
    }

    pub(crate) fn push_secret(&mut self, name: &str, value: SecretString) {
        self.fields.push((name.to_owned(), FieldValue::Secret(value)));
    }

    /// Every secret value of the form, as sent and as form-encoded.
    pub(crate) fn secrets(&self) -> Vec<SecretString> {
        self.fields
            .iter()
            .filter_map(|(_, v)| match v {
                FieldValue::Secret(s) => Some(encodings(s.expose_secret())),
                FieldValue::Plain(_) => None,
            })
            .flatten()
            .collect()
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.fields {
            let value = match v {
                FieldValue::Plain(p) => p.as_str(),
                FieldValue::Secret(sec) => sec.expose_secret(),
            };
            s.append_pair(k, value);
        }
        s.finish().into_bytes()
    }
}

/// A secret as sent: raw, and form-encoded when that differs.
pub(crate) fn encodings(secret: &str) -> Vec<SecretString> {
    let encoded = form_encode(secret);
    if encoded == secret {
        vec![SecretString::from(secret.to_owned())]
    } else {
        vec![SecretString::from(secret.to_owned()), SecretString::from(encoded)]
    }
}

pub(crate) fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
