//! The state pvescale carries from one run to the next: its model (pure data, what the
//! policy reads and returns) and its store (a versioned JSON file, written atomically,
//! guarded by an exclusive lock beside it).

pub mod model;
pub mod store;

pub use model::*;
pub use store::{LOCK_FILE, LockError, PreparedSave, StateLock};
