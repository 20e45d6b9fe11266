//! Every node (role, replica, up or down, pid, restarts, heartbeat age) with a kill button, and the topology
//! as a graph whose replica dots show which nodes are up (the health monitors in a box of their own).

use crate::api::{self, NodeView, TopologyView};
use crate::console;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[component]
pub fn NodesPanel() -> impl IntoView {
    let c = console();
    let up = move || c.nodes.get().iter().filter(|n| n.up).count();
    view! {
        <div class="panel" id="nodes-panel">
            <div class="panel-head">
                <h2>"Nodes"</h2>
                <span class="muted small">{move || format!("{} of {} up", up(), c.nodes.get().len())}</span>
            </div>
            {move || c.topology.get().map(|t| view! { <TopologyGraph topology=t nodes=c.nodes.get()/> })}
            <table class="table compact" id="nodes-table">
                <thead><tr>
                    <th>"Node"</th><th>"Role"</th><th class="num">"Replica"</th><th>"Status"</th>
                    <th class="num">"PID"</th><th class="num">"Restarts"</th><th class="num">"Heartbeat"</th><th></th>
                </tr></thead>
                <tbody>
                    <For each=move || c.nodes.get() key=|n| (n.name.clone(), n.pid, n.restarts, n.heartbeat_age_ms.map(|a| a / 500)) let:n>
                        <NodeRow node=n/>
                    </For>
                </tbody>
            </table>
        </div>
    }
}

#[component]
fn NodeRow(node: NodeView) -> impl IntoView {
    let c = console();
    // `kill` or `restart` this node.
    let act = |action: &'static str| {
        let name = node.name.clone();
        move |_| {
            let name = name.clone();
            spawn_local(async move {
                if let Err(e) = api::post::<Value>(&format!("/api/nodes/{name}/{action}"), &json!({})).await {
                    c.error(format!("{action} {name}: {e}"));
                }
            });
        }
    };
    let heartbeat = node.heartbeat_age_ms.map_or_else(|| "—".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
    view! {
        <tr data-testid="node-row" data-node=node.name.clone() data-up=node.up.to_string() data-restarts=node.restarts>
            <td><code>{node.name.clone()}</code></td>
            <td>{node.role.clone()}</td>
            <td class="num">{node.replica}</td>
            <td title=node.detail.clone()>
                <span class=if node.up { "dot up" } else { "dot down" }></span>{if node.up { "up" } else { "down" }}
            </td>
            <td class="num">{node.pid.map_or_else(|| "—".to_owned(), |p| p.to_string())}</td>
            <td class={if node.restarts > 0 { "num warn-text" } else { "num" }}>{node.restarts}</td>
            <td class="num">{heartbeat}</td>
            <td class="actions">
                <button class="btn small" data-testid=format!("restart-{}", node.name) on:click=act("restart")>"Restart"</button>
                <button class="btn small danger" data-testid=format!("kill-{}", node.name) on:click=act("kill")>"Kill"</button>
            </td>
        </tr>
    }
}

/// Where each stage sits in the graph: left to right in the order data flows.
fn position(name: &str) -> (f64, f64) {
    match name {
        "gateway" => (70.0, 125.0),
        "tx_filter" => (270.0, 70.0),
        "item_filter" => (270.0, 200.0),
        "q3_agg" => (490.0, 40.0),
        "q4_count" => (490.0, 125.0),
        "q2_agg" => (490.0, 210.0),
        "q4_top" => (700.0, 125.0),
        "monitors" => (900.0, 210.0), // outside the data flow: they watch every node's heartbeat
        _ => (900.0, 125.0),          // the gateway again, receiving results
    }
}

#[component]
fn TopologyGraph(topology: TopologyView, nodes: Vec<NodeView>) -> impl IntoView {
    let up: BTreeMap<String, bool> = nodes.iter().map(|n| (n.name.clone(), n.up)).collect();
    // One line per (from, to); streams from the gateway to aggregators are the broadcast joins: dashed.
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for e in &topology.edges {
        let to = if e.to == "gateway" { "results".to_owned() } else { e.to.clone() };
        edges.entry((e.from.clone(), to)).or_default().push(e.stream.clone());
    }
    let (bw, bh) = (120.0, 46.0);
    let gateway_up = up.get("gateway").copied().unwrap_or(false);
    let monitors: Vec<bool> = nodes.iter().filter(|n| n.role == "monitor").map(|n| n.up).collect();
    let boxes: Vec<(String, String, Vec<bool>)> =
        std::iter::once(("gateway".to_owned(), "gateway".to_owned(), vec![gateway_up]))
            .chain(topology.stages.iter().map(|s| {
                let dots =
                    (0..s.replicas).map(|r| up.get(&format!("{}-{r}", s.name)).copied().unwrap_or(false)).collect();
                (s.name.clone(), s.name.clone(), dots)
            }))
            .chain(std::iter::once(("results".to_owned(), "gateway · results".to_owned(), vec![gateway_up])))
            .chain(
                Some(("monitors".to_owned(), "health monitors".to_owned(), monitors)).filter(|(_, _, m)| !m.is_empty()),
            )
            .collect();
    view! {
        <svg viewBox="0 0 980 250" class="topology" data-testid="topology">
            <defs>
                <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
                    <path d="M 0 0 L 10 5 L 0 10 z" class="arrow-head"/>
                </marker>
            </defs>
            {edges.into_iter().map(|((from, to), streams)| {
                let (x1, y1) = position(&from);
                let (x2, y2) = position(&to);
                let broadcast = from == "gateway" && !matches!(to.as_str(), "tx_filter" | "item_filter");
                view! {
                    <line
                        x1=x1 + bw / 2.0 y1=y1 x2=x2 - bw / 2.0 - 2.0 y2=y2
                        class=if broadcast { "edge broadcast" } else { "edge" } marker-end="url(#arrow)"
                    >
                        <title>{format!("{from} → {to}: {}", streams.join(", "))}</title>
                    </line>
                }
            }).collect_view()}
            {boxes.into_iter().map(|(key, label, dots)| {
                let (x, y) = position(&key);
                let all_up = dots.iter().all(|d| *d);
                let n = dots.len() as f64;
                view! {
                    <g class=if all_up { "stage" } else { "stage degraded" }>
                        <rect x=x - bw / 2.0 y=y - bh / 2.0 width=bw height=bh rx="8"/>
                        <text x=x y=y - 4.0 text-anchor="middle" class="stage-name">{label}</text>
                        {dots.into_iter().enumerate().map(|(i, d)| view! {
                            <circle cx=x + (i as f64 - (n - 1.0) / 2.0) * 14.0 cy=y + 12.0 r="5" class=if d { "replica up" } else { "replica down" }/>
                        }).collect_view()}
                    </g>
                }
            }).collect_view()}
        </svg>
    }
}
