//! One module per subcommand. Each returns an [`Outcome`](crate::report::Outcome); none prints
//! or exits.

pub mod dump;
pub mod list;
pub mod ship;
pub mod check;
pub mod pin;
pub mod prune;
