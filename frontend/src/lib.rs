//! The web console's page: a Leptos client-side app. [`state`] holds the signals and the event stream,
//! [`api`] the typed API calls; each panel is its own module.

pub mod api;
mod chaos;
mod compare;
mod datasets;
mod dead_letters;
mod nodes;
mod results;
mod sessions;
pub mod state;

use leptos::prelude::*;
use state::Console;
use wasm_bindgen::prelude::*;

/// Entry point, called by the `wasm-bindgen` glue when the module loads.
#[wasm_bindgen(start)]
pub fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let console = Console::new();
    provide_context(console);
    console.start();
    view! {
        <Header/>
        <main class="layout">
            <aside class="column side">
                <datasets::DatasetPanel/>
                <chaos::ChaosPanel/>
                <chaos::EventLog/>
            </aside>
            <section class="column wide">
                <sessions::SessionsPanel/>
                <results::ResultsPanel/>
                <compare::ComparePanel/>
                <nodes::NodesPanel/>
                <dead_letters::DeadLettersPanel/>
            </section>
        </main>
    }
}

/// The console's signals, provided by [`App`].
pub(crate) fn console() -> Console {
    expect_context::<Console>()
}

#[component]
fn Header() -> impl IntoView {
    let c = console();
    let retry = move |_| {
        c.cluster.set("starting".into());
        leptos::task::spawn_local(async move {
            if let Err(e) = api::post::<serde_json::Value>("/api/cluster/retry", &serde_json::json!({})).await {
                c.error(e);
            }
            c.refresh_status();
        });
    };
    view! {
        <header class="topbar">
            <div class="brand">
                <span class="logo">"☕"</span>
                <div>
                    <h1>"Coffee Shop Analysis"</h1>
                    <p class="subtitle">"distributed pipeline console"</p>
                </div>
            </div>
            <div class="meta">
                <span class="meta-item">"namespace " <b>{move || c.status.get().namespace}</b></span>
                <span class="meta-item">"gateway " <b>{move || c.status.get().gateway}</b></span>
                <span class="meta-item" data-testid="orchestrator">"nodes " <b>{move || c.status.get().orchestrator}</b></span>
                <span class="meta-item">"replicas " <b>{move || c.status.get().replicas}</b></span>
                <DeadLettersPill/>
                <span class=move || format!("pill {}", if c.connected.get() { "ok" } else { "warn" })>
                    {move || if c.connected.get() { "live" } else { "reconnecting" }}
                </span>
                <span
                    id="cluster-state"
                    data-state=move || c.cluster.get()
                    class=move || format!("pill {}", match c.cluster.get().as_str() { "up" => "ok", "starting" => "warn", _ => "bad" })
                >
                    {move || format!("cluster {}", c.cluster.get())}
                </span>
            </div>
        </header>
        <Show when=move || c.status.get().broker_blocked>
            <div class="banner bad" data-testid="broker-blocked">
                <div>
                    <b>"The broker blocks publishers "</b>
                    "(a memory or disk alarm): every node is silent and every session stands still until it clears. \
                     The monitors restart nobody for it."
                </div>
            </div>
        </Show>
        <Show when=move || c.cluster.get() == "down">
            <div class="banner bad" id="broker-banner" data-testid="broker-banner">
                <div>
                    <b>"The cluster is not running. "</b>
                    {move || c.cluster_error.get().unwrap_or_default()}
                </div>
                <button class="btn" on:click=retry>"Retry now"</button>
            </div>
        </Show>
        {move || c.notice.get().map(|(is_error, text)| view! {
            <div class=if is_error { "banner bad" } else { "banner info" } data-testid="notice">
                <div>{text}</div>
                <button class="btn ghost" on:click=move |_| c.notice.set(None)>"Dismiss"</button>
            </div>
        })}
    }
}

/// Poison messages the nodes set aside, counted in the header (hidden while there are none); the tooltip says
/// which dead-letter queue holds them, and the cross drops them all.
#[component]
fn DeadLettersPill() -> impl IntoView {
    let c = console();
    let purge = move |_| {
        leptos::task::spawn_local(async move {
            match api::post::<serde_json::Value>("/api/dead-letters/purge", &serde_json::json!({})).await {
                Ok(answer) => c.info(format!("{} dead letters dropped", answer["purged"])),
                Err(e) => c.error(format!("dropping the dead letters: {e}")),
            }
        });
    };
    let total = move || c.status.get().dead_letters.values().map(|&n| u64::from(n)).sum::<u64>();
    let detail = move || {
        let counts = c.status.get().dead_letters;
        let held: Vec<String> = counts.iter().filter(|(_, &n)| n > 0).map(|(node, n)| format!("{node}: {n}")).collect();
        format!("poison messages set aside (undecodable, wrong rows, unknown senders): {}", held.join(", "))
    };
    view! {
        <Show when=move || { total() > 0 }>
            <span class="pill warn" data-testid="dead-letters" data-total=total title=detail>
                {move || format!("{} dead letters", total())}
                <button class="pill-action" data-testid="purge-dead-letters" title="drop them all" on:click=purge>"×"</button>
            </span>
        </Show>
    }
}
