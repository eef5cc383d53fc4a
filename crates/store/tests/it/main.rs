//! The store's integration suite: the job queue, the outbox relay and stock holds on
//! SQLite and PostgreSQL.

mod batches;
mod deadline;
mod helpers;
mod holds;
mod lifecycle;
mod outbox;
mod workers;
