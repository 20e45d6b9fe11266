//! The Docker orchestrator: the nodes are the containers of a compose project, reached through the Docker
//! Engine API (bollard). A node is a container that carries the node name our compose file adds (`coffee.node`),
//! in the compose project (`com.docker.compose.project`) when one is known. Other containers (the broker, the
//! console, anything else on the engine) are never listed, so nothing here can kill them by mistake.

use crate::orchestrator::{NodeState, Orchestrator, RunState};
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions, RestartContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::future::BoxFuture;
use std::collections::HashMap;
use tracing::{info, warn};

/// The label that names the topology node a container runs (service names cannot hold `_`, node names do).
/// The compose file sets it ([`crate::compose`]); only containers that carry it are nodes.
pub const NODE_LABEL: &str = "coffee.node";
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// Set on containers of `docker compose run`: one-off commands, never nodes.
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
/// Seconds an API call may take.
const TIMEOUT_SECS: u64 = 30;

/// Drives the containers of one compose project (or of every project when none is known).
pub struct DockerOrchestrator {
    docker: Docker,
    project: Option<String>,
}

impl DockerOrchestrator {
    /// Connects to `endpoint`: `unix:///path/to/docker.sock` (or a bare path), or `tcp://host:port` /
    /// `http://host:port` (plain HTTP, as the tests' fake engine speaks). Nothing is sent until the first call.
    pub fn connect(endpoint: &str, project: Option<String>) -> anyhow::Result<Self> {
        let docker = if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(endpoint, TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_unix(endpoint, TIMEOUT_SECS, API_DEFAULT_VERSION)
        }
        .map_err(|e| anyhow::anyhow!("cannot reach the Docker engine at {endpoint}: {e}"))?;
        Ok(DockerOrchestrator { docker, project: project.filter(|p| !p.is_empty()) })
    }

    /// The compose project whose containers are the nodes, if known.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// Takes the project of `container` (this process's own container, by id or name). Leaves the project
    /// unknown if that container is not found or not part of a compose project.
    pub async fn detect_project(&mut self, container: &str) {
        match self.docker.inspect_container(container, None::<InspectContainerOptions>).await {
            Ok(me) => {
                let labels = me.config.and_then(|c| c.labels).unwrap_or_default();
                self.project = labels.get(PROJECT_LABEL).cloned();
                info!(project = ?self.project, "compose project from this container's labels");
            }
            Err(e) => {
                warn!(error = %e, %container, "cannot inspect this container; driving the nodes of every compose project")
            }
        }
    }

    /// The node's containers, by topology name, in name order.
    async fn containers(&self) -> anyhow::Result<Vec<(String, ContainerSummary)>> {
        // Every label filter must match: a node's label, and the project's when known.
        let mut labels = vec![NODE_LABEL.to_owned()];
        labels.extend(self.project.iter().map(|project| format!("{PROJECT_LABEL}={project}")));
        let options = ListContainersOptions {
            all: true, // stopped nodes too: they are the ones to start
            filters: Some(HashMap::from([("label".to_owned(), labels)])),
            ..Default::default()
        };
        let listed = self.docker.list_containers(Some(options)).await.map_err(|e| {
            // Said here, where the engine is called, so the console, the monitors and `coffee chaos` all say it.
            anyhow::anyhow!(
                "the Docker engine does not answer: {e} (is its socket mounted into this container, and DOCKER_HOST \
                 right?)"
            )
        })?;
        let mut nodes: Vec<(String, ContainerSummary)> = listed
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.as_ref()?;
                if labels.get(ONEOFF_LABEL).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                    return None;
                }
                Some((labels.get(NODE_LABEL)?.clone(), c))
            })
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(nodes)
    }

    /// The id of the container that runs node `name`.
    async fn container_of(&self, name: &str) -> anyhow::Result<String> {
        let nodes = self.containers().await?;
        let (_, container) = nodes
            .iter()
            .find(|(node, _)| node == name)
            .ok_or_else(|| anyhow::anyhow!("no container runs node {name}"))?;
        container.id.clone().ok_or_else(|| anyhow::anyhow!("the engine listed node {name}'s container without an id"))
    }
}

fn run_state(state: Option<ContainerSummaryStateEnum>) -> RunState {
    match state {
        Some(ContainerSummaryStateEnum::RUNNING) => RunState::Running,
        Some(ContainerSummaryStateEnum::CREATED | ContainerSummaryStateEnum::RESTARTING) => RunState::Starting,
        _ => RunState::Stopped,
    }
}

impl DockerOrchestrator {
    /// Sends a signal to the node's container (its main process: the node). SIGSTOP rather than the engine's
    /// pause (the freezer), so a stopped node is killed and restarted like any other.
    async fn signal(&self, name: &str, signal: &str) -> anyhow::Result<()> {
        let id = self.container_of(name).await?;
        let options = KillContainerOptions { signal: signal.into() };
        Ok(self.docker.kill_container(&id, Some(options)).await?)
    }
}

impl Orchestrator for DockerOrchestrator {
    fn describe(&self) -> String {
        match self.project() {
            Some(project) => format!("docker (compose project {project})"),
            None => "docker (every compose project)".to_owned(),
        }
    }

    fn nodes(&self) -> BoxFuture<'_, anyhow::Result<Vec<NodeState>>> {
        Box::pin(async move {
            Ok(self
                .containers()
                .await?
                .into_iter()
                .map(|(name, c)| NodeState {
                    refused: c.status.as_deref().and_then(refused_by_status),
                    name,
                    state: run_state(c.state),
                    detail: c.status.or(c.state.map(|s| s.to_string())).unwrap_or_default(),
                    pid: None,
                    restarts: None,
                })
                .collect())
        })
    }

    fn kill<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.signal(name, "SIGKILL").await })
    }

    fn pause<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.signal(name, "SIGSTOP").await })
    }

    fn resume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.signal(name, "SIGCONT").await })
    }

    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let id = self.container_of(name).await?;
            // No grace period: a node is restarted because it is silent, and nodes are built to die anywhere.
            let options = RestartContainerOptions { t: Some(0), signal: None };
            Ok(self.docker.restart_container(&id, Some(options)).await?)
        })
    }

    fn start<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let id = self.container_of(name).await?;
            // The engine answers 304 (not an error for bollard) when the container already runs.
            Ok(self.docker.start_container(&id, None).await?)
        })
    }
}

/// A container whose last exit was a refusal for good: the engine's status names the exit code
/// (`Exited (78) 3 seconds ago`, `Restarting (78) ...`). The engine restarts it anyway (a restart policy cannot
/// spare one exit code); its log says why.
fn refused_by_status(status: &str) -> Option<String> {
    let code = format!("({})", coffee_engine::amqp::REFUSED_EXIT_CODE);
    status.contains(&code).then(|| format!("it exited with {code}, refused for good: its log (`docker logs`) says why"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_container_that_exited_refused_is_named_so() {
        assert!(super::refused_by_status("Restarting (78) 2 seconds ago").is_some());
        assert!(super::refused_by_status("Exited (75) 3 minutes ago").is_none());
        assert!(super::refused_by_status("Up 5 minutes").is_none());
    }
}
