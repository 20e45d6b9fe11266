//! One session's results: a table per query and SVG bar charts for Q2 (per month) and Q3 (TPV per store and
//! semester). Lines stream in from the event stream while the session runs.

use crate::api::ResultKind;
use crate::console;
use leptos::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// Rows a table shows (the download has them all).
const TABLE_ROWS: usize = 200;

fn parse(lines: &[String]) -> Vec<Value> {
    lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Columns holding money, shown with two decimals (JSON parsing dropped the trailing zeros).
const MONEY: [&str; 3] = ["final_amount", "profit_sum", "tpv"];

/// A cell's text: money with two decimals, strings as they are.
fn column_cell(row: &Value, column: &str) -> String {
    match &row[column] {
        Value::Number(n) if MONEY.contains(&column) => format!("{:.2}", n.as_f64().unwrap_or(0.0)),
        other => cell(other),
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(0.0)
}

#[component]
pub fn ResultsPanel() -> impl IntoView {
    let c = console();
    let tab = RwSignal::new("Q2");
    let tabs = [
        ("Q1", "Q1 · transactions ≥ 75"),
        ("Q2", "Q2 · best items per month"),
        ("Q3", "Q3 · TPV per store"),
        ("Q4", "Q4 · top customers"),
    ];
    view! {
        <div class="panel" id="results-panel">
            <div class="panel-head">
                <h2>"Results"</h2>
                <span class="muted small" data-testid="results-session">
                    {move || c.selected.get().map_or_else(|| "select a session".to_owned(), |id| format!("session {id}"))}
                </span>
            </div>
            <SkippedRows/>
            <div class="tabs">
                {tabs.into_iter().map(|(id, label)| view! {
                    <button
                        class=move || if tab.get() == id { "tab active" } else { "tab" }
                        data-testid=format!("tab-{id}")
                        on:click=move |_| tab.set(id)
                    >
                        {label}
                    </button>
                }).collect_view()}
            </div>
            {move || {
                if c.selected.get().is_none() {
                    return view! { <p class="empty">"Launch a session or click “Results” on one."</p> }.into_any();
                }
                let lines = c.lines.get();
                let get = |k: ResultKind| parse(lines.get(&k).map(Vec::as_slice).unwrap_or_default());
                match tab.get() {
                    "Q1" => view! { <ResultTable kind=ResultKind::Q1 rows=get(ResultKind::Q1)/> }.into_any(),
                    "Q2" => {
                        let (qty, profit) = (get(ResultKind::Q2Qty), get(ResultKind::Q2Profit));
                        view! {
                            <div class="charts">
                                <BarChart title="Best-selling item per month (quantity)" bars=month_bars(&qty, "sellings_qty") money=false/>
                                <BarChart title="Most profitable item per month" bars=month_bars(&profit, "profit_sum") money=true/>
                            </div>
                            <div class="two">
                                <ResultTable kind=ResultKind::Q2Qty rows=qty/>
                                <ResultTable kind=ResultKind::Q2Profit rows=profit/>
                            </div>
                        }.into_any()
                    }
                    "Q3" => {
                        let rows = get(ResultKind::Q3);
                        view! { <TpvChart rows=rows.clone()/> <ResultTable kind=ResultKind::Q3 rows=rows/> }.into_any()
                    }
                    _ => view! { <ResultTable kind=ResultKind::Q4 rows=get(ResultKind::Q4)/> }.into_any(),
                }
            }}
        </div>
    }
}

#[component]
fn ResultTable(kind: ResultKind, rows: Vec<Value>) -> impl IntoView {
    let cols = kind.columns();
    let mut rows = rows;
    // Arrival order depends on the partitioning: sort by the columns for a stable table.
    rows.sort_by_key(|r| cols.iter().map(|c| cell(&r[*c])).collect::<Vec<_>>());
    let total = rows.len();
    view! {
        <div class="result-table" data-testid=format!("table-{kind}") data-rows=total>
            <div class="muted small">{format!("{kind}: {total} rows{}", if total > TABLE_ROWS { format!(" (first {TABLE_ROWS} shown)") } else { String::new() })}</div>
            <div class="scroll">
                <table class="table compact">
                    <thead><tr>{cols.iter().map(|c| view! { <th class=if MONEY.contains(c) { "num" } else { "" }>{*c}</th> }).collect_view()}</tr></thead>
                    <tbody>
                        {rows.into_iter().take(TABLE_ROWS).map(|r| view! {
                            <tr>{cols.iter().map(|c| {
                                let class = if MONEY.contains(c) { "num" } else { "" };
                                view! { <td class=class>{column_cell(&r, c)}</td> }
                            }).collect_view()}</tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </div>
    }
}

/// One bar: its label under the axis, its value, and a note above it (the item's name).
#[derive(Clone)]
struct Bar {
    label: String,
    value: f64,
    note: String,
}

/// Q2 rows as one bar per month (ties: the first item, with `+N` in the note).
fn month_bars(rows: &[Value], field: &str) -> Vec<Bar> {
    let mut months: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for row in rows {
        months.entry(cell(&row["year_month_created_at"])).or_default().push(row);
    }
    months
        .into_iter()
        .map(|(month, rows)| {
            let ties = if rows.len() > 1 { format!(" +{}", rows.len() - 1) } else { String::new() };
            Bar { label: month, value: number(&rows[0][field]), note: format!("{}{ties}", cell(&rows[0]["item_name"])) }
        })
        .collect()
}

fn short_number(value: f64, money: bool) -> String {
    let prefix = if money { "$" } else { "" };
    match value.abs() {
        v if v >= 1e6 => format!("{prefix}{:.1}M", value / 1e6),
        v if v >= 1e3 => format!("{prefix}{:.1}k", value / 1e3),
        _ => format!("{prefix}{value:.0}"),
    }
}

#[component]
fn BarChart(title: &'static str, bars: Vec<Bar>, money: bool) -> impl IntoView {
    let (w, h, top, bottom) = (560.0, 220.0, 34.0, 40.0);
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max).max(1.0);
    let slot = if bars.is_empty() { w } else { w / bars.len() as f64 };
    let bar_w = (slot * 0.62).min(48.0);
    let plot = h - top - bottom;
    view! {
        <figure class="chart" data-testid="chart">
            <figcaption>{title}</figcaption>
            {if bars.is_empty() {
                view! { <p class="empty small">"No rows yet."</p> }.into_any()
            } else {
                view! {
                    <svg viewBox=format!("0 0 {w} {h}") class="svg-chart" role="img">
                        <line x1="0" x2=w y1=h - bottom y2=h - bottom class="axis"/>
                        {bars.into_iter().enumerate().map(|(i, b)| {
                            let x = slot * i as f64 + (slot - bar_w) / 2.0;
                            let bh = (b.value / max * plot).max(1.0);
                            let y = h - bottom - bh;
                            let cx = x + bar_w / 2.0;
                            view! {
                                <g>
                                    <title>{format!("{}: {} — {}", b.label, b.value, b.note)}</title>
                                    <rect x=x y=y width=bar_w height=bh rx="3" class="bar-fill"/>
                                    <text x=cx y=y - 14.0 class="bar-value" text-anchor="middle">{short_number(b.value, money)}</text>
                                    <text x=cx y=y - 3.0 class="bar-note" text-anchor="middle">{truncate(&b.note, 14)}</text>
                                    <text x=cx y=h - bottom + 16.0 class="bar-label" text-anchor="middle">{b.label.clone()}</text>
                                </g>
                            }
                        }).collect_view()}
                    </svg>
                }.into_any()
            }}
        </figure>
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Q3 as grouped bars: one group per store, one bar per semester.
#[component]
fn TpvChart(rows: Vec<Value>) -> impl IntoView {
    let mut halves: Vec<String> = rows.iter().map(|r| cell(&r["year_half_created_at"])).collect();
    halves.sort();
    halves.dedup();
    let mut stores: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for r in &rows {
        stores.entry(cell(&r["store_name"])).or_default().insert(cell(&r["year_half_created_at"]), number(&r["tpv"]));
    }
    let (w, h, top, bottom) = (1100.0, 260.0, 16.0, 46.0);
    let max = rows.iter().map(|r| number(&r["tpv"])).fold(0.0, f64::max).max(1.0);
    let group = if stores.is_empty() { w } else { w / stores.len() as f64 };
    let bar_w = ((group * 0.8) / halves.len().max(1) as f64).min(22.0);
    let plot = h - top - bottom;
    let color = |i: usize| format!("series s{}", i % 6);
    view! {
        <figure class="chart wide" data-testid="chart-q3">
            <figcaption>"TPV per store and semester"</figcaption>
            <div class="legend">
                {halves.iter().enumerate().map(|(i, half)| view! {
                    <span class="legend-item"><span class=format!("swatch {}", color(i))></span>{half.clone()}</span>
                }).collect_view()}
            </div>
            {if rows.is_empty() {
                view! { <p class="empty small">"No rows yet."</p> }.into_any()
            } else {
                view! {
                    <svg viewBox=format!("0 0 {w} {h}") class="svg-chart" role="img">
                        <line x1="0" x2=w y1=h - bottom y2=h - bottom class="axis"/>
                        {stores.into_iter().enumerate().map(|(gi, (store, tpv))| {
                            let start = group * gi as f64 + (group - bar_w * halves.len() as f64) / 2.0;
                            let cx = group * gi as f64 + group / 2.0;
                            view! {
                                <g>
                                    {halves.iter().enumerate().map(|(hi, half)| {
                                        let value = tpv.get(half).copied().unwrap_or(0.0);
                                        let bh = (value / max * plot).max(if value > 0.0 { 1.0 } else { 0.0 });
                                        view! {
                                            <rect x=start + bar_w * hi as f64 y=h - bottom - bh width=bar_w - 2.0 height=bh rx="2" class=color(hi)>
                                                <title>{format!("{store} {half}: ${value:.2}")}</title>
                                            </rect>
                                        }
                                    }).collect_view()}
                                    <text x=cx y=h - bottom + 16.0 class="bar-label" text-anchor="middle">{truncate(store.trim_start_matches("G Coffee @ "), 16)}</text>
                                </g>
                            }
                        }).collect_view()}
                    </svg>
                }.into_any()
            }}
        </figure>
    }
}

/// What the selected session's client did not send: per file, the malformed rows it skipped (with a few
/// examples) or why it refused the whole file. Nothing when every row went through.
#[component]
fn SkippedRows() -> impl IntoView {
    let c = console();
    let files = move || {
        let id = c.selected.get()?;
        let session = c.sessions.with(|all| all.iter().find(|s| s.id.to_string() == id).cloned())?;
        (!session.files_with_issues.is_empty()).then_some(session)
    };
    view! {
        {move || files().map(|session| view! {
            <div class="skipped" data-testid="skipped-rows">
                <p class="warn-text">
                    {format!("{} malformed rows skipped by the client", session.malformed)}
                </p>
                <ul>
                    {session.files_with_issues.into_iter().map(|f| {
                        let what = match &f.refused {
                            Some(why) => format!("refused: {why}"),
                            None => format!("{} malformed, {} rows sent", f.malformed, f.rows_sent),
                        };
                        view! {
                            <li data-testid="skipped-file" data-file=f.file.clone() data-malformed=f.malformed>
                                <b>{f.file.clone()}</b>" · "{what}
                                <ul class="samples">
                                    {f.samples.into_iter().map(|s| view! { <li><code class="tiny">{s}</code></li> }).collect_view()}
                                </ul>
                            </li>
                        }
                    }).collect_view()}
                </ul>
            </div>
        })}
    }
}
