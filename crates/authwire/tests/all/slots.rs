//! The per-thread slots of the cached path: a thread serves a header from its own slot only
//! while that header's entry is its authorizer's current one, and step 1 still runs on every
//! call.

use crate::support::{Scripted, ok, t0, token};
use authwire::{Authorizer, ManualClock};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

fn named(n: u32) -> Authorizer {
    Authorizer::builder(Scripted::new([ok(token(n, t0(), HOUR))]))
        .clock(ManualClock::new(t0()))
        .jitter(false)
        .build()
}

#[tokio::test]
async fn many_authorizers_on_one_thread_each_get_their_own_header() {
    // More authorizers than a thread has slots, so slots are shared and replaced.
    let authorizers: Vec<Authorizer> = (0..40).map(named).collect();
    for round in 0..3 {
        for (n, auth) in authorizers.iter().enumerate() {
            let header = auth.authorization_header().await.unwrap();
            assert_eq!(header, format!("Bearer access-{n}").as_str(), "round {round}");
        }
        for (n, auth) in authorizers.iter().enumerate().rev() {
            let header = auth.cached_authorization_header().unwrap();
            assert_eq!(header, format!("Bearer access-{n}").as_str(), "round {round}");
        }
    }
    // Authorizers made after these are dropped (perhaps at the same addresses) never see
    // the old headers that the slots still hold.
    drop(authorizers);
    for n in 100..140 {
        let auth = named(n);
        assert_eq!(auth.cached_authorization_header(), None, "nothing fetched yet");
        assert_eq!(
            auth.authorization_header().await.unwrap(),
            format!("Bearer access-{n}").as_str()
        );
    }
}

#[tokio::test]
async fn a_forgotten_token_is_not_served_from_the_slot() {
    let provider = Scripted::new([ok(token(1, t0(), HOUR)), ok(token(2, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(ManualClock::new(t0()))
        .build();
    let first = auth.authorization_header().await.unwrap();
    assert_eq!(
        auth.authorization_header().await.unwrap(),
        first,
        "served from the slot"
    );
    assert!(auth.invalidate(&first));
    assert_eq!(auth.cached_authorization_header(), None);
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert_eq!(provider.calls(), 2);
}

#[tokio::test]
async fn step_1_runs_on_the_slots_schedule() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([ok(token(1, t0(), HOUR)), ok(token(2, t0(), 3 * HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .jitter(false)
        .build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    assert_eq!(auth.cached_authorization_header().unwrap(), "Bearer access-1");
    // Past the expiry margin the slot's copy must not be used, though it is the current entry.
    clock.advance(HOUR);
    assert_eq!(auth.cached_authorization_header(), None);
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert_eq!(provider.calls(), 2);
}

#[test]
fn a_token_replaced_on_another_thread_is_not_served_from_this_threads_slot() {
    let provider = Scripted::new([ok(token(1, t0(), HOUR)), ok(token(2, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(ManualClock::new(t0()))
        .build();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime().block_on(auth.authorization_header()).unwrap();
    assert_eq!(
        auth.cached_authorization_header().unwrap(),
        first,
        "this thread's slot is filled"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            let seen = auth.cached_authorization_header().unwrap();
            assert!(auth.invalidate(&seen));
            assert_eq!(
                runtime().block_on(auth.authorization_header()).unwrap(),
                "Bearer access-2"
            );
        });
    });
    assert_eq!(auth.cached_authorization_header().unwrap(), "Bearer access-2");
    assert_eq!(provider.calls(), 2);
}
