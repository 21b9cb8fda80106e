//! Integration tests of the core pipeline (one binary, see STYLE.md).

mod failures;
mod flights;
mod mocked;
mod rejections;
mod stores;
mod support;
