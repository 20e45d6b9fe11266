//! The sessions table: state, progress (rows sent, queries finished), result counts per query, and links to
//! the results and the NDJSON download.

use crate::api::{self, thousands, ResultKind, SessionState, SessionView};
use crate::console;
use leptos::prelude::*;

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
                            {ResultKind::ALL.map(|k| view! { <th class="num">{k.name()}</th> }).collect_view()}
                            <th class="num">"Time"</th>
                            <th>"Reference"</th>
                            <th></th>
                        </tr>
                    </thead>
                    <tbody>
                        <For each=move || c.sessions.get() key=|s| (s.id, s.state, s.rows_sent, s.results.clone(), s.queries_done.len(), s.elapsed_ms, s.matches_reference, s.faults) let:s>
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
    let faults = match session.faults {
        0 => String::new(),
        1 => "1 fault".to_owned(),
        n => format!("{n} faults"),
    };
    // Checked against the reference once done (kept in the run history with the verdict).
    let (verdict, matches) = match (session.state, session.matches_reference) {
        (_, Some(true)) => ("✓ equal", "true"),
        (_, Some(false)) => ("✗ differs", "false"),
        (SessionState::Done, None) if session.checked => ("not checked", "none"),
        (SessionState::Done, None) => ("checking…", ""),
        _ => ("", ""),
    };
    view! {
        <tr
            class=move || if is_selected() { "selected" } else { "" }
            data-testid="session-row" data-session=id.clone() data-state=session.state.as_str() data-results=total
        >
            <td><code title=id.clone()>{session.short_id()}</code></td>
            <td title=session.dataset.clone()>{session.dataset_label().to_owned()}</td>
            <td>
                <span class=format!("badge {}", session.state) title=session.error.clone().unwrap_or_default()>
                    {session.state.as_str()}
                </span>
            </td>
            <td class="progress-col">
                <div class="bar" title=sent.clone()><div class="fill sent" style:width=format!("{:.1}%", session.sent_pct())></div></div>
                <div class="bar" title=queries.clone()><div class="fill done" style:width=format!("{:.1}%", session.done_pct())></div></div>
                <div class="muted tiny">{format!("{sent} · {queries}")}</div>
                <RateChart session=session.id/>
            </td>
            {ResultKind::ALL.map(|k| {
                let n = session.results.get(&k).copied().unwrap_or(0);
                let done = session.queries_done.iter().any(|q| k.name().starts_with(q.as_str()));
                view! { <td class=if done { "num strong" } else { "num" } data-kind=k.name()>{thousands(n)}</td> }
            }).collect_view()}
            <td class="num" title=format!("{} rows/s over the session", thousands(session.rows_per_second() as u64))>
                {format!("{:.1} s", session.elapsed_ms as f64 / 1000.0)}
                <div class="muted tiny">{faults}</div>
            </td>
            <td data-testid="reference" data-matches=matches>{verdict}</td>
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

/// A session's rows sent per second over time, as a small line (only for sessions seen running from this page).
#[component]
fn RateChart(session: crate::api::Uuid) -> impl IntoView {
    let c = console();
    let (width, height) = (160.0, 22.0);
    let points = move || {
        let samples = c.progress.with(|all| all.get(&session).cloned().unwrap_or_default());
        // Rates over windows of at least half a second, so bursts of progress do not draw spikes of noise.
        let mut rates: Vec<(f64, f64)> = Vec::new();
        let mut from = samples.first().copied();
        for &(at, rows) in samples.iter().skip(1) {
            let Some((t0, r0)) = from else { break };
            if at - t0 >= 500.0 {
                rates.push((at, (rows.saturating_sub(r0)) as f64 * 1000.0 / (at - t0)));
                from = Some((at, rows));
            }
        }
        if rates.len() < 2 {
            return None;
        }
        let (start, end) = (rates[0].0, rates[rates.len() - 1].0);
        let top = rates.iter().map(|r| r.1).fold(1.0, f64::max);
        let line: Vec<String> = rates
            .iter()
            .map(|(at, rate)| {
                let x = (at - start) / (end - start).max(1.0) * width;
                format!("{x:.1},{:.1}", height - rate / top * (height - 2.0) - 1.0)
            })
            .collect();
        Some((line.join(" "), top))
    };
    view! {
        {move || points().map(|(line, top)| view! {
            <svg class="rate-chart" data-testid="rate-chart" viewBox=format!("0 0 {width} {height}") width=width height=height>
                <title>{format!("rows sent per second; peak {}", thousands(top as u64))}</title>
                <polyline points=line class="rate-line"/>
            </svg>
        })}
    }
}
