//! Which orchestrator drives the nodes: the `--orchestrator local|docker` settings (`COFFEE_ORCHESTRATOR`) and
//! the orchestrator they name. Kept apart from the [`Orchestrator`] trait, which depends on no implementation;
//! this module depends on both of them.

use crate::cluster::ProcessesOf;
use crate::docker::DockerOrchestrator;
use crate::orchestrator::Orchestrator;

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

    /// The nodes that already run, owned by someone else, for a process that only acts on them (`coffee chaos`):
    /// those of the `cluster up` of `namespace` on this machine, or the compose project's containers.
    pub async fn running(&self, namespace: &str) -> anyhow::Result<Box<dyn Orchestrator>> {
        Ok(match self.orchestrator {
            OrchestratorKind::Local => Box::new(ProcessesOf { namespace: namespace.to_owned() }),
            OrchestratorKind::Docker => Box::new(self.docker().await?),
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
