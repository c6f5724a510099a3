//! `-a`: flows found open before DNS named either end. A flow seen before
//! its address was known counts once that address is answered, while it
//! is still open (docs/semantics.md section 4): a pool of long-lived
//! connections opened before the trace, whose app re-resolves later, is
//! that pool's connections, not nothing.

use super::bounded::FifoMap;
use super::client::Client;
use super::flows::FlowKey;
use std::net::IpAddr;

/// Flows waiting, and (client, address) pairs they wait on; both evict
/// their oldest when full (counted: such a flow never counts).
pub const MAX_WAITING_FLOWS: usize = 1 << 16;
/// Flows kept per (client, address): a port scan under -a adds one each.
const MAX_FLOWS_PER_ADDRESS: usize = 64;

#[derive(Debug)]
pub struct WaitingFlows {
    /// By the (client, address) that would make the flow count: the flow
    /// and the address's port.
    by_address: FifoMap<(Client, IpAddr), Vec<(FlowKey, u16)>>,
    /// The flows still waiting (open and uncounted).
    open: FifoMap<FlowKey, ()>,
    /// Flows forgotten before either end was answered.
    pub evicted: u64,
}

impl Default for WaitingFlows {
    fn default() -> Self {
        Self {
            by_address: FifoMap::with_cap(MAX_WAITING_FLOWS),
            open: FifoMap::with_cap(MAX_WAITING_FLOWS),
            evicted: 0,
        }
    }
}

impl WaitingFlows {
    /// Forgets the flows waiting for the clients `gone` says are gone
    /// (their entries in `open` age out with the FIFO).
    pub fn forget(&mut self, gone: &dyn Fn(&Client) -> bool) {
        self.by_address.retain(|(client, _), _| !gone(client));
    }

    pub fn is_empty(&self) -> bool {
        self.open.len() == 0
    }

    /// A flow found open whose ends are no backend yet: each side, the
    /// client and the other end's address and port.
    pub fn wait(&mut self, flow: FlowKey, sides: [(Client, IpAddr, u16); 2]) {
        self.evicted += u64::from(self.open.insert(flow, ()));
        for (client, address, port) in sides {
            let key = (client, address);
            if let Some(flows) = self.by_address.get_mut(&key) {
                if flows.len() < MAX_FLOWS_PER_ADDRESS {
                    flows.push((flow, port));
                } else {
                    self.evicted += 1;
                }
            } else if self.by_address.insert(key, vec![(flow, port)]) {
                self.evicted += 1;
            }
        }
    }

    /// The flow closed (FIN or reset) before it could count.
    pub fn closed(&mut self, flow: FlowKey) {
        self.open.remove(&flow);
    }

    /// `address` was just answered to `client`: the ports of the flows that
    /// waited on it and are still open, each counted once (its other side
    /// stops waiting).
    pub fn answered(&mut self, client: &Client, address: IpAddr, ports: &mut Vec<u16>) {
        let Some(flows) = self.by_address.remove(&(client.clone(), address)) else {
            return;
        };
        for (flow, port) in flows {
            if self.open.remove(&flow).is_some() {
                ports.push(port);
            }
        }
    }
}
