//! # asl-cli (library)
//!
//! The parts of the command-line tool that other Rust code can reuse: image decoding and
//! preprocessing ([`images`]).

pub mod data;
pub mod images;
pub mod plots;
