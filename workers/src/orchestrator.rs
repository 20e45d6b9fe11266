//! What owns the nodes: local child processes ([`LocalCluster`]) or compose containers
//! ([`crate::docker::DockerOrchestrator`]). The health monitors, the chaos monkey and the console list, kill and
//! restart nodes through this trait, so they work the same in both; which one is used is configuration
//! ([`OrchestratorArgs`]: `--orchestrator local|docker`, `COFFEE_ORCHESTRATOR`).

use crate::cluster::LocalCluster;
use crate::docker::DockerOrchestrator;
use futures::future::BoxFuture;
use serde::Serialize;

/// Whether a node runs, as far as its orchestrator knows (its heartbeat is another matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Created or being restarted: it should run shortly.
    Starting,
    /// Exited, killed, dead or paused: it runs again only when started.
    Stopped,
}

/// One node as its orchestrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeState {
    /// The topology's name (`gateway`, `tx_filter-0`, `monitor-1`, `console`).
    pub name: String,
    pub state: RunState,
    /// The orchestrator's own word: the container's state and status, or the process id.
    pub detail: String,
}

/// Starts, kills and restarts nodes by name. Boxed futures rather than `async fn` so that the monitor and the
/// console can hold a `Box<dyn Orchestrator>` chosen at run time.
pub trait Orchestrator: Send + Sync {
    /// Every node it owns, with its state, in a stable order.
    fn nodes(&self) -> BoxFuture<'_, anyhow::Result<Vec<NodeState>>>;
    /// Kills the node at once, as SIGKILL does: no shutdown code runs.
    fn kill<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Stops the node if it runs (without waiting for it to shut down cleanly) and starts it again.
    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Starts the node if it is stopped; does nothing if it runs.
    fn start<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Which orchestrator drives the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OrchestratorKind {
    /// Child processes of a `coffee cluster up` (or of the console) on this machine.
    #[default]
    Local,
    /// Containers of a compose project, through the Docker Engine API.
    Docker,
}

/// The settings that choose and reach an orchestrator; flatten into a command's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct OrchestratorArgs {
    /// Who owns the nodes: local processes or compose containers.
    #[arg(long, env = "COFFEE_ORCHESTRATOR", value_enum, default_value_t = OrchestratorKind::Local)]
    pub orchestrator: OrchestratorKind,
    /// The Docker Engine endpoint: `unix:///path/docker.sock` or `tcp://host:port`.
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
    pub docker_host: String,
    /// The compose project whose containers are the nodes (default: the project of the container this runs in,
    /// else any container that carries a compose service label).
    #[arg(long, env = "COFFEE_COMPOSE_PROJECT")]
    pub compose_project: Option<String>,
}

impl OrchestratorArgs {
    /// The Docker orchestrator these settings describe; finds its own compose project when none is given.
    pub async fn docker(&self) -> anyhow::Result<DockerOrchestrator> {
        let mut docker = DockerOrchestrator::connect(&self.docker_host, self.compose_project.clone())?;
        if docker.project().is_none() {
            // Inside a container, HOSTNAME is the container's id unless compose set another host name.
            if let Ok(me) = std::env::var("HOSTNAME") {
                docker.detect_project(&me).await;
            }
        }
        Ok(docker)
    }
}

/// The local cluster behind a lock, for whoever shares it with its supervision loop.
impl Orchestrator for tokio::sync::Mutex<LocalCluster> {
    fn nodes(&self) -> BoxFuture<'_, anyhow::Result<Vec<NodeState>>> {
        Box::pin(async move {
            let status = self.lock().await.status();
            Ok(status
                .into_iter()
                .map(|n| NodeState {
                    name: n.name,
                    state: if n.pid.is_some() { RunState::Running } else { RunState::Stopped },
                    detail: n.pid.map_or_else(|| "down".to_owned(), |pid| format!("pid {pid}")),
                })
                .collect())
        })
    }

    fn kill<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.lock().await.kill(name) })
    }

    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let restarted = self.lock().await.restart(name, None).await?;
            anyhow::ensure!(restarted, "no node named {name}");
            Ok(())
        })
    }

    fn start<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let mut cluster = self.lock().await;
            let node = cluster.status().into_iter().find(|n| n.name == name);
            match node {
                None => anyhow::bail!("no node named {name}"),
                Some(n) if n.pid.is_some() => Ok(()),
                // A local node that is down is started by restarting it (there is no separate "stopped" state).
                Some(_) => cluster.restart(name, None).await.map(drop),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        orchestrator: OrchestratorArgs,
    }

    #[test]
    fn the_orchestrator_is_chosen_on_the_command_line() {
        <Cli as clap::CommandFactory>::command().debug_assert();
        let cli = Cli::parse_from(["t", "--orchestrator", "docker", "--docker-host", "tcp://127.0.0.1:2375"]);
        assert_eq!(cli.orchestrator.orchestrator, OrchestratorKind::Docker);
        assert_eq!(cli.orchestrator.docker_host, "tcp://127.0.0.1:2375");
        assert!(Cli::try_parse_from(["t", "--orchestrator", "kubernetes"]).is_err());
    }
}
