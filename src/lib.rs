//! approval_sync: deterministic tracking of approval-rule syncs and the
//! approval resets that must wait for them, kept in Redis.
//!
//! The core (this crate without the `ruby` feature) knows nothing of Ruby:
//! [`tracker::Tracker`] runs each operation as one atomic step on the server.
//! The `ruby` feature adds the thin binding that the gem loads.

pub mod config;
pub mod conn;
pub mod error;
pub mod keys;
pub mod member;
pub mod scripts;
pub mod slot;
pub mod tracker;

#[cfg(feature = "ruby")]
mod ruby;

pub use config::{Config, Tls, Topology};
pub use conn::Cancel;
pub use error::{Error, Result};
pub use keys::{MrId, MrKeys};
pub use member::{Kind, Member};
pub use tracker::{Job, Outcome, Snapshot, Status, Tracker};
