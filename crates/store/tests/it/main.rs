//! The store's integration suite: the job queue, the outbox relay and the
//! operational journal on SQLite and PostgreSQL.

mod batches;
mod deadline;
mod helpers;
mod journal;
mod lifecycle;
mod outbox;
mod workers;
