//! The business steps of checkout and payment, each a named function that
//! reads like the runbook. Handlers and workers call these; `queues` names
//! the queues the steps hand work to and builds their jobs.

pub mod checkout;
pub mod payments;
pub mod queues;
pub mod remote;
