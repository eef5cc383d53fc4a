//! Prefixed random identifiers in Stripe's style (`pi_3Nx…`, `evt_…`, `shp_…`).

use rand::Rng;
use rand::distributions::Alphanumeric;

/// `prefix_` followed by 24 random alphanumeric characters.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_alnum(24))
}

pub(crate) fn random_alnum(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Current Unix time in seconds, the unit Stripe objects use for `created`.
pub(crate) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}
