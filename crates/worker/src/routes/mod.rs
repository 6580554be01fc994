//! The HTTP routes of the worker (`docs/http-api.md`), one module per group
//! of endpoints, each a `router()` over the shared [`crate::state::AppState`].
//! [`crate::app`] merges them behind the auth/shutdown/metrics guard.
//!
//! A handler reads its input through [`crate::http::Query`] (a 400 JSON
//! answer on bad input, never a panic), confines every URL before anything
//! else, then calls the [`crate::cache::ReadThrough`] engine (or the load
//! and write modules over it) and answers with [`crate::http::json`] or the
//! data headers. Errors are [`crate::error::WorkerError`]s, whose
//! `status()` is the one table from error to HTTP status.

pub mod batch;
pub mod data;
pub mod health;
pub mod load;
pub mod manage;
pub mod meta;
pub mod stats;
pub mod write;
