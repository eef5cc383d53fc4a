//! The store's integration suite: the job queue on SQLite and PostgreSQL.

mod batches;
mod helpers;
mod lifecycle;
mod workers;
