//! The store's integration suite: the job queue, the outbox relay, stock holds
//! and the operational journal on SQLite and PostgreSQL.

mod batches;
mod deadline;
mod helpers;
mod holds;
mod journal;
mod lifecycle;
mod outbox;
mod runs;
mod workers;
