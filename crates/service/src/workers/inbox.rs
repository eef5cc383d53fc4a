//! Applies payment provider events recorded by the webhook endpoint.

use super::context::WorkerContext;
use crate::pipeline::queues;

pub const BATCH: i64 = 100;

pub async fn tick(ctx: &WorkerContext) -> anyhow::Result<usize> {
    let fulfillment = ctx.deps.config.queues.fulfillment.template(queues::FULFILLMENT);
    let done = crate::pipeline::payments::process_inbox_once(&ctx.deps.store, BATCH, &fulfillment).await?;
    if done > 0 {
        ctx.wake.fulfillment.notify_one();
        ctx.wake.relay.notify_one();
    }
    Ok(done)
}
