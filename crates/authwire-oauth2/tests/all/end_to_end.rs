//! The provider driven through an `Authorizer` against a protected resource.

use crate::confidential;
use authwire::Authorizer;
use authwire_testkit::{IdentityServer, ResourceServer, Settings};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_second_tokens_are_refreshed_in_time_over_ten_seconds_of_requests() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            token_lifetime: Duration::from_secs(2),
            ..Settings::default()
        })
        .start()
        .await;
    let api = ResourceServer::start(&idp).await;
    let authorizer = Authorizer::new(confidential(&idp).build().unwrap());
    let http = reqwest::Client::new();

    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (authorizer, http, url) = (
                authorizer.clone(),
                http.clone(),
                format!("{}/v1/things", api.url()),
            );
            tokio::spawn(async move {
                let mut ok = 0u32;
                let run = async {
                    loop {
                        let mut headers = http::HeaderMap::new();
                        authorizer.authorize(&mut headers).await.expect("authorize");
                        let status = http
                            .get(&url)
                            .headers(headers)
                            .send()
                            .await
                            .expect("send")
                            .status();
                        assert_eq!(status, 200);
                        ok += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
                ok
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert_eq!(api.unauthorized(), 0, "no request went out with an expired token");
    assert!(total > 400, "requests kept flowing: {total}");
    // A background refresh may still be in flight when the run stops: let it land.
    for _ in 0..100 {
        if authorizer.metrics().fetches as usize == idp.tokens_issued() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fetched = idp.tokens_issued();
    // A 2 s token is refreshed in the background 1.0-1.2 s after it arrives: about 9 fetches in
    // 10 s, never one per request.
    assert!(
        (6..=14).contains(&fetched),
        "{fetched} tokens for {total} requests"
    );
    assert_eq!(authorizer.metrics().fetches as usize, fetched);
    assert!(
        authorizer.metrics().background_refreshes >= 5,
        "{:?}",
        authorizer.metrics()
    );
}
