//! connbal: how evenly does a client spread its TCP connections across the
//! backends DNS gives it?
//!
//! The flow (ARCHITECTURE.md): a source (`capture` + `decode` for replay,
//! `trace` for the kernel's records) produces [`aggregator::Event`]s; the
//! [`pipeline`] feeds them to the pure [`aggregator`], which builds the
//! report; [`output`] prints it in the chosen format.
// Denied, not forbidden: `signals` needs one audited exception.
#![deny(unsafe_code)]

pub mod aggregator;
pub mod capture;
pub mod decode;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod output;
pub mod pipeline;
mod progress;
pub mod replay;
mod signals;
mod tally;
#[doc(hidden)]
pub mod testing;
pub mod time;
pub mod trace;

pub use error::{Error, EXIT_FAILURE};
pub use tally::Tally;
