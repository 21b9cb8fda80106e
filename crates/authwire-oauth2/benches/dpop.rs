//! What a DPoP proof costs (issue 14): the raw ES256 signature of each backend available here,
//! beside a whole proof (claims, base64url, SHA-256 for `ath`, the signature). One run, one
//! machine, so the figures compare. Recorded in docs/PERFORMANCE.md.

use authwire::secrecy::ExposeSecret;
use authwire_oauth2::{DpopKey, DpopProof};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

/// What a proof signs: about as long as a real proof's signing input.
const MESSAGE: &[u8; 260] = &[b'x'; 260];

fn backends(c: &mut Criterion) {
    let key = DpopKey::generate_es256().unwrap();
    let pem = key.to_pkcs8_pem();
    let der = pem_to_der(pem.expose_secret());
    let mut group = c.benchmark_group("es256_sign");

    let p256_key = {
        use p256::pkcs8::DecodePrivateKey;
        p256::ecdsa::SigningKey::from_pkcs8_der(&der).unwrap()
    };
    group.bench_function("p256", |b| {
        use p256::ecdsa::signature::Signer;
        b.iter(|| {
            let s: p256::ecdsa::Signature = p256_key.sign(black_box(MESSAGE));
            black_box(s)
        })
    });

    let ring_rng = ring::rand::SystemRandom::new();
    let ring_key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &ring_rng,
    )
    .unwrap();
    group.bench_function("ring", |b| {
        b.iter(|| black_box(ring_key.sign(&ring_rng, black_box(MESSAGE)).unwrap()))
    });

    let aws_rng = aws_lc_rs::rand::SystemRandom::new();
    let aws_key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
    )
    .unwrap();
    group.bench_function("aws-lc-rs", |b| {
        b.iter(|| black_box(aws_key.sign(&aws_rng, black_box(MESSAGE)).unwrap()))
    });
    group.finish();

    let mut group = c.benchmark_group("dpop_proof");
    let proof = DpopProof {
        method: "POST",
        uri: "https://api.example/v1/orders?dry_run=1",
        access_token: Some(
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzdmMiLCJleHAiOjE5MDAwMDAwMDB9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU",
        ),
        nonce: Some("server-nonce-1"),
        issued_at: UNIX_EPOCH + Duration::from_secs(1_900_000_000),
    };
    group.bench_function("full_proof", |b| {
        b.iter(|| black_box(key.proof(black_box(&proof)).unwrap()))
    });
    group.finish();
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = backends
}
criterion_main!(benches);
