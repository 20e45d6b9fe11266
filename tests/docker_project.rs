//! A compose project on the real Docker engine, as a user runs it: `scripts/docker-up.sh` installs and starts the
//! engine where needed, builds the images with no pull and starts the project; `scripts/docker-down.sh` removes
//! it. Containers are found by the labels docker-compose sets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A compose project started by `scripts/docker-up.sh`; taken down when dropped, even by a failing test.
pub struct DockerProject {
    pub name: String,
    file: PathBuf,
    env: Vec<(String, String)>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl DockerProject {
    /// Runs `scripts/docker-up.sh` for project `name` of compose file `file` (relative to the repository) with
    /// `env`; fails the test with the script's output if it fails. Debug binaries: the test build has them
    /// already, and a release build would take minutes.
    pub fn up(name: &str, file: &Path, env: &[(&str, &str)]) -> DockerProject {
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("COFFEE_PROFILE".into(), "debug".into()));
        let project = DockerProject { name: name.to_owned(), file: file.to_owned(), env };
        let up = project.script("docker-up.sh");
        assert!(
            up.status.success(),
            "scripts/docker-up.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr)
        );
        project
    }

    fn script(&self, name: &str) -> Output {
        Command::new(root().join("scripts").join(name))
            .current_dir(root())
            .env("COFFEE_COMPOSE_PROJECT", &self.name)
            .env("COFFEE_COMPOSE_FILE", &self.file)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap_or_else(|e| panic!("running scripts/{name}: {e}"))
    }

    /// Runs `scripts/docker-down.sh` and checks that no container, network or volume of the project is left.
    pub fn down(&self) {
        let down = self.script("docker-down.sh");
        assert!(down.status.success(), "scripts/docker-down.sh failed: {}", String::from_utf8_lossy(&down.stderr));
        assert_eq!(self.listed(&["ps", "-a"]), Vec::<String>::new(), "containers left");
        assert_eq!(self.listed(&["network", "ls"]), Vec::<String>::new(), "networks left");
        assert_eq!(self.listed(&["volume", "ls"]), Vec::<String>::new(), "volumes left");
    }

    /// What `docker` lists of the project (`ps`, `network ls`, `volume ls` ...), one name per line.
    pub fn listed(&self, what: &[&str]) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.name);
        // Containers print their names as `.Names`; networks and volumes as `.Name`.
        let format = if what[0] == "ps" { "{{.Names}}" } else { "{{.Name}}" };
        docker(&[what, &["--filter", &label, "--format", format]].concat()).lines().map(str::to_owned).collect()
    }

    /// The container of a compose service (docker-compose 1.29 names it `<project>_<service>_1`).
    pub fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }

    /// When a service's container last started, and whether it runs.
    pub fn started_at(&self, service: &str) -> (String, bool) {
        let format = "{{.State.StartedAt}} {{.State.Running}}";
        let state = docker(&["inspect", "--format", format, &self.container(service)]);
        let (at, running) = state.split_once(' ').expect("two fields");
        (at.to_owned(), running == "true")
    }

    /// Waits until each service runs again, started after the time it had in `before`.
    pub async fn wait_restarted(&self, services: &[&str], before: &[String], limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        for (service, before) in services.iter().zip(before) {
            loop {
                let (at, running) = self.started_at(service);
                if running && &at != before {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{service} was not restarted: started {at}, running {running}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

impl Drop for DockerProject {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        let _ = self.script("docker-down.sh");
    }
}

impl DockerProject {
    /// Prints the last lines of every container's log, and a broker's error reports from the start (a crash's
    /// reason comes first and is long): what a failed test leaves to read (the containers go with the project).
    /// Never panics: it runs while a test's panic unwinds.
    fn print_logs(&self) {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let Ok(listed) =
            Command::new("docker").args(["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]).output()
        else {
            return;
        };
        for container in String::from_utf8_lossy(&listed.stdout).lines() {
            if container.contains("rabbitmq") {
                if let Ok(logs) = Command::new("docker").args(["logs", container]).output() {
                    let text =
                        String::from_utf8_lossy(&logs.stdout).into_owned() + &String::from_utf8_lossy(&logs.stderr);
                    let errors: Vec<&str> = text.lines().filter(|l| l.contains("[error]")).take(200).collect();
                    eprintln!("---- the first error lines of {container}'s log ({} shown):", errors.len());
                    eprintln!("{}", errors.join("\n"));
                }
            }
            if let Ok(logs) = Command::new("docker").args(["logs", "--tail", "40", container]).output() {
                eprintln!("---- the last lines of {container}'s log:");
                eprintln!("{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr));
            }
        }
    }
}

/// Runs `docker ARGS`, failing the test on an error; its standard output, trimmed.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("docker runs");
    assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
