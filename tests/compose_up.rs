//! `docker compose up` as far as it can go without Docker: the node services of a generated compose file run
//! as local processes, each one a "container" of a fake Docker Engine API ([`crate::fake_docker`]) that starts,
//! kills and restarts it as the engine would. Every service runs the file's own command and environment, with
//! only what names the compose network rewritten for loopback: the broker's URL, the namespace (so tests share
//! the broker), the gateway's listen address, the state volume (a folder per service that outlives restarts)
//! and the engine's socket (the fake engine's address). The monitors find their compose project as they would
//! in a container: by inspecting their own container, whose id is their `HOSTNAME`.
//!
//! Restart policy as Docker's `unless-stopped`: a process that exits on its own is started again; one killed
//! through the API stays down until someone (the monitors) restarts it.

use crate::fake_docker::{self, container, Engine, Hook};
use crate::harness::{amqp_url, free_addr, node_binary, unique_namespace};
use coffee_ops::compose::{ComposeFile, Service};
use coffee_ops::docker::NODE_LABEL;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The compose project the containers belong to.
pub const PROJECT: &str = "coffee";

/// A compose file's node services, running.
pub struct ComposeUp {
    pub engine: Engine,
    /// The fake engine's address (`tcp://127.0.0.1:port`).
    pub endpoint: String,
    /// Where the gateway listens.
    pub gateway: String,
    pub namespace: String,
    processes: Arc<Processes>,
    supervisor: tokio::task::JoinHandle<()>,
    _state: tempfile::TempDir,
}

/// How to start each container, and what runs now.
struct Processes {
    specs: HashMap<String, (Vec<String>, BTreeMap<String, String>)>,
    running: Mutex<HashMap<String, Child>>,
    /// Node logs, one file per container, appended across restarts.
    logs: PathBuf,
}

impl Processes {
    fn spawn(&self, id: &str) -> Result<(), String> {
        let (command, env) = self.specs.get(id).ok_or_else(|| format!("no container {id}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{id}.log")))
            .map_err(|e| e.to_string())?;
        let stderr = log.try_clone().map_err(|e| e.to_string())?;
        // `coffee` is the image's binary: here, the tests' build of it.
        let child = Command::new(node_binary())
            .args(&command[1..])
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "RUST_LOG"))
            .envs(env)
            .env("HOSTNAME", id)
            .stdout(log)
            .stderr(stderr)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {id}: {e}"))?;
        self.running.lock().expect("lock").insert(id.to_owned(), child);
        Ok(())
    }

    fn kill(&self, id: &str) {
        if let Some(mut child) = self.running.lock().expect("lock").remove(id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the engine does for `action` on container `id`.
    fn act(&self, id: &str, action: &str) -> Result<(), String> {
        match action {
            "kill" => {
                self.kill(id);
                Ok(())
            }
            "restart" => {
                self.kill(id);
                self.spawn(id)
            }
            "start" if self.running.lock().expect("lock").contains_key(id) => Ok(()),
            "start" => self.spawn(id),
            other => Err(format!("unknown action {other}")),
        }
    }

    /// Containers whose process exited on its own since the last call.
    fn exited(&self) -> Vec<String> {
        let mut running = self.running.lock().expect("lock");
        let gone: Vec<String> =
            running.iter_mut().filter_map(|(id, child)| child.try_wait().ok().flatten().map(|_| id.clone())).collect();
        for id in &gone {
            running.remove(id);
        }
        gone
    }
}

impl ComposeUp {
    /// Starts every service of `file` that is a node (labelled `coffee.node`): the gateway, the stage replicas
    /// and the monitors. The broker is the tests' RabbitMQ; the console is not started.
    pub async fn start(file: &ComposeFile) -> ComposeUp {
        let state = tempfile::tempdir().expect("tempdir");
        let (namespace, gateway) = (unique_namespace("compose-up"), free_addr());
        let mut engine = Engine::default();
        let endpoint_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("tcp://{}", endpoint_listener.local_addr().expect("addr"));
        let mut specs = HashMap::new();
        let mut containers = Vec::new();
        for (name, service) in &file.services.0 {
            let Some(node) = service.labels.get(NODE_LABEL) else { continue };
            let id = format!("{PROJECT}-{name}-1");
            let volume = state.path().join(name);
            std::fs::create_dir_all(&volume).expect("volume");
            let command = loopback_command(service, &namespace, &gateway);
            let env = loopback_env(service, &namespace, &endpoint, &volume);
            specs.insert(id.clone(), (command, env));
            containers.push(container(&id, PROJECT, name, Some(node), "running"));
        }
        let ids: Vec<String> = specs.keys().cloned().collect();
        let processes = Arc::new(Processes { specs, running: Mutex::default(), logs: state.path().join("logs") });
        std::fs::create_dir_all(&processes.logs).expect("logs");
        engine.containers = Arc::new(Mutex::new(containers));
        let acting = processes.clone();
        let hook: Hook = Arc::new(move |id: &str, action: &str| acting.act(id, action));
        engine.hook = Some(hook);
        fake_docker::serve_on(endpoint_listener, engine.clone());
        for id in &ids {
            processes.spawn(id).expect("start a container");
        }
        let supervisor = tokio::spawn(restart_unless_stopped(processes.clone(), engine.clone()));
        ComposeUp { engine, endpoint, gateway, namespace, processes, supervisor, _state: state }
    }

    /// The container id of a node (`q3_agg-0` runs in `coffee-q3-agg-0-1`).
    pub fn container_of(&self, node: &str) -> String {
        format!("{PROJECT}-{}-1", coffee_ops::compose::service_name(node))
    }

    /// The pid of a node's process, while it runs.
    pub fn pid_of(&self, node: &str) -> Option<u32> {
        self.processes.running.lock().expect("lock").get(&self.container_of(node)).map(Child::id)
    }

    /// The last lines of a node's log, for failure messages.
    pub fn log_tail(&self, node: &str) -> String {
        let text = std::fs::read_to_string(self.processes.logs.join(format!("{}.log", self.container_of(node))));
        let text = text.unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ComposeUp {
    fn drop(&mut self) {
        self.supervisor.abort();
        let ids: Vec<String> = self.processes.running.lock().expect("lock").keys().cloned().collect();
        for id in ids {
            self.processes.kill(&id);
        }
    }
}

/// Docker's `unless-stopped`: a process that exits on its own comes back; the engine shows it restarting.
async fn restart_unless_stopped(processes: Arc<Processes>, engine: Engine) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for id in processes.exited() {
            engine.set_state(&id, "restarting");
            if processes.spawn(&id).is_ok() {
                engine.set_state(&id, "running");
            }
        }
    }
}

/// The service's command with the namespace and the gateway's listen address made this test's.
fn loopback_command(service: &Service, namespace: &str, gateway: &str) -> Vec<String> {
    let mut command = service.command.clone();
    for i in 1..command.len() {
        match command[i - 1].as_str() {
            "--namespace" => command[i] = namespace.to_owned(),
            "--listen" => command[i] = gateway.to_owned(),
            _ => {}
        }
    }
    command
}

/// The service's environment with the broker, namespace, state volume and engine made this test's.
fn loopback_env(service: &Service, namespace: &str, engine: &str, volume: &Path) -> BTreeMap<String, String> {
    let mut env = service.environment.clone();
    env.insert("AMQP_URL".into(), amqp_url());
    env.insert("COFFEE_NAMESPACE".into(), namespace.into());
    if env.contains_key("STATE_DIR") {
        env.insert("STATE_DIR".into(), volume.display().to_string());
    }
    if env.contains_key("DOCKER_HOST") {
        env.insert("DOCKER_HOST".into(), engine.into());
    }
    env
}
