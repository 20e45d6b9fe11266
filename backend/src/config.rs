//! The console's settings, from the command line (or built by tests).

use clap::{Args, Parser};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(name = "coffee-console", about = "The web console of Coffee Shop Analysis")]
pub struct Config {
    /// Address the console serves the page and the API on. Any address but loopback needs a token (`--token`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// The token the API and the event stream require (`Authorization: Bearer <token>` or `?token=<token>`).
    /// Required whenever it is given; on a non-loopback `--bind` without one, a random token is made and printed.
    #[arg(long, env = "COFFEE_CONSOLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The URL people open the console at, when it is not the `--bind` address (a name behind a proxy, say):
    /// its host is one the console serves. Loopback names and addresses always are; so is `--bind`'s host.
    #[arg(long, env = "COFFEE_CONSOLE_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub uploads: UploadLimits,
    /// The data folder: `sample/` (bundled), `generated/`, `uploads/`, `results/` and `history/` live under it.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Ended sessions the run history keeps (with their NDJSON); past it, the oldest go first.
    #[arg(long, default_value_t = crate::history::DEFAULT_MAX)]
    pub history_max: usize,
    /// The built frontend (`scripts/build-frontend.sh` writes it).
    #[arg(long, default_value = "frontend/dist")]
    pub static_dir: PathBuf,
    /// The `coffee` binary the cluster's nodes run (default: `coffee` next to this executable).
    #[arg(long)]
    pub coffee_bin: Option<PathBuf>,
    /// Replicas per stage, `STAGE=N,...` (`all=N` sets every stage).
    #[arg(long, default_value = "all=2")]
    pub replicas: String,
    /// Prefix of the cluster's queue names, so the console can share a broker with other clusters.
    #[arg(long, default_value = "console")]
    pub namespace: String,
    /// Address of the cluster's gateway (it differs from the CLI's 7070 so both can run at once).
    #[arg(long, default_value = "127.0.0.1:7171")]
    pub gateway: String,
    /// Health monitors to run (they are nodes too: kill one and the others revive it). With none, a node is
    /// restarted as soon as its process exits; with some, when the leading monitor notices it is silent.
    #[arg(long, default_value_t = coffee_ops::monitor::DEFAULT_MONITORS)]
    pub monitors: u16,
    #[arg(long, env = "AMQP_URL", hide_env_values = true, default_value = coffee_engine::amqp::DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// `quorum` on a RabbitMQ cluster (replicated queues); the console's nodes are told the same.
    #[arg(long, env = "COFFEE_QUEUE_TYPE", value_enum, default_value_t = coffee_engine::topology::QueueType::Classic)]
    pub queue_type: coffee_engine::topology::QueueType,
    /// Who owns the nodes: `local` (the console starts them as processes) or `docker` (the containers of a
    /// compose project; `--coffee-bin` and `--monitors` are then unused, the compose file has its own monitors).
    #[command(flatten)]
    pub orchestrator: coffee_ops::orchestration::OrchestratorArgs,
}

/// Caps on one upload, enforced while it streams in.
#[derive(Debug, Clone, Copy, Args)]
pub struct UploadLimits {
    /// Files per upload.
    #[arg(long = "max-upload-files", default_value_t = 200)]
    pub max_files: usize,
    /// MiB per uploaded file.
    #[arg(long = "max-file-mib", default_value_t = 64)]
    pub max_file_mib: u64,
    /// MiB per upload, all files together.
    #[arg(long = "max-upload-mib", default_value_t = 256)]
    pub max_total_mib: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits { max_files: 200, max_file_mib: 64, max_total_mib: 256 }
    }
}

impl Config {
    /// Whether `--bind` is a loopback address (`127.0.0.0/8`, `::1`, `localhost`): only the local machine can
    /// reach the console there, so it needs no token.
    pub fn bind_is_loopback(&self) -> bool {
        is_loopback(host_of(&self.bind))
    }

    /// The host names the console serves (see [`crate::auth`]): loopback names and addresses, `--bind`'s host,
    /// `--public-url`'s host. Bound to every interface (`0.0.0.0`, `[::]`) with no public URL, it cannot know
    /// the names it is reached by, and serves any (it has a token then).
    pub fn served_hosts(&self) -> ServedHosts {
        let bind_host = host_of(&self.bind);
        let unspecified = bind_host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) || bind_host.is_empty();
        let public = self.public_url.as_deref().map(|url| {
            let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
            host_of(authority.split('/').next().unwrap_or(authority)).to_ascii_lowercase()
        });
        let mut names: Vec<String> = public.into_iter().collect();
        if !unspecified {
            names.push(bind_host.to_ascii_lowercase());
        }
        ServedHosts { any: unspecified && self.public_url.is_none(), names }
    }

    /// The token the API requires: `--token` if given, else a fresh random one off loopback, else none.
    pub fn effective_token(&self) -> Option<String> {
        use rand::Rng;
        match self.token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => Some(token.to_owned()),
            None if self.bind_is_loopback() => None,
            None => Some(
                rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(32).map(char::from).collect(),
            ),
        }
    }

    /// The `coffee` binary: `--coffee-bin`, else the one beside the console's own executable.
    pub fn coffee_exe(&self) -> PathBuf {
        if let Some(path) = &self.coffee_bin {
            return path.clone();
        }
        let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("coffee-console"));
        me.with_file_name("coffee")
    }

    /// Where session results (`client-<id>.ndjson`) are written.
    pub fn results_dir(&self) -> PathBuf {
        self.data_dir.join("results")
    }
}

/// The host names a console serves (see [`Config::served_hosts`]).
#[derive(Debug, Clone, Default)]
pub struct ServedHosts {
    /// Every name (a console bound to every interface, with no public URL).
    pub any: bool,
    /// Besides loopback names and addresses, lowercase.
    pub names: Vec<String>,
}

impl ServedHosts {
    /// Whether a request's `Host` (a name or an address, with or without a port) is one the console serves.
    pub fn serves(&self, host: &str) -> bool {
        let host = host_of(host);
        self.any || is_loopback(host) || self.names.iter().any(|name| name.eq_ignore_ascii_case(host))
    }
}

/// The host of `host[:port]`, `[v6][:port]` or `v6`, without brackets.
fn host_of(authority: &str) -> &str {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match authority.rsplit_once(':') {
        // One colon: a port. Several: an IPv6 address without brackets.
        Some((host, _port)) if !host.contains(':') => host,
        _ => authority,
    }
}

/// `localhost` (and its subdomains), or a loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_binds_need_no_token() {
        let config = |bind: &str| Config::parse_from(["coffee-console", "--bind", bind]);
        for bind in ["127.0.0.1:8080", "127.1.2.3:1", "[::1]:8080", "localhost:8080", "LOCALHOST:1"] {
            assert!(config(bind).bind_is_loopback(), "{bind}");
            assert_eq!(config(bind).effective_token(), None, "{bind}");
        }
        for bind in ["0.0.0.0:8080", "[::]:8080", "192.168.1.4:80", "example.org:80", ":8080"] {
            assert!(!config(bind).bind_is_loopback(), "{bind}");
            assert_eq!(config(bind).effective_token().map(|t| t.len()), Some(32), "{bind}");
        }
        let given = Config::parse_from(["coffee-console", "--token", "s3cret"]);
        assert_eq!(given.effective_token().as_deref(), Some("s3cret"));
    }

    #[test]
    fn the_hosts_a_console_serves() {
        let config = |args: &[&str]| Config::parse_from([&["coffee-console"], args].concat());
        let loopback = config(&["--bind", "127.0.0.1:8080"]).served_hosts();
        for host in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.2", "a.localhost:1"] {
            assert!(loopback.serves(host), "{host}");
        }
        for host in ["evil.test:8080", "evil.test", "10.0.0.5:8080", "127.0.0.1.evil.test:8080", ""] {
            assert!(!loopback.serves(host), "{host}");
        }
        let named = config(&["--bind", "10.0.0.5:8080", "--public-url", "https://coffee.example.org/console"]);
        let named = named.served_hosts();
        assert!(named.serves("10.0.0.5:8080") && named.serves("coffee.example.org") && named.serves("localhost"));
        assert!(!named.serves("evil.test:8080"));
        assert!(config(&["--bind", "0.0.0.0:8080"]).served_hosts().serves("any.name:8080"));
        let public = config(&["--bind", "0.0.0.0:8080", "--public-url", "http://coffee.lan:8080"]).served_hosts();
        assert!(public.serves("coffee.lan:8080") && !public.serves("evil.test:8080"));
    }
}
