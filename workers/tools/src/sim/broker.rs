//! A simulated RabbitMQ with the semantics the protocol depends on, the liberties a real one may take, and the
//! quirks RabbitMQ 3.10 was seen to have on this machine (a three-node cluster, `scripts/broker-cluster.sh`):
//! - at-least-once delivery: a consumer's unacked messages return, flagged redelivered, when its channel dies,
//!   and in another order than they left; delivery order within a queue is mostly, not strictly, first in first
//!   out (the simulator widens what requeues do to any message near the head);
//! - publisher confirms: a message published and not yet confirmed may be lost when the broker node that holds
//!   it goes down (the publisher, seeing no confirm, publishes it again, so the queue may then hold it twice);
//! - durable queues and persistent messages: everything confirmed survives a restart;
//! - several broker nodes, each client connected to one: a **classic** queue lives on the node that declared it
//!   (its home). While that node is down, a publish to it is **dropped and still confirmed** (as for any message
//!   that routes nowhere), and declaring it or consuming from it is refused with 404 ("home node ... is down or
//!   inaccessible"). A **quorum** queue lives on every node and serves while most of them are up;
//! - a publish to a queue that does not exist (never declared, deleted, expired) is dropped and confirmed;
//! - an exclusive consumer: a classic queue refuses a second one (403 ACCESS_REFUSED); a quorum queue accepts
//!   it, and both get deliveries;
//! - single active consumer (`x-single-active-consumer`): only the longest attached consumer gets deliveries;
//!   the next one takes over when its channel dies;
//! - a quorum queue's delivery limit (`x-delivery-limit`): a message returned more often than the limit is
//!   dropped (dead-lettered when the queue names a dead-letter route);
//! - queues that expire (`x-expires`) once no consumer used them for their whole expiry.
//!
//! Every choice comes from the caller's seeded generator, so a run replays exactly.

use coffee_engine::topology::QueueType;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

/// One message in a queue.
#[derive(Debug, Clone)]
pub struct Message {
    /// Unique per publish (a message published twice is two messages).
    pub id: u64,
    pub bytes: Arc<[u8]>,
    pub redelivered: bool,
    /// How many times it was returned to its queue after a delivery (what a delivery limit counts).
    pub returns: u32,
}

/// What the broker went through in a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerStats {
    pub published: u64,
    pub delivered: u64,
    pub redelivered: u64,
    /// Node restarts (a single broker's restart is its one node's).
    pub restarts: u64,
    /// Unconfirmed messages a node going down lost.
    pub lost: u64,
    /// Publishes dropped though confirmed: to a queue that does not exist, or to a classic queue whose home is
    /// down.
    pub dropped: u64,
    /// Messages past their queue's delivery limit.
    pub over_limit: u64,
    pub duplicated: u64,
}

/// Why the broker refuses a declaration or a consumer (it closes the channel that asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 404: the queue does not exist, or its home node is down.
    NotFound(String),
    /// 403: another consumer holds the queue exclusively.
    AccessRefused(String),
    /// 405: another connection holds the exclusive queue.
    ResourceLocked(String),
}

/// How a queue is declared.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueArgs {
    /// Delivered to its longest attached consumer only.
    pub single_active: bool,
    /// A quorum queue's delivery limit.
    pub delivery_limit: Option<u32>,
    /// Where a message past its delivery limit goes (none: it is dropped).
    pub dead_letters: Option<&'static str>,
    /// Deleted once unused for this many steps.
    pub expires: Option<u64>,
}

struct Queue {
    ready: VecDeque<Message>,
    kind: QueueType,
    /// The node that holds a classic queue (a quorum queue lives on every node).
    home: usize,
    args: QueueArgs,
    /// Consumers attached, in the order they attached, each with whether it asked for exclusive use.
    consumers: Vec<(String, bool)>,
    /// With an expiry: since when nobody consumes it (`None` while a consumer is attached).
    idle_since: Option<u64>,
}

pub struct SimBroker {
    /// Whether each node is up.
    nodes: Vec<bool>,
    /// The type of the queues the pipeline declares.
    queue_type: QueueType,
    /// By name. A hash map for the lookups every step makes; whatever iterates it in an order that matters sorts
    /// the names first (a run must replay exactly).
    queues: HashMap<Rc<str>, Queue, foldhash::fast::FixedState>,
    /// The node each client (a process, the gateway) is connected to.
    connections: BTreeMap<String, usize>,
    /// Delivered and not acked, per consumer, with the queue each came from.
    unacked: BTreeMap<String, Vec<(Rc<str>, Message)>>,
    /// Published and not confirmed, per publisher: (queue, message id).
    unconfirmed: BTreeMap<String, Vec<(Rc<str>, u64)>>,
    /// Exclusive queues, each with the client whose connection holds it (deleted when that connection closes).
    exclusive: BTreeMap<String, String>,
    /// The one durable message of each replica's owner queue (the id of the folder that holds its state).
    owners: BTreeMap<String, uuid::Uuid>,
    /// The queues declared with an expiry (looked at every step: kept apart from the many others).
    expiring: std::collections::BTreeSet<String>,
    next_id: u64,
    pub stats: BrokerStats,
}

/// Whom a broker node going down affects.
#[derive(Debug, Default)]
pub struct Outage {
    /// The clients that were connected to it: their connections are gone.
    pub disconnected: Vec<String>,
    /// Consumers elsewhere of classic queues it holds: the broker cancelled them.
    pub cancelled: Vec<String>,
}

/// How far from the head of a queue a delivery may pick its message.
const REORDER_WINDOW: usize = 4;

impl SimBroker {
    /// A broker of `nodes` nodes, all up, whose pipeline queues are of `queue_type`.
    pub fn new(nodes: usize, queue_type: QueueType) -> SimBroker {
        SimBroker {
            nodes: vec![true; nodes.max(1)],
            queue_type,
            queues: HashMap::default(),
            connections: BTreeMap::new(),
            unacked: BTreeMap::new(),
            unconfirmed: BTreeMap::new(),
            exclusive: BTreeMap::new(),
            owners: BTreeMap::new(),
            expiring: Default::default(),
            next_id: 0,
            stats: BrokerStats::default(),
        }
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    pub fn node_up(&self, node: usize) -> bool {
        self.nodes[node]
    }

    /// Whether a queue can serve now: a classic one while its home is up, a quorum one while most nodes are.
    fn available(&self, queue: &Queue) -> bool {
        match queue.kind {
            QueueType::Classic => self.nodes[queue.home],
            QueueType::Quorum => 2 * self.nodes.iter().filter(|up| **up).count() > self.nodes.len(),
        }
    }

    /// `client` connects, starting with node `first` and going round to the next one up; the node it reached.
    pub fn connect(&mut self, client: &str, first: usize) -> Option<usize> {
        let n = self.nodes.len();
        let node = (0..n).map(|i| (first + i) % n).find(|&k| self.nodes[k])?;
        self.connections.insert(client.to_owned(), node);
        Some(node)
    }

    /// The node `client` is connected to, if it is.
    pub fn connection(&self, client: &str) -> Option<usize> {
        self.connections.get(client).copied()
    }

    /// The clients connected to `node`.
    pub fn clients_of(&self, node: usize) -> Vec<String> {
        self.connections.iter().filter(|(_, k)| **k == node).map(|(c, _)| c.clone()).collect()
    }

    /// Declares `queue` (durable, of the broker's queue type) from `client`'s connection, unless it exists: a
    /// classic queue then lives on that connection's node. Refused while a classic queue's home is down.
    pub fn declare(&mut self, client: &str, queue: &str, args: QueueArgs, now: u64) -> Result<(), Refusal> {
        let home = self.connection(client).unwrap_or(0);
        if let Some(existing) = self.queues.get(queue) {
            if !self.available(existing) {
                return Err(Refusal::NotFound(format!("home node of durable queue '{queue}' is down")));
            }
            return Ok(());
        }
        let idle_since = args.expires.map(|_| now);
        if args.expires.is_some() {
            self.expiring.insert(queue.to_owned());
        }
        let kind = self.queue_type;
        let queue_state = Queue { ready: VecDeque::new(), kind, home, args, consumers: Vec::new(), idle_since };
        self.queues.insert(queue.into(), queue_state);
        Ok(())
    }

    /// Declares the exclusive queue `queue` for `client`'s connection: refused (405) while another connection
    /// holds it.
    pub fn declare_exclusive(&mut self, client: &str, queue: &str) -> Result<(), Refusal> {
        match self.exclusive.get(queue) {
            Some(holder) if holder != client => Err(Refusal::ResourceLocked(format!("queue '{queue}' is locked"))),
            _ => {
                self.exclusive.insert(queue.to_owned(), client.to_owned());
                Ok(())
            }
        }
    }

    /// The folder id an owner queue holds, if any (read and put back, as `basic.get` and a requeue do).
    pub fn owner(&self, queue: &str) -> Option<uuid::Uuid> {
        self.owners.get(queue).copied()
    }

    /// Publishes (confirmed) the owner record of an empty owner queue.
    pub fn record_owner(&mut self, queue: &str, folder: uuid::Uuid) {
        self.owners.entry(queue.to_owned()).or_insert(folder);
    }

    /// Whether `queue` exists.
    pub fn exists(&self, queue: &str) -> bool {
        self.queues.contains_key(queue)
    }

    /// Publishes a persistent message from `publisher`. It is safe from its node going down only once
    /// [`SimBroker::confirm`]ed. To a queue that does not exist, or to a classic queue whose home node is
    /// down, it is dropped, and confirmed all the same (as RabbitMQ does). Returns whether it was enqueued.
    pub fn publish(&mut self, publisher: &str, queue: &str, bytes: Vec<u8>) -> bool {
        self.stats.published += 1;
        let available =
            self.queues.get_key_value(queue).filter(|(_, q)| self.available(q)).map(|(name, _)| name.clone());
        let Some(name) = available else {
            self.stats.dropped += 1;
            return false;
        };
        let id = self.next_id;
        self.next_id += 1;
        let message = Message { id, bytes: bytes.into(), redelivered: false, returns: 0 };
        self.queues.get_mut(queue).expect("exists").ready.push_back(message);
        match self.unconfirmed.get_mut(publisher) {
            Some(pending) => pending.push((name, id)),
            None => drop(self.unconfirmed.insert(publisher.to_owned(), vec![(name, id)])),
        }
        true
    }

    /// Nacks everything `publisher` has in flight: the broker could not take charge of it, so each message may
    /// be in its queue or not; the publisher must take them all as unconfirmed (and publish them again).
    pub fn nack(&mut self, publisher: &str, rng: &mut ChaCha8Rng) {
        for (queue, id) in self.unconfirmed.remove(publisher).unwrap_or_default() {
            if rng.gen_bool(0.5) {
                if let Some(q) = self.queues.get_mut(&queue) {
                    let before = q.ready.len();
                    q.ready.retain(|m| m.id != id);
                    self.stats.lost += (before - q.ready.len()) as u64;
                }
            }
        }
    }

    /// Confirms everything `publisher` published so far.
    pub fn confirm(&mut self, publisher: &str) {
        self.unconfirmed.remove(publisher);
    }

    /// Messages ready in `queue` (none while it cannot serve).
    pub fn ready(&self, queue: &str) -> usize {
        self.queues.get(queue).filter(|q| self.available(q)).map_or(0, |q| q.ready.len())
    }

    /// `consumer` attaches to `queue`, exclusively or not. A classic queue refuses a second consumer while one
    /// holds it exclusively, and an exclusive one while another is attached; a quorum queue ignores exclusivity.
    pub fn consume(&mut self, consumer: &str, queue: &str, exclusive: bool) -> Result<(), Refusal> {
        let available = self.queues.get(queue).map(|q| self.available(q));
        let Some(q) = self.queues.get_mut(queue).filter(|_| available == Some(true)) else {
            return Err(Refusal::NotFound(format!("no queue '{queue}', or its home node is down")));
        };
        if q.kind == QueueType::Classic {
            let held = q.consumers.iter().any(|(_, excl)| *excl);
            if held || (exclusive && !q.consumers.is_empty()) {
                return Err(Refusal::AccessRefused(format!("queue '{queue}' in exclusive use")));
            }
        }
        q.consumers.push((consumer.to_owned(), exclusive));
        q.idle_since = None;
        Ok(())
    }

    /// Whether `consumer` is attached to `queue`.
    pub fn consuming(&self, consumer: &str, queue: &str) -> bool {
        self.queues.get(queue).is_some_and(|q| q.consumers.iter().any(|(c, _)| c == consumer))
    }

    /// The broker cancels `consumer`'s consumers (its channel stays open: what it holds is still its to ack).
    pub fn cancel(&mut self, consumer: &str, now: u64) {
        for q in self.queues.values_mut() {
            q.consumers.retain(|(c, _)| c != consumer);
            if q.consumers.is_empty() && q.args.expires.is_some() && q.idle_since.is_none() {
                q.idle_since = Some(now);
            }
        }
    }

    /// Delivers up to `max` ready messages of `queue` to `consumer`, each taken from near the head: nothing
    /// unless it is attached and, on a single-active-consumer queue, the active one.
    pub fn deliver(&mut self, consumer: &str, queue: &str, max: usize, rng: &mut ChaCha8Rng) -> Vec<Message> {
        let available = self.queues.get(queue).is_some_and(|q| self.available(q));
        let Some(q) = self.queues.get_mut(queue).filter(|_| available) else { return Vec::new() };
        let position = q.consumers.iter().position(|(c, _)| c == consumer);
        if position.is_none() || (q.args.single_active && position != Some(0)) {
            return Vec::new();
        }
        let mut taken = Vec::new();
        while taken.len() < max && !q.ready.is_empty() {
            let at = rng.gen_range(0..q.ready.len().min(REORDER_WINDOW));
            let message = q.ready.remove(at).expect("in range");
            self.stats.delivered += 1;
            if message.redelivered {
                self.stats.redelivered += 1;
            }
            taken.push(message);
        }
        if taken.is_empty() {
            return taken;
        }
        let name = self.queues.get_key_value(queue).map(|(name, _)| name.clone()).expect("delivered from it");
        let held = taken.iter().map(|m| (name.clone(), m.clone()));
        match self.unacked.get_mut(consumer) {
            Some(unacked) => unacked.extend(held),
            None => drop(self.unacked.insert(consumer.to_owned(), held.collect())),
        }
        taken
    }

    /// Deletes a queue with what it holds, delivered or not; later publishes to it are dropped.
    pub fn delete_queue(&mut self, queue: &str) {
        self.queues.remove(queue);
        self.expiring.remove(queue);
        self.unacked.values_mut().for_each(|held| held.retain(|(q, _)| &**q != queue));
    }

    /// Its consumer is gone: `queue` is unused from `now` (if nobody else consumes it).
    pub fn detach(&mut self, consumer: &str, queue: &str, now: u64) {
        if let Some(q) = self.queues.get_mut(queue) {
            q.consumers.retain(|(c, _)| c != consumer);
            if q.consumers.is_empty() && q.args.expires.is_some() {
                q.idle_since = Some(now);
            }
        }
    }

    /// Deletes the expiring queues unused for their whole expiry at `now`; their names.
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let due: Vec<String> = self
            .expiring
            .iter()
            .filter(|name| {
                self.queues.get(name.as_str()).is_some_and(|q| match (q.args.expires, q.idle_since) {
                    (Some(ttl), Some(since)) => now >= since + ttl,
                    _ => false,
                })
            })
            .cloned()
            .collect();
        for queue in &due {
            self.delete_queue(queue);
        }
        due
    }

    /// Whether a queue is waiting to expire (unused, not yet deleted).
    pub fn expiring_idle(&self) -> bool {
        self.expiring.iter().any(|name| self.queues.get(name.as_str()).is_some_and(|q| q.idle_since.is_some()))
    }

    /// Acks the message `id` delivered to `consumer`.
    pub fn ack(&mut self, consumer: &str, id: u64) {
        if let Some(held) = self.unacked.get_mut(consumer) {
            held.retain(|(_, m)| m.id != id);
        }
    }

    /// Acks everything delivered to `consumer` (one `multiple` ack of its group).
    pub fn ack_all(&mut self, consumer: &str) {
        self.unacked.remove(consumer);
    }

    /// The client's connection is gone (it exited, or lost its node): its consumers detach, and what it had
    /// not acked goes back to the head of its queues, flagged redelivered, in a shuffled order. A quorum
    /// queue drops (or dead-letters) a message returned more often than its delivery limit.
    pub fn disconnect(&mut self, client: &str, now: u64, rng: &mut ChaCha8Rng) -> Vec<String> {
        self.connections.remove(client);
        self.exclusive.retain(|_, holder| holder != client);
        self.cancel(client, now);
        let Some(mut back) = self.unacked.remove(client) else { return Vec::new() };
        back.shuffle(rng);
        let mut over = Vec::new();
        for (queue, mut message) in back {
            message.redelivered = true;
            message.returns += 1;
            let Some(q) = self.queues.get_mut(&queue) else { continue };
            match q.args.delivery_limit {
                Some(limit) if q.kind == QueueType::Quorum && message.returns > limit => {
                    self.stats.over_limit += 1;
                    over.push(queue.to_string());
                    if let Some(dead) = q.args.dead_letters {
                        if let Some(dl) = self.queues.get_mut(dead) {
                            dl.ready.push_back(message);
                        }
                    }
                }
                _ => q.ready.push_front(message),
            }
        }
        over
    }

    /// A copy of a random ready message lands in its queue (as a publisher that timed out and sent again).
    pub fn duplicate_one(&mut self, rng: &mut ChaCha8Rng) -> Option<String> {
        let mut queues: Vec<String> =
            self.queues.iter().filter(|(_, q)| !q.ready.is_empty()).map(|(n, _)| n.to_string()).collect();
        queues.sort_unstable();
        let queue = queues.choose(rng)?.clone();
        let ready = &mut self.queues.get_mut(queue.as_str()).expect("listed").ready;
        let mut copy = ready[rng.gen_range(0..ready.len())].clone();
        copy.id = self.next_id;
        self.next_id += 1;
        let at = rng.gen_range(0..=ready.len());
        ready.insert(at, copy);
        self.stats.duplicated += 1;
        Some(queue)
    }

    /// Node `node` goes down (killed, or paused as the minority of a partition): every client connected to it
    /// loses its connection (returned: the world ends those processes), and each message not yet confirmed that
    /// it held (published through it, or to a classic queue it holds) is lost or kept at random. Consumers of a
    /// classic queue it holds lose them (the broker cancels them); what they had not acked comes back with the
    /// node.
    pub fn node_down(&mut self, node: usize, now: u64, rng: &mut ChaCha8Rng) -> Outage {
        self.stats.restarts += 1;
        self.nodes[node] = false;
        let clients = self.clients_of(node);
        for client in &clients {
            self.disconnect(client, now, rng);
        }
        let publishers: Vec<String> = self.unconfirmed.keys().cloned().collect();
        for publisher in publishers {
            let through_node = clients.contains(&publisher);
            let messages = self.unconfirmed.get(&publisher).cloned().unwrap_or_default();
            let mut kept = Vec::new();
            for (queue, id) in messages {
                let held_here = self.queues.get(&queue).is_some_and(|q| q.kind == QueueType::Classic && q.home == node);
                if (through_node || held_here) && rng.gen_bool(0.5) {
                    if let Some(q) = self.queues.get_mut(&queue) {
                        let before = q.ready.len();
                        q.ready.retain(|m| m.id != id);
                        self.stats.lost += (before - q.ready.len()) as u64;
                    }
                } else if !through_node {
                    kept.push((queue, id));
                }
            }
            // A publisher on this node lost its channel: it must take every publish as unconfirmed and publish
            // again (its process exits).
            if through_node {
                self.unconfirmed.remove(&publisher);
            } else {
                self.unconfirmed.insert(publisher, kept);
            }
        }
        let mut classic_here: Vec<Rc<str>> = self
            .queues
            .iter()
            .filter(|(_, q)| q.kind == QueueType::Classic && q.home == node)
            .map(|(n, _)| n.clone())
            .collect();
        classic_here.sort_unstable();
        let mut cancelled = Vec::new();
        for queue in &classic_here {
            let q = self.queues.get_mut(&**queue).expect("listed");
            cancelled.extend(q.consumers.drain(..).map(|(c, _)| c));
        }
        // What they held of those queues stays in them (an ack of it now reaches nobody), redelivered once the
        // node is back.
        for held in self.unacked.values_mut() {
            let (back, keep): (Vec<_>, Vec<_>) = held.drain(..).partition(|(q, _)| classic_here.contains(q));
            *held = keep;
            for (queue, mut message) in back {
                message.redelivered = true;
                self.queues.get_mut(&queue).expect("listed").ready.push_front(message);
            }
        }
        cancelled.sort();
        cancelled.dedup();
        cancelled.retain(|c| !clients.contains(c));
        Outage { disconnected: clients, cancelled }
    }

    /// Node `node` is up again, with every durable queue it holds and every confirmed message in them.
    pub fn node_back(&mut self, node: usize) {
        self.nodes[node] = true;
    }

    /// Messages ready or delivered and unacked, over every queue.
    pub fn total(&self) -> usize {
        self.queues.values().map(|q| q.ready.len()).sum::<usize>() + self.unacked.values().map(Vec::len).sum::<usize>()
    }

    /// The queues that hold a message (ready or unacked), with how many.
    pub fn holding(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.ready.is_empty())
            .map(|(n, q)| (n.to_string(), q.ready.len()))
            .collect();
        for (queue, _) in self.unacked.values().flatten() {
            *counts.entry(queue.to_string()).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}
