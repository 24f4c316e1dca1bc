//! One module per subcommand: its flags, and the printing around the library call.

pub mod bench;
pub mod convert;
pub mod demo;
pub mod infer;
pub mod models;
pub mod train;
pub mod validate;
