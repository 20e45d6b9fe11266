//! Every node (role, replica, up or down, pid, restarts, heartbeat age) with restart, pause and kill buttons, and the topology
//! as a graph whose replica dots show which nodes are up (the health monitors in a box of their own). The graph
//! shows the flow too: under each stage, the messages waiting in its input queues and its rows per second; each
//! edge coloured by the backlog of the stage it feeds; a bar in each stage for how busy its busiest replica is.

use crate::api::{self, human_bytes, thousands, FlowView, NodeView, SessionState, TopologyView};
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
            <Rescale/>
            {move || c.topology.get().map(|t| view! { <TopologyGraph topology=t nodes=c.nodes.get() flow=c.flow.get()/> })}
            <table class="table compact" id="nodes-table">
                <thead><tr>
                    <th>"Node"</th><th>"Role"</th><th class="num">"Replica"</th><th>"Status"</th>
                    <th class="num">"PID"</th><th class="num">"Restarts"</th><th class="num">"Heartbeat"</th>
                    <th class="num">"Sessions"</th><th>"State on disk"</th><th>"Last recovery"</th><th></th>
                </tr></thead>
                <tbody>
                    <For each=move || c.nodes.get() key=|n| (n.name.clone(), n.pid, n.restarts, n.heartbeat_age_ms.map(|a| a / 500), n.open_sessions, n.state) let:n>
                        <NodeRow node=n/>
                    </For>
                </tbody>
            </table>
        </div>
    }
}

/// The most replicas of a stage the page offers (the console refuses more: each replica is a process here).
const MAX_REPLICAS: u16 = 8;

/// Changes the replicas of each stage between runs: the console's own cluster restarts in the new shape and the
/// graph redraws. Not while a session runs or the chaos monkey does, nor for a compose project's containers.
#[component]
fn Rescale() -> impl IntoView {
    let c = console();
    let open = RwSignal::new(false);
    let applying = RwSignal::new(false);
    // The replicas asked for, per stage; filled from the topology when the form opens.
    let wanted = RwSignal::new(BTreeMap::<String, u16>::new());
    let blocked = move || -> Option<String> {
        let status = c.status.get();
        let running = c.sessions.get().iter().filter(|s| s.state == SessionState::Running).count();
        if !status.rescalable {
            Some(format!("the nodes belong to {}: rescale with coffee compose --replicas", status.orchestrator))
        } else if running > 0 {
            Some(format!("{running} session(s) running: rescale between runs"))
        } else if c.chaos.get().running {
            Some("stop the chaos monkey first".to_owned())
        } else {
            None
        }
    };
    let toggle = move |_| {
        if !open.get_untracked() {
            let current = c.topology.get_untracked().map(|t| t.stages).unwrap_or_default();
            wanted.set(current.into_iter().map(|s| (s.name, s.replicas)).collect());
        }
        open.update(|o| *o = !*o);
    };
    let apply = move |_| {
        let replicas = wanted.get_untracked().iter().map(|(s, n)| format!("{s}={n}")).collect::<Vec<_>>().join(",");
        applying.set(true);
        spawn_local(async move {
            match api::post::<TopologyView>("/api/topology", &json!({ "replicas": replicas })).await {
                Ok(topology) => {
                    c.topology.set(Some(topology));
                    open.set(false);
                    c.info(format!("the cluster restarted with {replicas}"));
                }
                Err(e) => c.error(format!("rescale: {e}")),
            }
            applying.set(false);
        });
    };
    let stage_input = move |(stage, replicas): (String, u16)| {
        let name = stage.clone();
        view! {
            <label class="rescale-stage">
                <span class="label">{stage.clone()}</span>
                <input
                    type="number" class="num" min="1" max=MAX_REPLICAS.to_string() data-testid=format!("replicas-{stage}")
                    prop:value=replicas.to_string()
                    on:input=move |ev| {
                        let n = event_target_value(&ev).parse::<u16>().unwrap_or(1).clamp(1, MAX_REPLICAS);
                        wanted.update(|w| { w.insert(name.clone(), n); });
                    }
                />
            </label>
        }
    };
    view! {
        <div class="rescale">
            <button
                class="btn small" data-testid="rescale-toggle" on:click=toggle
                disabled=move || blocked().is_some() && !open.get() title=move || blocked().unwrap_or_default()
            >
                {move || if open.get() { "Cancel" } else { "Rescale…" }}
            </button>
            <Show when=move || open.get()>
                <div class="rescale-form row gap center" data-testid="rescale-form">
                    {move || wanted.get_untracked().into_iter().map(stage_input).collect_view()}
                    <button
                        class="btn" data-testid="rescale-apply" on:click=apply
                        disabled=move || applying.get() || blocked().is_some()
                    >
                        {move || if applying.get() { "Restarting the cluster…" } else { "Apply and restart" }}
                    </button>
                    <span class="muted small">
                        {move || blocked().unwrap_or_else(|| "the nodes stop, and start again in the new shape".to_owned())}
                    </span>
                </div>
            </Show>
        </div>
    }
}

#[component]
fn NodeRow(node: NodeView) -> impl IntoView {
    let c = console();
    // `kill`, `pause` (5 s) or `restart` this node.
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
    let seconds = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    let on_disk = node.state.map_or_else(String::new, |s| match s.last_snapshot_age_ms {
        None if s.log_bytes == 0 => "empty".to_owned(),
        None => format!("{} log", human_bytes(s.log_bytes)),
        Some(ms) => {
            format!("{} log · {} snap, {} ago", human_bytes(s.log_bytes), human_bytes(s.snapshot_bytes), seconds(ms))
        }
    });
    // A replica holding its group until its disk has room again (its beats say so).
    let disk_full = node.state.is_some_and(|s| s.disk_full);
    let on_disk = if disk_full { format!("disk full: holding · {on_disk}") } else { on_disk };
    let disk_free = node.state.and_then(|s| s.disk_free_bytes);
    let disk_title = disk_free.map_or_else(String::new, |b| format!("{} free on its disk", human_bytes(b)));
    // Ready 0: the process is still recovering.
    let ready = node.state.filter(|s| s.ready_ms > 0);
    let recovery = ready.map_or_else(String::new, |s| {
        format!("ready in {} · {} replayed", seconds(s.ready_ms), thousands(s.replayed_records))
    });
    let recovery_detail = ready.map_or_else(String::new, |s| {
        format!(
            "its process read {} sessions back ({} log records) in {} ms, and consumed input {} after it started",
            s.recovered_sessions,
            thousands(s.replayed_records),
            s.recovery_ms,
            seconds(s.ready_ms)
        )
    });
    view! {
        <tr data-testid="node-row" data-node=node.name.clone() data-up=node.up.to_string() data-restarts=node.restarts>
            <td><code>{node.name.clone()}</code></td>
            <td>{node.role.clone()}</td>
            <td class="num">{node.replica}</td>
            <td title=node.refused.clone().unwrap_or_else(|| node.detail.clone()) data-testid="node-up"
                class:warn-text=node.refused.is_some()>
                <span class=if node.up { "dot up" } else { "dot down" }></span>
                {if node.up { "up" } else if node.refused.is_some() { "refused" } else { "down" }}
            </td>
            <td class="num">{node.pid.map_or_else(|| "—".to_owned(), |p| p.to_string())}</td>
            <td class={if node.restarts > 0 { "num warn-text" } else { "num" }}>{node.restarts}</td>
            <td class="num">{heartbeat}</td>
            <td class="num">{node.open_sessions.map_or_else(|| "—".to_owned(), |n| n.to_string())}</td>
            <td class=if disk_full { "tiny warn-text" } else { "muted tiny" } data-testid="state-on-disk"
                data-disk-full=disk_full.to_string() title=disk_title>{on_disk}</td>
            <td class="muted tiny" data-testid="last-recovery" title=recovery_detail>{recovery}</td>
            <td class="actions">
                <button class="btn small" data-testid=format!("restart-{}", node.name) on:click=act("restart")>"Restart"</button>
                <button class="btn small" title="SIGSTOP for 5 s, then SIGCONT" data-testid=format!("pause-{}", node.name) on:click=act("pause")>"Pause"</button>
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
fn TopologyGraph(topology: TopologyView, nodes: Vec<NodeView>, flow: FlowView) -> impl IntoView {
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
                let queued = flow.stages.get(&to).map_or(0, |f| f.queued);
                let class = format!("edge{}{}", if broadcast { " broadcast" } else { "" }, backlog_class(queued));
                view! {
                    <line x1=x1 + bw / 2.0 y1=y1 x2=x2 - bw / 2.0 - 2.0 y2=y2 class=class marker-end="url(#arrow)">
                        <title>{format!("{from} → {to}: {} ({queued} queued at {to})", streams.join(", "))}</title>
                    </line>
                }
            }).collect_view()}
            {boxes.into_iter().map(|(key, label, dots)| {
                let (x, y) = position(&key);
                let all_up = dots.iter().all(|d| *d);
                let n = dots.len() as f64;
                let stage = flow.stages.get(&key).cloned().filter(|_| key != "results" && key != "monitors");
                let queued = stage.as_ref().map_or(0, |f| f.queued);
                let busy = stage.as_ref().map_or(0.0, |f| f.busy);
                let figures = stage.as_ref().map(|f| {
                    let rate = if key == "gateway" { f.rows_out_per_s } else { f.rows_in_per_s };
                    let rate = format!("{} rows/s", thousands(rate.round() as u64));
                    if key == "gateway" { rate } else { format!("{} queued · {rate}", thousands(f.queued)) }
                });
                view! {
                    <g
                        class=if all_up { "stage" } else { "stage degraded" }
                        data-testid="graph-stage" data-stage=key.clone() data-queued=queued data-busy=format!("{busy:.2}")
                    >
                        <rect x=x - bw / 2.0 y=y - bh / 2.0 width=bw height=bh rx="8"/>
                        <rect
                            x=x - bw / 2.0 + 6.0 y=y + bh / 2.0 - 5.0 width=(bw - 12.0) * busy height="2.5" class="busy"
                        >
                            <title>{format!("busiest replica {:.0}% busy", busy * 100.0)}</title>
                        </rect>
                        {figures.map(|text| view! {
                            <text x=x y=y + bh / 2.0 + 13.0 text-anchor="middle" class=format!("flow-figures{}", backlog_class(queued))>{text}</text>
                        })}
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

/// How an edge or a stage's figures show the backlog of the queues they feed: none, some, a lot.
fn backlog_class(queued: u64) -> &'static str {
    match queued {
        0 => "",
        1..=99 => " backlog-low",
        100..=999 => " backlog-mid",
        _ => " backlog-high",
    }
}
