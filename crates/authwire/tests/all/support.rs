//! Test doubles for the core's integration tests.

use authwire::{CacheKey, IdentityProvider, ProviderError, StoreError, Token, TokenStore, async_trait};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;

pub(crate) const T0_SECS: u64 = 1_900_000_000;

pub(crate) fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0_SECS)
}

/// What the scripted provider answers, in order; the last answer repeats.
pub(crate) enum Answer {
    Token(Token),
    Error(ProviderError),
}

/// A provider that answers from a script, counts calls, records the `current` token it was
/// given, and can be held at a gate until the test releases it.
#[derive(Clone)]
pub(crate) struct Scripted {
    inner: Arc<ScriptedInner>,
}

struct ScriptedInner {
    answers: Mutex<VecDeque<Answer>>,
    last: Mutex<Option<Answer>>,
    calls: AtomicUsize,
    completed: AtomicUsize,
    seen_refresh_tokens: Mutex<Vec<Option<String>>>,
    gate: Option<Semaphore>,
    dropped_mid_call: AtomicBool,
}

impl Scripted {
    pub(crate) fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
        Self::build(answers, false)
    }

    /// Every call waits for [`Scripted::release`].
    pub(crate) fn gated(answers: impl IntoIterator<Item = Answer>) -> Self {
        Self::build(answers, true)
    }

    fn build(answers: impl IntoIterator<Item = Answer>, gated: bool) -> Self {
        Self {
            inner: Arc::new(ScriptedInner {
                answers: Mutex::new(answers.into_iter().collect()),
                last: Mutex::new(None),
                calls: AtomicUsize::new(0),
                completed: AtomicUsize::new(0),
                seen_refresh_tokens: Mutex::new(Vec::new()),
                gate: gated.then(|| Semaphore::new(0)),
                dropped_mid_call: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn release(&self, calls: usize) {
        self.inner.gate.as_ref().expect("not gated").add_permits(calls);
    }

    pub(crate) fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn completed(&self) -> usize {
        self.inner.completed.load(Ordering::SeqCst)
    }

    pub(crate) fn dropped_mid_call(&self) -> bool {
        self.inner.dropped_mid_call.load(Ordering::SeqCst)
    }

    /// The refresh token of the `current` token passed to each call.
    pub(crate) fn seen_refresh_tokens(&self) -> Vec<Option<String>> {
        self.inner.seen_refresh_tokens.lock().unwrap().clone()
    }

    fn next_answer(&self) -> Result<Token, ProviderError> {
        let mut answers = self.inner.answers.lock().unwrap();
        let mut last = self.inner.last.lock().unwrap();
        if let Some(a) = answers.pop_front() {
            *last = Some(a);
        }
        match last.as_ref().expect("script is empty") {
            Answer::Token(t) => Ok(t.clone()),
            Answer::Error(e) => Err(e.clone()),
        }
    }
}

struct DropFlag<'a>(&'a AtomicBool, bool);

impl Drop for DropFlag<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl IdentityProvider for Scripted {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        use secrecy::ExposeSecret;
        self.inner.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.seen_refresh_tokens.lock().unwrap().push(
            current
                .and_then(|t| t.refresh_token())
                .map(|r| r.expose_secret().to_owned()),
        );
        let mut flag = DropFlag(&self.inner.dropped_mid_call, false);
        if let Some(gate) = &self.inner.gate {
            gate.acquire().await.expect("gate closed").forget();
        }
        flag.1 = true;
        let answer = self.next_answer();
        self.inner.completed.fetch_add(1, Ordering::SeqCst);
        answer
    }

    fn cache_key(&self) -> CacheKey {
        CacheKey::from_static("scripted")
    }
}

/// A token `n` that expires `life` after `from`.
pub(crate) fn token(n: u32, from: SystemTime, life: Duration) -> Token {
    Token::new(format!("access-{n}")).with_expires_at(from + life)
}

pub(crate) fn ok(t: Token) -> Answer {
    Answer::Token(t)
}

pub(crate) fn err(e: ProviderError) -> Answer {
    Answer::Error(e)
}

/// A store in memory with switchable failures, recording the order of operations.
#[derive(Clone, Default)]
pub(crate) struct TestStore {
    pub(crate) map: Arc<Mutex<HashMap<CacheKey, Token>>>,
    pub(crate) fail_load: Arc<AtomicBool>,
    pub(crate) fail_save: Arc<AtomicBool>,
    pub(crate) hang: Arc<AtomicBool>,
    pub(crate) loads: Arc<AtomicUsize>,
    pub(crate) saves: Arc<AtomicUsize>,
}

impl TestStore {
    pub(crate) fn get(&self, key: &str) -> Option<Token> {
        self.map.lock().unwrap().get(&CacheKey::new(key)).cloned()
    }

    pub(crate) fn put(&self, key: &str, token: Token) {
        self.map.lock().unwrap().insert(CacheKey::new(key), token);
    }
}

#[async_trait]
impl TokenStore for TestStore {
    async fn load(&self, key: &CacheKey) -> Result<Option<Token>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.fail_load.load(Ordering::SeqCst) {
            return Err(StoreError::new("load failed on purpose"));
        }
        Ok(self.map.lock().unwrap().get(key).cloned())
    }

    async fn save(&self, key: &CacheKey, token: &Token) -> Result<(), StoreError> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        if self.fail_save.load(Ordering::SeqCst) {
            return Err(StoreError::new("save failed on purpose"));
        }
        self.map.lock().unwrap().insert(key.clone(), token.clone());
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.map.lock().unwrap().remove(key);
        Ok(())
    }
}

/// Let spawned tasks on the current-thread runtime run until `done` holds (bounded).
pub(crate) async fn settle(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached after 10,000 yields");
}

/// Run `f` to completion, moving `clock` to the deadline of its earliest sleep whenever every
/// task is waiting: the `ManualClock` counterpart of tokio's paused time. Timeouts, lease polls
/// and backoff waits all sleep on the authorizer's clock.
pub(crate) async fn drive<F: std::future::Future>(clock: &authwire::ManualClock, f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    for _ in 0..100_000 {
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(out) = polled {
            return out;
        }
        // Let spawned flights run up to their next wait.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        if let Some(due) = clock.next_wake() {
            if due > authwire::Clock::now(clock) {
                clock.set(due);
            } else {
                clock.advance(std::time::Duration::ZERO);
            }
        }
    }
    panic!("drive: the future never completed")
}
