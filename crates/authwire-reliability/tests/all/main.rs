//! Reliability and security evidence; see docs/RELIABILITY.md.

mod faults;
mod fuzz;
mod leaks;
