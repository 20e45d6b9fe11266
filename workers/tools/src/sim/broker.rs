//! A simulated RabbitMQ with the semantics the protocol depends on, and the liberties a real one may take:
//! - at-least-once delivery: a consumer's unacked messages return, flagged redelivered, when it dies, and in
//!   another order than they left;
//! - publisher confirms: a message published and not yet confirmed may be lost when the broker restarts (the
//!   publisher, seeing no confirm, publishes it again, so the broker may then hold it twice);
//! - durable queues and persistent messages: everything confirmed survives a restart;
//! - delivery order within a queue is mostly, not strictly, first in first out (the simulator widens what
//!   requeues do to any message near the head).
//!
//! Every choice comes from the caller's seeded generator, so a run replays exactly.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// One message in a queue.
#[derive(Debug, Clone)]
pub struct Message {
    /// Unique per publish (a message published twice is two messages).
    pub id: u64,
    pub bytes: Arc<[u8]>,
    pub redelivered: bool,
}

/// What the broker went through in a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerStats {
    pub published: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub restarts: u64,
    /// Unconfirmed messages a restart lost.
    pub lost: u64,
    pub duplicated: u64,
}

#[derive(Default)]
pub struct SimBroker {
    queues: BTreeMap<String, VecDeque<Message>>,
    /// Queues deleted: what is published to them is dropped (unroutable, as with RabbitMQ's default exchange).
    deleted: std::collections::BTreeSet<String>,
    /// Queues declared with an expiry (`x-expires`): the steps they may stay unused, and since when they are
    /// (`None` while a consumer is attached).
    expiring: BTreeMap<String, (u64, Option<u64>)>,
    /// Delivered and not acked, per consumer, with the queue each came from.
    unacked: BTreeMap<String, Vec<(String, Message)>>,
    /// Published and not confirmed, per publisher: (queue, message id).
    unconfirmed: BTreeMap<String, Vec<(String, u64)>>,
    next_id: u64,
    pub stats: BrokerStats,
}

/// How far from the head of a queue a delivery may pick its message.
const REORDER_WINDOW: usize = 4;

impl SimBroker {
    /// Enqueues a persistent message; it is safe from a restart only once [`SimBroker::confirm`]ed.
    pub fn publish(&mut self, publisher: &str, queue: &str, bytes: Vec<u8>) {
        if self.deleted.contains(queue) {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.stats.published += 1;
        let message = Message { id, bytes: bytes.into(), redelivered: false };
        self.queues.entry(queue.to_owned()).or_default().push_back(message);
        self.unconfirmed.entry(publisher.to_owned()).or_default().push((queue.to_owned(), id));
    }

    /// Confirms everything `publisher` published so far.
    pub fn confirm(&mut self, publisher: &str) {
        self.unconfirmed.remove(publisher);
    }

    /// Whether `publisher` has publishes waiting for their confirm.
    pub fn has_unconfirmed(&self, publisher: &str) -> bool {
        self.unconfirmed.get(publisher).is_some_and(|u| !u.is_empty())
    }

    pub fn ready(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, VecDeque::len)
    }

    /// Delivers up to `max` ready messages of `queue` to `consumer`, each taken from near the head.
    pub fn deliver(&mut self, consumer: &str, queue: &str, max: usize, rng: &mut ChaCha8Rng) -> Vec<Message> {
        let Some(ready) = self.queues.get_mut(queue) else { return Vec::new() };
        let mut taken = Vec::new();
        while taken.len() < max && !ready.is_empty() {
            let at = rng.gen_range(0..ready.len().min(REORDER_WINDOW));
            let message = ready.remove(at).expect("in range");
            self.stats.delivered += 1;
            if message.redelivered {
                self.stats.redelivered += 1;
            }
            taken.push(message);
        }
        let unacked = self.unacked.entry(consumer.to_owned()).or_default();
        unacked.extend(taken.iter().map(|m| (queue.to_owned(), m.clone())));
        taken
    }

    /// Deletes a queue with what it holds, delivered or not; later publishes to it are dropped.
    pub fn delete_queue(&mut self, queue: &str) {
        self.queues.remove(queue);
        self.expiring.remove(queue);
        self.unacked.values_mut().for_each(|held| held.retain(|(q, _)| q != queue));
        self.deleted.insert(queue.to_owned());
    }

    /// Declares `queue` to expire once unused for `ttl` steps (no consumer attached), counting from `now`.
    pub fn declare_expiring(&mut self, queue: &str, ttl: u64, now: u64) {
        self.queues.entry(queue.to_owned()).or_default();
        self.expiring.insert(queue.to_owned(), (ttl, Some(now)));
    }

    /// A consumer attaches to `queue` (it is in use until [`SimBroker::detach`]).
    pub fn attach(&mut self, queue: &str) {
        if let Some((_, idle)) = self.expiring.get_mut(queue) {
            *idle = None;
        }
    }

    /// Its consumer is gone: `queue` is unused from `now`.
    pub fn detach(&mut self, queue: &str, now: u64) {
        if let Some((_, idle)) = self.expiring.get_mut(queue) {
            *idle = Some(now);
        }
    }

    /// Deletes the expiring queues unused for their whole expiry at `now`; their names.
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let due: Vec<String> = self
            .expiring
            .iter()
            .filter(|(_, (ttl, idle))| idle.is_some_and(|since| now >= since + ttl))
            .map(|(queue, _)| queue.clone())
            .collect();
        for queue in &due {
            self.delete_queue(queue);
        }
        due
    }

    /// Whether a queue is waiting to expire (unused, not yet deleted).
    pub fn expiring_idle(&self) -> bool {
        self.expiring.values().any(|(_, idle)| idle.is_some())
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

    /// The consumer's channel died: what it had not acked goes back to the head of its queue, flagged
    /// redelivered, in a shuffled order.
    pub fn consumer_lost(&mut self, consumer: &str, rng: &mut ChaCha8Rng) {
        let Some(mut back) = self.unacked.remove(consumer) else { return };
        back.shuffle(rng);
        for (queue, mut message) in back {
            message.redelivered = true;
            self.queues.entry(queue).or_default().push_front(message);
        }
    }

    /// A copy of a random ready message lands in its queue (as a publisher that timed out and sent again).
    pub fn duplicate_one(&mut self, rng: &mut ChaCha8Rng) -> Option<String> {
        let queues: Vec<String> = self.queues.iter().filter(|(_, q)| !q.is_empty()).map(|(n, _)| n.clone()).collect();
        let queue = queues.choose(rng)?.clone();
        let ready = self.queues.get_mut(&queue).expect("listed");
        let mut copy = ready[rng.gen_range(0..ready.len())].clone();
        copy.id = self.next_id;
        self.next_id += 1;
        let at = rng.gen_range(0..=ready.len());
        ready.insert(at, copy);
        self.stats.duplicated += 1;
        Some(queue)
    }

    /// A restart: every consumer's unacked messages return (redelivered), and each message not yet confirmed
    /// to its publisher is lost or kept at random. Publishers must take every publish of theirs as unconfirmed
    /// (their channels died) and publish again.
    pub fn restart(&mut self, rng: &mut ChaCha8Rng) {
        self.stats.restarts += 1;
        let consumers: Vec<String> = self.unacked.keys().cloned().collect();
        for consumer in consumers {
            self.consumer_lost(&consumer, rng);
        }
        for (_, messages) in std::mem::take(&mut self.unconfirmed) {
            for (queue, id) in messages {
                if rng.gen_bool(0.5) {
                    if let Some(ready) = self.queues.get_mut(&queue) {
                        let before = ready.len();
                        ready.retain(|m| m.id != id);
                        self.stats.lost += (before - ready.len()) as u64;
                    }
                }
            }
        }
    }

    /// Messages ready or delivered and unacked, over every queue.
    pub fn total(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum::<usize>() + self.unacked.values().map(Vec::len).sum::<usize>()
    }

    /// The queues that hold a message (ready or unacked), with how many.
    pub fn holding(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> =
            self.queues.iter().filter(|(_, q)| !q.is_empty()).map(|(n, q)| (n.clone(), q.len())).collect();
        for (queue, _) in self.unacked.values().flatten() {
            *counts.entry(queue.clone()).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}
