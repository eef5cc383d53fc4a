//! Applies payment provider events recorded by the webhook endpoint.

use holdfast_store::SharedStore;

pub const BATCH: i64 = 100;

pub async fn tick(store: &SharedStore) -> anyhow::Result<usize> {
    Ok(crate::pipeline::payments::process_inbox_once(store, BATCH).await?)
}
