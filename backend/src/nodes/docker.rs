//! The nodes as containers of a compose project (`--orchestrator docker`): the console starts nothing; it lists
//! the containers, kills and restarts them through the Docker Engine API, and hears their heartbeats. The compose file's
//! health monitors restart what dies (a killed container is "manually stopped" to Docker, so its restart policy
//! does not bring it back: the monitors do, as they would any silent node).

use super::node_view;
use crate::events::{Event, Events};
use coffee::docker::DockerOrchestrator;
use coffee::heartbeat::{self, HeardNodes};
use coffee::orchestrator::{NodeState, Orchestrator, RunState};
use coffee::topology::Topology;
use coffee_types::{ClusterState, NodeView};
use std::collections::HashMap;
use std::sync::Mutex;

pub struct Docker {
    docker: DockerOrchestrator,
    heard: HeardNodes,
    watcher: tokio::task::JoinHandle<()>,
    seen: Mutex<Seen>,
    events: Events,
}

/// What the last listing of the containers said.
#[derive(Default)]
struct Seen {
    /// Whether a listing has succeeded yet.
    listed: bool,
    /// Why the last listing failed.
    error: Option<String>,
    /// Whether each node ran at the last listing (or was killed since), to tell when one comes back.
    running: HashMap<String, bool>,
}

impl Docker {
    /// Drives `docker`'s containers and starts hearing the namespace's heartbeats.
    pub fn new(docker: DockerOrchestrator, amqp_url: &str, topology: &Topology, events: Events) -> Docker {
        let heard = HeardNodes::default();
        let watcher = tokio::spawn(heartbeat::watch(amqp_url.to_owned(), topology.clone(), heard.clone()));
        Docker { docker, heard, watcher, seen: Mutex::default(), events }
    }

    /// `docker (project P)`, for the page.
    pub fn describe(&self) -> String {
        match self.docker.project() {
            Some(project) => format!("docker (compose project {project})"),
            None => "docker (every compose project)".to_owned(),
        }
    }

    /// Lists the containers once, to report whether the engine answers.
    pub async fn start(&self) -> anyhow::Result<()> {
        self.list().await.map(drop)
    }

    /// `up` once the engine has answered, `down` with the reason while it does not.
    pub fn cluster_state(&self) -> ClusterState {
        let seen = self.seen.lock().expect("lock");
        match (&seen.error, seen.listed) {
            (Some(error), _) => ClusterState::down(Some(error.clone())),
            (None, true) => ClusterState::up(),
            (None, false) => ClusterState::starting(),
        }
    }

    /// Every node's container, in name order (empty while the engine does not answer).
    pub async fn status(&self) -> Vec<NodeView> {
        self.list().await.map(|nodes| nodes.into_iter().map(|n| self.view(n)).collect()).unwrap_or_default()
    }

    /// Kills the node's container with SIGKILL.
    pub async fn kill(&self, name: &str) -> anyhow::Result<NodeView> {
        let node = self.find(name).await?;
        self.docker.kill(name).await?;
        // Down now, whether or not a listing sees it before a monitor restarts it.
        self.seen.lock().expect("lock").running.insert(name.to_owned(), false);
        Ok(self.view(node))
    }

    /// Restarts the node's container (stopped at once, no grace period, then started).
    pub async fn restart(&self, name: &str) -> anyhow::Result<NodeView> {
        let node = self.find(name).await?;
        self.docker.restart(name).await?;
        // Running again: the caller reports the restart, so the next listing must not report it a second time.
        self.seen.lock().expect("lock").running.insert(name.to_owned(), true);
        Ok(NodeView { up: true, detail: "restarted".into(), ..self.view(node) })
    }

    /// Stops hearing heartbeats; the containers are compose's and keep running.
    pub fn shutdown(&self) {
        self.watcher.abort();
    }

    /// The node's container, or an error naming it (what is not a node, the broker say, is never found).
    async fn find(&self, name: &str) -> anyhow::Result<NodeState> {
        let nodes = self.list().await?;
        nodes.into_iter().find(|n| n.name == name).ok_or_else(|| anyhow::anyhow!("no node named `{name}`"))
    }

    /// The node containers; a node that runs again since the last listing is reported as `node_restarted`.
    async fn list(&self) -> anyhow::Result<Vec<NodeState>> {
        let listed = self.docker.nodes().await;
        let mut seen = self.seen.lock().expect("lock");
        match listed {
            Ok(nodes) => {
                (seen.listed, seen.error) = (true, None);
                for node in &nodes {
                    let running = node.state == RunState::Running;
                    if seen.running.insert(node.name.clone(), running) == Some(false) && running {
                        let heard = self.heard.get(&node.name);
                        let (pid, restarts) = (heard.map(|h| h.pid), heard.map_or(0, |h| h.restarts));
                        let node = node.name.clone();
                        self.events.send(Event::NodeRestarted { node, pid, restarts, by: None });
                    }
                }
                Ok(nodes)
            }
            Err(e) => {
                let message = format!(
                    "the Docker engine does not answer: {e:#} (is its socket mounted into this container, and \
                     DOCKER_HOST right?)"
                );
                seen.error = Some(message.clone());
                Err(anyhow::anyhow!(message))
            }
        }
    }

    fn view(&self, node: NodeState) -> NodeView {
        let heard = self.heard.get(&node.name);
        let age = heard.map(|h| h.at.elapsed().as_millis() as u64);
        let up = node.state == RunState::Running;
        node_view(node.name, up, heard.map(|h| h.pid), heard.map_or(0, |h| h.restarts), age, node.detail)
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}
