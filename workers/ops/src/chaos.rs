//! The chaos monkey: at random intervals it kills a node (SIGKILL) or pauses one (SIGSTOP for a random while,
//! then SIGCONT: a node that hangs, or a machine that stalls, rather than dies), through whichever
//! [`Orchestrator`] owns the nodes. [`ChaosMonkey`] makes the seeded choices; [`run_against`] is the one loop
//! that carries them out, for `coffee chaos`, `coffee bench`, the tests and the console alike, and reports each
//! kill, pause and resume as a [`ChaosEvent`] (a JSON event line on the command line).
//!
//! It depends on the orchestrator trait only: the supervisor that restarts what the monkey kills sits above it.

use crate::orchestrator::{NodeState, Orchestrator, RunState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// One kill, pause, resume or restart.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChaosEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub node: String,
    /// `kill`, `pause`, `resume` or `restart`.
    pub action: String,
    pub pid: Option<u32>,
    /// How long a pause lasts, in milliseconds (pauses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_ms: Option<u64>,
}

impl ChaosEvent {
    pub fn now(node: &str, action: &str, pid: Option<u32>) -> Self {
        let (node, action) = (node.to_owned(), action.to_owned());
        ChaosEvent { time_ms: coffee_engine::metrics::now_ms(), node, action, pid, for_ms: None }
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

/// Which faults the monkey injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Faults {
    /// SIGKILL: the node dies at once.
    #[default]
    Kill,
    /// SIGSTOP, then SIGCONT after a random while: the node hangs, then carries on (or finds it was replaced).
    Pause,
    /// Either, at random.
    Both,
}

/// One fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill,
    /// Stop the node for this long.
    Pause(Duration),
}

/// How long a paused node stays stopped by default: around the monitors' timeout (3 s), so some pauses end
/// before the monitors act and others after.
pub const DEFAULT_PAUSE: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(6));

/// Seeded choices of when and whom to hit, and how, so a chaos run can be replayed.
pub struct ChaosMonkey {
    rng: ChaCha8Rng,
    min: Duration,
    max: Duration,
    targets: Targets,
    faults: Faults,
    pause: (Duration, Duration),
    /// How many faults a run injects before it stops by itself; `None`: until it is stopped.
    limit: Option<u32>,
}

fn uniform(rng: &mut ChaCha8Rng, (min, max): (Duration, Duration)) -> Duration {
    let (min, max) = (min.as_millis() as u64, max.max(min).as_millis() as u64);
    Duration::from_millis(rng.gen_range(min..=max))
}

impl ChaosMonkey {
    /// A monkey that kills.
    pub fn new(seed: u64, min: Duration, max: Duration, targets: Targets) -> Self {
        ChaosMonkey {
            rng: ChaCha8Rng::seed_from_u64(seed),
            min,
            max: max.max(min),
            targets,
            faults: Faults::Kill,
            pause: DEFAULT_PAUSE,
            limit: None,
        }
    }

    /// The same monkey, injecting `faults`, pausing a node for a time uniform in `pause`.
    pub fn with_faults(mut self, faults: Faults, pause: (Duration, Duration)) -> Self {
        self.faults = faults;
        self.pause = pause;
        self
    }

    /// The same monkey, stopping by itself after `faults` kills and pauses.
    pub fn with_limit(mut self, faults: u32) -> Self {
        self.limit = Some(faults);
        self
    }

    /// The wait before the next fault.
    pub fn next_delay(&mut self) -> Duration {
        uniform(&mut self.rng, (self.min, self.max))
    }

    /// The next fault to inject.
    pub fn next_fault(&mut self) -> Fault {
        let pause = match self.faults {
            Faults::Kill => false,
            Faults::Pause => true,
            Faults::Both => self.rng.gen_bool(0.5),
        };
        if pause {
            Fault::Pause(uniform(&mut self.rng, self.pause))
        } else {
            Fault::Kill
        }
    }

    /// The next victim among `nodes`, if any is a target.
    pub fn pick(&mut self, nodes: &[String]) -> Option<String> {
        let allowed: Vec<&String> = nodes.iter().filter(|n| self.targets.allows(n)).collect();
        (!allowed.is_empty()).then(|| allowed[self.rng.gen_range(0..allowed.len())].clone())
    }
}

/// Counts of the faults a chaos run injected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChaosCounts {
    pub kills: u32,
    pub pauses: u32,
}

/// What a chaos run tells its caller as it goes.
#[derive(Debug)]
pub enum Report<'a> {
    /// A kill, pause or resume done.
    Done(&'a ChaosEvent),
    /// One that failed (a node gone meanwhile, an engine that does not answer), or a listing of the nodes that
    /// failed (`node` is empty then); the run goes on.
    Failed { node: &'a str, action: &'a str, error: &'a anyhow::Error },
}

/// A node the monkey paused, and when to let it go on.
struct Paused {
    until: Instant,
    name: String,
    pid: Option<u32>,
}

/// The chaos monkey's one loop, whoever owns the nodes: at the monkey's pace it kills or pauses a running node
/// of `owner`, resumes each paused node when its pause is over, and reports each fault and resume to `report`
/// as it happens. It ends when `stop` resolves, or once the monkey's limit of faults is reached and its last
/// pause is over; a node still paused then is resumed before this returns, so no run leaves a node stopped.
/// Restarting what dies is not its business: whoever supervises the nodes does that (see
/// [`crate::cluster::LocalCluster::supervise_under_chaos`] for a local cluster in the same process).
pub async fn run_against(
    owner: &dyn Orchestrator,
    monkey: &mut ChaosMonkey,
    stop: impl std::future::Future<Output = ()>,
    mut report: impl FnMut(Report<'_>) + Send,
) -> anyhow::Result<ChaosCounts> {
    tokio::pin!(stop);
    let mut counts = ChaosCounts::default();
    let mut paused: Vec<Paused> = Vec::new();
    let mut next_fault = Some(Instant::now() + monkey.next_delay());
    loop {
        let next_resume = paused.iter().map(|p| p.until).min();
        if next_fault.is_none() && next_resume.is_none() {
            break; // the limit is reached and every pause is over
        }
        // A disabled branch's sleep is built but never polled: any instant will do.
        let now = Instant::now();
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(next_resume.unwrap_or(now)), if next_resume.is_some() => {
                let now = Instant::now();
                for p in paused.extract_if(.., |p| p.until <= now).collect::<Vec<_>>() {
                    resume(owner, p, &mut report).await;
                }
            }
            _ = tokio::time::sleep_until(next_fault.unwrap_or(now)), if next_fault.is_some() => {
                inject(owner, monkey, &mut counts, &mut paused, &mut report).await;
                let limited = monkey.limit.is_some_and(|limit| counts.kills + counts.pauses >= limit);
                next_fault = (!limited).then(|| Instant::now() + monkey.next_delay());
            }
        }
    }
    for p in paused {
        resume(owner, p, &mut report).await;
    }
    Ok(counts)
}

/// Where the loop's helpers report to (`Send`, so a run can be spawned).
type Reporter<'r> = dyn FnMut(Report<'_>) + Send + 'r;

/// Logs a failed action and reports it.
fn failed(report: &mut Reporter<'_>, node: &str, action: &str, error: &anyhow::Error) {
    warn!(%node, error = %format!("{error:#}"), "could not {action}");
    report(Report::Failed { node, action, error });
}

/// One fault: picks a running node and kills or pauses it.
async fn inject(
    owner: &dyn Orchestrator,
    monkey: &mut ChaosMonkey,
    counts: &mut ChaosCounts,
    paused: &mut Vec<Paused>,
    report: &mut Reporter<'_>,
) {
    let running: Vec<NodeState> = match owner.nodes().await {
        Ok(nodes) => nodes.into_iter().filter(|n| n.state == RunState::Running).collect(),
        Err(e) => return failed(report, "", "list the nodes", &e),
    };
    let names: Vec<String> = running.iter().map(|n| n.name.clone()).collect();
    let Some(victim) = monkey.pick(&names) else { return };
    let pid = running.iter().find(|n| n.name == victim).and_then(|n| n.pid);
    let fault = monkey.next_fault();
    let (done, action) = match fault {
        Fault::Kill => (owner.kill(&victim).await, "kill"),
        Fault::Pause(_) => (owner.pause(&victim).await, "pause"),
    };
    if let Err(e) = done {
        return failed(report, &victim, action, &e);
    }
    let mut event = ChaosEvent::now(&victim, action, pid);
    match fault {
        Fault::Kill => counts.kills += 1,
        Fault::Pause(length) => {
            counts.pauses += 1;
            event.for_ms = Some(length.as_millis() as u64);
            paused.push(Paused { until: Instant::now() + length, name: victim, pid });
        }
    }
    info!(node = %event.node, action = %event.action, "chaos");
    report(Report::Done(&event));
}

/// Lets a paused node go on (its pid is the process that was paused; a replacement is not ours to report).
async fn resume(owner: &dyn Orchestrator, paused: Paused, report: &mut Reporter<'_>) {
    match owner.resume(&paused.name).await {
        Ok(()) => {
            let event = ChaosEvent::now(&paused.name, "resume", paused.pid);
            info!(node = %event.node, action = %event.action, "chaos");
            report(Report::Done(&event));
        }
        Err(e) => failed(report, &paused.name, "resume", &e),
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

    /// Nodes that are always running, and what was done to them.
    #[derive(Default)]
    struct Fake {
        done: std::sync::Mutex<Vec<String>>,
    }

    impl Fake {
        fn act(&self, action: &str, name: &str) -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
            self.done.lock().unwrap().push(format!("{action} {name}"));
            Box::pin(async { Ok(()) })
        }
    }

    impl Orchestrator for Fake {
        fn describe(&self) -> String {
            "fake".into()
        }
        fn nodes(&self) -> futures::future::BoxFuture<'_, anyhow::Result<Vec<NodeState>>> {
            let node = |name: &str| NodeState {
                name: name.into(),
                state: RunState::Running,
                detail: String::new(),
                pid: Some(7),
                restarts: None,
                refused: None,
            };
            Box::pin(async move { Ok(vec![node("gateway"), node("tx_filter-0")]) })
        }
        fn kill<'a>(&'a self, name: &'a str) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
            self.act("kill", name)
        }
        fn restart<'a>(&'a self, name: &'a str) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
            self.act("restart", name)
        }
        fn start<'a>(&'a self, name: &'a str) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
            self.act("start", name)
        }
        fn pause<'a>(&'a self, name: &'a str) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
            self.act("pause", name)
        }
        fn resume<'a>(&'a self, name: &'a str) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
            self.act("resume", name)
        }
    }

    fn pauses_and_resumes(done: &[String]) -> (usize, usize) {
        (
            done.iter().filter(|a| a.starts_with("pause")).count(),
            done.iter().filter(|a| a.starts_with("resume")).count(),
        )
    }

    #[tokio::test]
    async fn a_limited_run_stops_by_itself_after_its_last_pause() {
        let fake = Fake::default();
        let ms = Duration::from_millis;
        let mut monkey = ChaosMonkey::new(3, ms(5), ms(10), Targets::Random)
            .with_faults(Faults::Both, (ms(20), ms(40)))
            .with_limit(8);
        let mut events = Vec::new();
        let run = run_against(&fake, &mut monkey, std::future::pending(), |r| {
            if let Report::Done(e) = r {
                events.push(e.clone())
            }
        });
        let counts = tokio::time::timeout(Duration::from_secs(10), run).await.expect("stops by itself").unwrap();
        assert_eq!(counts.kills + counts.pauses, 8);
        let done = fake.done.lock().unwrap().clone();
        let (pauses, resumes) = pauses_and_resumes(&done);
        assert_eq!((pauses, resumes), (counts.pauses as usize, counts.pauses as usize), "{done:?}");
        assert_eq!(events.len(), 8 + resumes, "one event per fault and per resume: {events:?}");
        assert!(events
            .iter()
            .filter(|e| e.action == "pause")
            .all(|e| e.for_ms.is_some_and(|ms| (20..=40).contains(&ms))));
    }

    #[tokio::test]
    async fn a_stopped_run_resumes_what_it_paused() {
        let fake = Fake::default();
        let ms = Duration::from_millis;
        let mut monkey =
            ChaosMonkey::new(1, ms(5), ms(5), Targets::Random).with_faults(Faults::Pause, (ms(60_000), ms(60_000)));
        let counts = run_against(&fake, &mut monkey, tokio::time::sleep(ms(100)), |_| {}).await.unwrap();
        assert!(counts.pauses >= 2 && counts.kills == 0, "{counts:?}");
        let (pauses, resumes) = pauses_and_resumes(&fake.done.lock().unwrap());
        assert_eq!(pauses, resumes);
    }
}
