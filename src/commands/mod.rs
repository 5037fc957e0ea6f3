//! One module per subcommand. Each returns an [`Outcome`](crate::report::Outcome); none prints
//! or exits.

pub mod adopt;
pub mod check;
pub mod dump;
pub mod list;
pub mod notify;
pub mod pin;
pub mod ping;
pub mod prune;
pub mod restore;
pub mod ship;
pub mod verify;
