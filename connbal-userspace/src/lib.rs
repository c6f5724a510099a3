//! connbal: how evenly does a client spread its TCP connections across the
//! backends DNS gives it?
// Denied, not forbidden: `signals` needs one audited exception.
#![deny(unsafe_code)]

pub mod aggregator;
pub mod capture;
pub mod cli;
pub mod decode;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod output;
pub mod progress;
pub mod replay;
pub mod report;
pub mod signals;
pub mod table;
pub mod trace;
