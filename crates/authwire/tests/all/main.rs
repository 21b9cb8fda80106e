//! Integration tests of the core pipeline (one binary, see STYLE.md).

mod extra_headers;
mod failures;
mod flights;
mod mocked;
mod proofs;
mod rejections;
mod slots;
mod step_up;
mod stores;
mod support;
