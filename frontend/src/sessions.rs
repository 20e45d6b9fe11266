//! The sessions table: state, progress (rows sent, queries finished), result counts per query, and links to
//! the results and the NDJSON download.

use crate::api::{self, thousands, SessionState, SessionView};
use crate::console;
use leptos::prelude::*;

/// The result kinds, in the contract's order.
pub const KINDS: [&str; 5] = ["Q1", "Q2_QTY", "Q2_PROFIT", "Q3", "Q4"];

#[component]
pub fn SessionsPanel() -> impl IntoView {
    let c = console();
    let running = move || c.sessions.get().iter().filter(|s| s.state == SessionState::Running).count();
    view! {
        <div class="panel" id="sessions-panel">
            <div class="panel-head">
                <h2>"Sessions"</h2>
                <span class="muted small">
                    {move || format!("{} total · {} running", c.sessions.get().len(), running())}
                </span>
            </div>
            <Show
                when=move || !c.sessions.get().is_empty()
                fallback=|| view! { <p class="empty">"No sessions yet: choose a dataset and launch."</p> }
            >
                <table class="table" id="sessions-table">
                    <thead>
                        <tr>
                            <th>"Session"</th>
                            <th>"Dataset"</th>
                            <th>"State"</th>
                            <th class="progress-col">"Progress"</th>
                            {KINDS.iter().map(|k| view! { <th class="num">{*k}</th> }).collect_view()}
                            <th class="num">"Time"</th>
                            <th></th>
                        </tr>
                    </thead>
                    <tbody>
                        <For each=move || c.sessions.get() key=|s| (s.id, s.state, s.rows_sent, s.results.clone(), s.queries_done.len(), s.elapsed_ms) let:s>
                            <SessionRow session=s/>
                        </For>
                    </tbody>
                </table>
            </Show>
        </div>
    }
}

#[component]
fn SessionRow(session: SessionView) -> impl IntoView {
    let c = console();
    let id = session.id.to_string();
    let is_selected = {
        let id = id.clone();
        move || c.selected.get().as_deref() == Some(id.as_str())
    };
    let select = {
        let id = id.clone();
        move |_| c.select(id.clone())
    };
    let total: u64 = session.results.values().sum();
    let href = api::with_token(&format!("/api/sessions/{id}/ndjson"));
    let file_name = format!("client-{id}.ndjson");
    let sent = format!("{} / {} rows sent", thousands(session.rows_sent), thousands(session.rows_total));
    let queries = format!("{}/4 queries done", session.queries_done.len().min(4));
    view! {
        <tr
            class=move || if is_selected() { "selected" } else { "" }
            data-testid="session-row" data-session=id.clone() data-state=session.state.as_str() data-results=total
        >
            <td><code title=id.clone()>{session.short_id()}</code></td>
            <td>{session.dataset.clone()}</td>
            <td>
                <span class=format!("badge {}", session.state) title=session.error.clone().unwrap_or_default()>
                    {session.state.as_str()}
                </span>
            </td>
            <td class="progress-col">
                <div class="bar" title=sent.clone()><div class="fill sent" style:width=format!("{:.1}%", session.sent_pct())></div></div>
                <div class="bar" title=queries.clone()><div class="fill done" style:width=format!("{:.1}%", session.done_pct())></div></div>
                <div class="muted tiny">{format!("{sent} · {queries}")}</div>
            </td>
            {KINDS.iter().map(|k| {
                let n = session.results.get(*k).copied().unwrap_or(0);
                let done = session.queries_done.iter().any(|q| k.starts_with(q.as_str()));
                view! { <td class=if done { "num strong" } else { "num" } data-kind=*k>{thousands(n)}</td> }
            }).collect_view()}
            <td class="num">{format!("{:.1} s", session.elapsed_ms as f64 / 1000.0)}</td>
            <td class="actions">
                <button class="btn small" data-testid="view-results" on:click=select>"Results"</button>
                <Show when={let done = session.state == SessionState::Done; move || done}>
                    <a
                        class="btn small ghost" data-testid="download"
                        href=href.clone()
                        download=file_name.clone()
                    >
                        "NDJSON"
                    </a>
                </Show>
            </td>
        </tr>
    }
}
