//! # asl-cli (library)
//!
//! The parts of the command-line tool that other Rust code can reuse: image decoding and
//! preprocessing ([`images`]), dataset readers and a prefetching loader ([`data`]), PNG charts
//! ([`plots`]), training augmentation ([`augment`]) and the trainer ([`train`]).

pub mod augment;
pub mod data;
pub mod demo_data;
pub mod files;
pub mod images;
pub mod plots;
pub mod train;
