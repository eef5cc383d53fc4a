//! The business steps of checkout and payment, each a named function that
//! reads like the runbook. Handlers and workers call these; they know
//! nothing of HTTP.

pub mod checkout;
pub mod payments;
pub mod remote;
