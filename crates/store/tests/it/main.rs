//! The store's integration suite: the job queue and the outbox relay on
//! SQLite and PostgreSQL.

mod batches;
mod deadline;
mod helpers;
mod lifecycle;
mod outbox;
mod workers;
