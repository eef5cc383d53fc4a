//! Two services for real: an order node whose stock
//! lives on a separate inventory node (`serve --role inventory`), reached
//! through the fault-injecting proxy so a drill or test can make it hang,
//! reset or vanish while checkout runs.

use holdfast_service::Role;
use holdfast_service::config::{Config, InventoryMode, Secret};

use crate::harness::{self, Database, RunningService};
use crate::proxy::{Proxy, Toxic};

/// The name of the toxic [`RemoteInventory::hang`] adds.
pub const HANG: &str = "inventory_hang";

pub struct RemoteInventory {
    /// The inventory node (its own database).
    pub inventory: RunningService,
    /// Between the order node and the inventory node.
    pub proxy: Proxy,
    /// The order node, `inventory.mode = "remote"` through `proxy`.
    pub orders: RunningService,
}

impl RemoteInventory {
    /// Starts both nodes on fresh databases of `database`'s kind; `tweak`
    /// adjusts the order node's config (deadlines, breaker thresholds).
    pub async fn start(database: &Database, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let inventory = harness::start_as(database, Role::Inventory, |_| {}).await?;
        let upstream = inventory.base_url.trim_start_matches("http://").to_owned();
        let proxy = Proxy::start("127.0.0.1:0".parse()?, upstream).await?;
        let url = format!("http://{}", proxy.local_addr());
        let api_key = inventory.admin_key.clone();
        let orders = harness::start(database, |config| {
            config.inventory.mode = InventoryMode::Remote;
            config.inventory.url = url;
            config.inventory.api_key = Secret::new(api_key);
            tweak(config);
        })
        .await;
        let orders = match orders {
            Ok(orders) => orders,
            Err(error) => {
                proxy.stop().await;
                let _ = inventory.stop().await;
                return Err(error);
            }
        };
        Ok(Self {
            inventory,
            proxy,
            orders,
        })
    }

    /// The order node's configuration.
    pub fn orders_config(&self) -> &Config {
        &self.orders.config
    }

    /// The inventory node accepts connections and never answers (open ones
    /// included): a hung dependency (docs/incidents.md).
    pub fn hang(&self) -> anyhow::Result<()> {
        self.proxy.add_toxic(Toxic::timeout(0).named(HANG))?;
        Ok(())
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.proxy.remove_all_toxics();
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.heal();
        let orders = self.orders.stop().await;
        self.proxy.stop().await;
        let inventory = self.inventory.stop().await;
        orders.and(inventory)
    }
}
