//! `coffee-console`: the web console (see the library's docs).

use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn,lapin=warn".into()),
        )
        .init();
    let config = coffee_console::Config::parse();
    if let Err(e) = coffee_console::serve(config).await {
        eprintln!("coffee-console: {e:#}");
        std::process::exit(1);
    }
}
