//! The tokens an emulator has issued: who for, until when.

use authwire::Clock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Opaque access tokens issued by an emulator, checked by tests.
pub(crate) struct Ledger {
    clock: Arc<dyn Clock>,
    prefix: &'static str,
    lifetime: Mutex<Duration>,
    tokens: Mutex<HashMap<String, (SystemTime, String)>>,
    serial: AtomicUsize,
}

/// A token just issued.
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) lifetime: Duration,
    pub(crate) expires: SystemTime,
}

impl Ledger {
    pub(crate) fn new(clock: Arc<dyn Clock>, prefix: &'static str, lifetime: Duration) -> Self {
        Self {
            clock,
            prefix,
            lifetime: Mutex::new(lifetime),
            tokens: Mutex::default(),
            serial: AtomicUsize::new(1),
        }
    }

    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        *self.lifetime.lock().unwrap_or_else(PoisonError::into_inner) = lifetime;
    }

    /// A new token for `who`, living the current lifetime.
    pub(crate) fn issue(&self, who: &str) -> Issued {
        let lifetime = *self.lifetime.lock().unwrap_or_else(PoisonError::into_inner);
        let token = format!(
            "{}{}-{}",
            self.prefix,
            self.serial.fetch_add(1, Ordering::SeqCst),
            authwire::random::hex(8)
        );
        let expires = self.clock.now() + lifetime;
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), (expires, who.to_owned()));
        Issued {
            token,
            lifetime,
            expires,
        }
    }

    /// Whom `token` was issued to, while it lives.
    pub(crate) fn check(&self, token: &str) -> Option<String> {
        let now = self.clock.now();
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .filter(|(exp, _)| *exp > now)
            .map(|(_, who)| who.clone())
    }
}
