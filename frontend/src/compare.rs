//! Comparing two finished sessions side by side: per query, equal or not, with the rows missing from or extra
//! in the right one.

use crate::api::{self, CompareResponse, QueryComparison, SessionState};
use crate::console;
use leptos::prelude::*;
use leptos::task::spawn_local;

#[component]
pub fn ComparePanel() -> impl IntoView {
    let c = console();
    let left = RwSignal::new(String::new());
    let right = RwSignal::new(String::new());
    let result = RwSignal::new(None::<CompareResponse>);
    let done = move || c.sessions.get().into_iter().filter(|s| s.state == SessionState::Done).collect::<Vec<_>>();
    // Preselect the two latest finished sessions, so comparing a launch of two is one click.
    Effect::new(move |_| {
        let finished = done();
        let ids: Vec<String> = finished.iter().map(|s| s.id.to_string()).collect();
        if finished.len() >= 2 && (!ids.contains(&left.get_untracked()) || !ids.contains(&right.get_untracked())) {
            left.set(ids[ids.len() - 2].clone());
            right.set(ids[ids.len() - 1].clone());
        }
    });
    let compare = move |_| {
        let (l, r) = (left.get_untracked(), right.get_untracked());
        if l.is_empty() || r.is_empty() {
            c.error("choose two finished sessions to compare");
            return;
        }
        spawn_local(async move {
            match api::get::<CompareResponse>(&format!("/api/compare?left={l}&right={r}")).await {
                Ok(response) => result.set(Some(response)),
                Err(e) => c.error(format!("compare: {e}")),
            }
        });
    };
    let picker = move |which: RwSignal<String>, id: &'static str| {
        view! {
            <select id=id class="select" on:change=move |ev| which.set(event_target_value(&ev)) prop:value=move || which.get()>
                <option value="">"— session —"</option>
                {move || done().into_iter().map(|s| view! {
                    <option value=s.id.to_string() selected=which.get_untracked() == s.id.to_string()>
                        {format!("{} · {}", s.short_id(), s.dataset_label())}
                    </option>
                }).collect_view()}
            </select>
        }
    };
    view! {
        <div class="panel" id="compare-panel">
            <div class="panel-head"><h2>"Compare sessions"</h2></div>
            <div class="row gap center">
                {picker(left, "compare-left")}
                <span class="muted">"vs"</span>
                {picker(right, "compare-right")}
                <button class="btn primary" id="compare-btn" data-testid="compare" on:click=compare>"Compare"</button>
            </div>
            {move || result.get().map(|r| view! {
                <div class="compare-result" data-testid="compare-result" data-equal=r.comparison.equal.to_string()>
                    <p class=if r.comparison.equal { "verdict ok" } else { "verdict bad" }>
                        {if r.comparison.equal { "Equal: every query holds the same rows." } else { "Different results." }}
                    </p>
                    <table class="table">
                        <thead><tr>
                            <th>"Query"</th>
                            <th class="num">{format!("{} rows", r.left.to_string().chars().take(8).collect::<String>())}</th>
                            <th class="num">{format!("{} rows", r.right.to_string().chars().take(8).collect::<String>())}</th>
                            <th>"Verdict"</th>
                            <th>"Missing from right"</th>
                            <th>"Extra in right"</th>
                        </tr></thead>
                        <tbody>
                            {r.comparison.queries.into_iter().map(|q| view! { <CompareRow q=q/> }).collect_view()}
                        </tbody>
                    </table>
                </div>
            })}
        </div>
    }
}

#[component]
fn CompareRow(q: QueryComparison) -> impl IntoView {
    let list = |lines: Vec<String>, total: usize| {
        if total == 0 {
            return view! { <span class="muted">"—"</span> }.into_any();
        }
        view! {
            <details>
                <summary>{format!("{total} rows")}</summary>
                <pre class="lines">{lines.join("\n")}</pre>
            </details>
        }
        .into_any()
    };
    view! {
        <tr data-testid="compare-row" data-query=q.name.clone() data-equal=q.equal.to_string()>
            <td><b>{q.name.clone()}</b></td>
            <td class="num">{q.left}</td>
            <td class="num">{q.right}</td>
            <td><span class=if q.equal { "badge done" } else { "badge failed" }>{if q.equal { "equal" } else { "differs" }}</span></td>
            <td>{list(q.missing_from_right, q.missing_from_right_total)}</td>
            <td>{list(q.extra_in_right, q.extra_in_right_total)}</td>
        </tr>
    }
}
