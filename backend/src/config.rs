//! The console's settings, from the command line (or built by tests).

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(name = "coffee-console", about = "The web console of Coffee Shop Analysis")]
pub struct Config {
    /// Address the console serves the page and the API on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// The data folder: `sample/` (bundled), `generated/`, `uploads/` and `results/` live under it.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
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
    /// Health monitors to run. With none a node is restarted as soon as its process exits; with some, when the
    /// monitors notice it is silent.
    #[arg(long, default_value_t = 0)]
    pub monitors: u16,
    #[arg(long, env = "AMQP_URL", default_value = coffee::amqp::DEFAULT_AMQP_URL)]
    pub amqp_url: String,
}

impl Config {
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
