//! Client-side commands of the `stow-exporter` binary that are more than a
//! call into the library: the `tasks` group, a client of a running
//! service's control API ([`tasks`]), and `export --wait`, which follows a
//! published task to its end ([`wait`]).
//!
//! They live in the library, not in `main.rs`, so that the command line
//! stays a thin dispatch and the logic (requests, error wording, table
//! layout, exit codes) is unit-testable.

pub mod tasks;
pub mod wait;
