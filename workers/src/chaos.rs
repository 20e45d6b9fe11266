//! The chaos monkey: SIGKILLs nodes (processes or containers) at random intervals and writes each kill and
//! restart as a JSON event line.

use crate::cluster::{self, LocalCluster};
use crate::docker::DockerOrchestrator;
use crate::orchestrator::{Orchestrator, RunState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Duration;
use tracing::info;

/// One kill or restart.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChaosEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub node: String,
    /// `kill` or `restart`.
    pub action: String,
    pub pid: Option<u32>,
}

impl ChaosEvent {
    pub fn now(node: &str, action: &str, pid: Option<u32>) -> Self {
        ChaosEvent { time_ms: crate::heartbeat::now_ms(), node: node.to_owned(), action: action.to_owned(), pid }
    }

    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an event serializes")
    }
}

/// Which nodes the monkey may kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Any node.
    Random,
    /// Only nodes whose name starts with one of these (a node name, or a role such as `q4_count`).
    Only(Vec<String>),
}

impl Targets {
    pub fn parse(spec: &str) -> Targets {
        match spec {
            "" | "random" => Targets::Random,
            names => Targets::Only(names.split(',').map(|n| n.trim().to_owned()).collect()),
        }
    }

    fn allows(&self, node: &str) -> bool {
        match self {
            Targets::Random => true,
            Targets::Only(prefixes) => prefixes.iter().any(|p| node.starts_with(p.as_str())),
        }
    }
}

/// Seeded choices of when and whom to kill, so a chaos run can be replayed.
pub struct ChaosMonkey {
    rng: ChaCha8Rng,
    min: Duration,
    max: Duration,
    targets: Targets,
}

impl ChaosMonkey {
    pub fn new(seed: u64, min: Duration, max: Duration, targets: Targets) -> Self {
        ChaosMonkey { rng: ChaCha8Rng::seed_from_u64(seed), min, max: max.max(min), targets }
    }

    /// The wait before the next kill.
    pub fn next_delay(&mut self) -> Duration {
        let (min, max) = (self.min.as_millis() as u64, self.max.as_millis() as u64);
        Duration::from_millis(self.rng.gen_range(min..=max))
    }

    /// The next victim among `nodes`, if any is a target.
    pub fn pick(&mut self, nodes: &[String]) -> Option<String> {
        let allowed: Vec<&String> = nodes.iter().filter(|n| self.targets.allows(n)).collect();
        (!allowed.is_empty()).then(|| allowed[self.rng.gen_range(0..allowed.len())].clone())
    }
}

/// Supervises `cluster` (restarting what dies) and lets `monkey` kill its nodes until `stop` resolves. Returns
/// every event, in order; `on_event` sees each as it happens.
pub async fn run_on_cluster(
    cluster: &mut LocalCluster,
    monkey: &mut ChaosMonkey,
    stop: impl std::future::Future<Output = ()>,
    mut on_event: impl FnMut(&ChaosEvent),
) -> anyhow::Result<Vec<ChaosEvent>> {
    tokio::pin!(stop);
    let mut events = Vec::new();
    let mut record = |event: ChaosEvent, events: &mut Vec<ChaosEvent>| {
        info!(node = %event.node, action = %event.action, "chaos");
        on_event(&event);
        events.push(event);
    };
    let mut supervise = tokio::time::interval(Duration::from_millis(100));
    let next_kill = tokio::time::sleep(monkey.next_delay());
    tokio::pin!(next_kill);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(events),
            _ = supervise.tick() => {
                for cluster::Restarted { node: name, .. } in cluster.supervise_step().await? {
                    let pid = cluster.status().into_iter().find(|n| n.name == name).and_then(|n| n.pid);
                    record(ChaosEvent::now(&name, "restart", pid), &mut events);
                }
            }
            _ = &mut next_kill => {
                let status = cluster.status();
                let names: Vec<String> = status.iter().map(|n| n.name.clone()).collect();
                if let Some(victim) = monkey.pick(&names) {
                    let pid = status.iter().find(|n| n.name == victim).and_then(|n| n.pid);
                    cluster.kill(&victim)?;
                    record(ChaosEvent::now(&victim, "kill", pid), &mut events);
                }
                next_kill.as_mut().reset(tokio::time::Instant::now() + monkey.next_delay());
            }
        }
    }
}

/// What `coffee chaos` kills: the processes of a `cluster up` running elsewhere on this machine (found in its
/// `nodes.json`; its supervisor or monitors restart them), or the node containers of a compose project (its
/// monitors restart them).
pub enum Owner {
    Processes { namespace: String },
    Containers(DockerOrchestrator),
}

impl Owner {
    /// The nodes that run now, with what identifies their current incarnation (a pid, or none for a container).
    async fn running(&self) -> anyhow::Result<Vec<(String, Option<u32>)>> {
        Ok(match self {
            Owner::Processes { namespace } => {
                cluster::read_status(namespace)?.into_iter().filter_map(|n| Some((n.name, Some(n.pid?)))).collect()
            }
            Owner::Containers(docker) => docker
                .nodes()
                .await?
                .into_iter()
                .filter(|n| n.state == RunState::Running)
                .map(|n| (n.name, None))
                .collect(),
        })
    }

    async fn kill(&self, name: &str, pid: Option<u32>) -> anyhow::Result<()> {
        match (self, pid) {
            (Owner::Processes { .. }, Some(pid)) => {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                Ok(nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?)
            }
            (Owner::Processes { .. }, None) => anyhow::bail!("{name} has no process"),
            (Owner::Containers(docker), _) => docker.kill(name).await,
        }
    }
}

/// `coffee chaos`: kills a running node of `owner` at the monkey's pace for `duration`, printing one JSON event
/// line per kill (whoever supervises the nodes restarts them and logs that). Returns the number of kills.
pub async fn run_against(owner: &Owner, monkey: &mut ChaosMonkey, duration: Duration) -> anyhow::Result<u32> {
    let deadline = tokio::time::Instant::now() + duration;
    let mut kills = 0;
    loop {
        let delay = monkey.next_delay();
        if tokio::time::Instant::now() + delay > deadline {
            return Ok(kills);
        }
        tokio::time::sleep(delay).await;
        let running = owner.running().await?;
        let names: Vec<String> = running.iter().map(|(name, _)| name.clone()).collect();
        let Some(victim) = monkey.pick(&names) else { continue };
        let pid = running.iter().find(|(name, _)| *name == victim).and_then(|(_, pid)| *pid);
        match owner.kill(&victim, pid).await {
            Ok(()) => {
                kills += 1;
                println!("{}", ChaosEvent::now(&victim, "kill", pid).to_json_line());
            }
            Err(e) => tracing::warn!(node = %victim, ?pid, error = %format!("{e:#}"), "could not kill"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let nodes: Vec<String> = ["gateway", "tx_filter-0", "q4_count-1"].map(String::from).to_vec();
        let run = |seed| {
            let mut m = ChaosMonkey::new(seed, Duration::from_secs(1), Duration::from_secs(3), Targets::Random);
            (0..10).map(|_| (m.next_delay(), m.pick(&nodes))).collect::<Vec<_>>()
        };
        assert_eq!(run(4), run(4));
        assert!(run(4).iter().all(|(d, _)| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(3)));
    }

    #[test]
    fn targets_restrict_the_victims() {
        let nodes: Vec<String> = ["gateway", "tx_filter-0", "q4_count-1"].map(String::from).to_vec();
        let mut m = ChaosMonkey::new(1, Duration::ZERO, Duration::ZERO, Targets::parse("q4_count,tx_filter"));
        for _ in 0..20 {
            assert_ne!(m.pick(&nodes).as_deref(), Some("gateway"));
        }
        let mut none = ChaosMonkey::new(1, Duration::ZERO, Duration::ZERO, Targets::parse("monitor"));
        assert_eq!(none.pick(&nodes), None);
    }
}
