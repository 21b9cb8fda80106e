//! The behaviour every store must have (authwire-testkit's conformance suites), for
//! `MemoryStore`. In tests/ rather than beside the code because the testkit is not published:
//! the published package leaves tests/ out and builds on its own.

use authwire_memory::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_conformance_suite() {
    authwire_testkit::conformance::store_conformance(MemoryStore::new()).await;
}

#[tokio::test]
async fn a_restarted_authorizer_reuses_the_stored_token() {
    authwire_testkit::conformance::authorizer_restart_conformance(MemoryStore::new()).await;
}
