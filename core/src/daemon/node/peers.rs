//! A node's links: to the head (registration, heartbeats, the view of the cluster it
//! answers with) and to its peers (tasks and actors handed on, results coming back,
//! and what is lost when a peer goes away).

use std::sync::Arc;
use std::time::Duration;

use super::{ActorPlace, Node, Peer};
use crate::error::Error;
use crate::id::ObjectId;
use crate::sched::Capacity;
use crate::wire::{self, Msg, NodeView, Role, WireError};

impl Node {
    pub(super) async fn heartbeats(self: Arc<Self>) {
        loop {
            if let Err(e) = self.clone().heartbeat_session().await {
                tracing::warn!(node = %self.id, "node: lost the head ({e}); reconnecting");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn heartbeat_session(self: Arc<Self>) -> Result<(), WireError> {
        let role = Role::Node {
            node_id: self.id.clone(),
        };
        let (mut head, _) = wire::connect(&self.options.head, &self.options.token, role).await?;
        let me = self.view(&self.lock());
        wire::write_msg(&mut head, &Msg::RegisterNode { node: me }).await?;
        loop {
            match wire::read_msg(&mut head).await? {
                Msg::ClusterView { nodes } => self.update_peers(nodes),
                other => tracing::warn!("node: unexpected {} from the head", other.name()),
            }
            tokio::time::sleep(self.options.heartbeat).await;
            let (events, batches) = self.events_for_head();
            let hb = {
                let mut st = self.lock();
                let processes = self.processes(&mut st);
                Msg::Heartbeat {
                    processes,
                    available: st.available.amounts(),
                    queued: st.queue.len() as u32,
                    running: st.running,
                    pending: self.pending(&st),
                    events,
                    batches,
                }
            };
            wire::write_msg(&mut head, &hb).await?;
        }
    }

    fn update_peers(self: &Arc<Self>, nodes: Vec<NodeView>) {
        let mut connect = Vec::new();
        {
            let mut st = self.lock();
            for n in nodes {
                if n.node_id == self.id {
                    continue;
                }
                let peer = st.peers.entry(n.node_id.clone()).or_insert_with(|| Peer {
                    view: n.clone(),
                    total: Capacity::from_amounts(&n.total),
                    cpus: 0.0,
                    outbox: None,
                    connecting: false,
                    outstanding: 0,
                });
                if peer.view.total != n.total {
                    peer.total = Capacity::from_amounts(&n.total);
                }
                peer.cpus = n
                    .total
                    .iter()
                    .find(|(name, _)| name == "CPU")
                    .map_or(0.0, |(_, v)| *v);
                peer.view = n;
                if peer.view.alive && peer.outbox.is_none() && !peer.connecting {
                    peer.connecting = true;
                    connect.push((peer.view.node_id.clone(), peer.view.address.clone()));
                }
            }
            self.recheck_infeasible(&mut st);
            self.dispatch(&mut st);
        }
        self.retry_unplaced_actors();
        for (id, address) in connect {
            tokio::spawn(self.clone().connect_peer(id, address));
        }
    }

    async fn connect_peer(self: Arc<Self>, peer_id: String, address: String) {
        let role = Role::Node {
            node_id: self.id.clone(),
        };
        let stream = match wire::connect(&address, &self.options.token, role).await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(peer = %peer_id, "node: cannot reach peer: {e}");
                if let Some(p) = self.lock().peers.get_mut(&peer_id) {
                    p.connecting = false;
                }
                return;
            }
        };
        let (r, w) = stream.into_split();
        let mut r = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, r);
        let outbox = wire::spawn_writer(w, address.clone());
        {
            let mut st = self.lock();
            if let Some(p) = st.peers.get_mut(&peer_id) {
                p.outbox = Some(outbox);
                p.connecting = false;
            }
            self.dispatch(&mut st);
        }
        // Results of the tasks handed to this peer come back on this connection.
        loop {
            match wire::read_msg::<_, Msg>(&mut r).await {
                Ok(Msg::TaskDone { task_id, result }) => self.finished(task_id, result),
                Ok(Msg::ActorGone { actor, reason }) => self.actor_gone(actor, &reason),
                Ok(Msg::ActorEnded { actor, reason }) => self.actor_ended(actor, &reason),
                Ok(other) => {
                    tracing::warn!("node: unexpected {} from a peer", other.name())
                }
                Err(e) => {
                    tracing::info!(peer = %peer_id, "node: peer connection closed: {e}");
                    break;
                }
            }
        }
        let mut st = self.lock();
        if let Some(p) = st.peers.get_mut(&peer_id) {
            p.outbox = None;
        }
        // Tasks that were running there come back as failures of their worker.
        let lost: Vec<ObjectId> = st
            .in_flight
            .iter()
            .filter(|(_, r)| r.peer.as_deref() == Some(peer_id.as_str()))
            .map(|(id, _)| *id)
            .collect();
        let orphans: Vec<ObjectId> = st
            .actors
            .iter()
            .filter(|(_, p)| matches!(p, ActorPlace::Peer { node, .. } if *node == peer_id))
            .map(|(id, _)| *id)
            .collect();
        drop(st);
        for actor in orphans {
            self.actor_gone(actor, &format!("its node {peer_id} went away"));
        }
        for id in lost {
            self.finished(
                id,
                Err(Error::WorkerCrashed {
                    function: String::new(),
                    reason: format!("node {peer_id} went away"),
                }),
            );
        }
    }
}
