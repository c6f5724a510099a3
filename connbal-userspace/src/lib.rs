//! connbal: how evenly does a client spread its TCP connections across the
//! backends DNS gives it?
#![forbid(unsafe_code)]

pub mod aggregator;
pub mod report;
