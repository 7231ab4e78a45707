//! Key names. The legacy flag keeps GitLab's literal name, so processes with
//! the flag off and on share it during a rolling deploy. The tracking keys use
//! that name as their hash tag: `{mr_42_cannot_merge}` hashes to the same
//! Cluster slot as `mr_42_cannot_merge`, so one script may touch all three.

use crate::error::{Error, Result};

/// The global index of merge requests with kept resets, read by the sweep.
pub const DUE_INDEX: &str = "approval_sync:due";

/// A merge request id, checked to be positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MrId(u64);

impl MrId {
    /// Accepts any id from 1 up to `i64::MAX`, the range of a database id.
    pub fn new(id: i64) -> Result<MrId> {
        if id <= 0 {
            return Err(Error::InvalidArgument(format!(
                "merge request id must be a positive integer, got {id}"
            )));
        }
        Ok(MrId(id as u64))
    }

    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// The three keys of one merge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MrKeys {
    /// `mr_{id}_cannot_merge`: GitLab's legacy flag.
    pub legacy: String,
    /// Sorted set of live sync markers, scored by deadline.
    pub markers: String,
    /// Hash of kept resets.
    pub resets: String,
}

impl MrKeys {
    /// The keys of merge request `id`.
    pub fn new(id: MrId) -> MrKeys {
        let legacy = format!("mr_{}_cannot_merge", id.get());
        MrKeys {
            markers: format!("approval_sync:{{{legacy}}}:markers"),
            resets: format!("approval_sync:{{{legacy}}}:resets"),
            legacy,
        }
    }

    /// The keys in the order every script expects them.
    pub fn all(&self) -> [&str; 3] {
        [&self.legacy, &self.markers, &self.resets]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_key_is_gitlabs_literal_name() {
        let keys = MrKeys::new(MrId::new(42).unwrap());
        assert_eq!(keys.legacy, "mr_42_cannot_merge");
        assert_eq!(keys.markers, "approval_sync:{mr_42_cannot_merge}:markers");
        assert_eq!(keys.resets, "approval_sync:{mr_42_cannot_merge}:resets");
    }

    #[test]
    fn every_key_of_a_merge_request_shares_one_slot() {
        for id in [1, 42, 43, 99_999, i64::MAX] {
            let keys = MrKeys::new(MrId::new(id).unwrap());
            let slot = crate::slot::key_slot(&keys.legacy);
            assert_eq!(crate::slot::key_slot(&keys.markers), slot, "id {id}");
            assert_eq!(crate::slot::key_slot(&keys.resets), slot, "id {id}");
        }
    }

    #[test]
    fn rejects_ids_that_are_not_positive() {
        for id in [0, -1, i64::MIN] {
            assert!(matches!(MrId::new(id), Err(Error::InvalidArgument(_))));
        }
    }
}
