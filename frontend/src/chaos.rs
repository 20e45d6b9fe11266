//! Chaos controls (kill a random node, the chaos monkey killing or pausing nodes) and the event log of kills,
//! pauses, restarts, sessions and errors.

use crate::api::{self, ChaosFaults, ChaosView};
use crate::console;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{json, Value};

#[component]
pub fn ChaosPanel() -> impl IntoView {
    let c = console();
    let seconds = RwSignal::new(5.0f64);
    let faults = RwSignal::new(ChaosFaults::Kill);
    let kill_random = move |_| {
        spawn_local(async move {
            if let Err(e) = api::post::<Value>("/api/nodes/kill-random", &json!({})).await {
                c.error(format!("kill random: {e}"));
            }
        });
    };
    let toggle = move |_| {
        let running = c.chaos.get_untracked().running;
        spawn_local(async move {
            let answer = if running {
                api::post::<ChaosView>("/api/chaos/stop", &json!({})).await
            } else {
                let interval_ms = (seconds.get_untracked() * 1000.0) as u64;
                let body = json!({ "interval_ms": interval_ms, "faults": faults.get_untracked() });
                api::post::<ChaosView>("/api/chaos/start", &body).await
            };
            match answer {
                Ok(chaos) => c.chaos.set(chaos),
                Err(e) => c.error(format!("chaos monkey: {e}")),
            }
        });
    };
    view! {
        <div class="panel" id="chaos-panel">
            <h2>"Chaos"</h2>
            <p class="muted small">
                "Kill or pause nodes while sessions run, the gateway and the monitors included: the health monitors notice the silence and restart them, a paused node replaced meanwhile steps aside when it wakes, and clients resume."
            </p>
            <div class="row gap">
                <button class="btn danger" id="kill-random" data-testid="kill-random" on:click=kill_random>"Kill a random node"</button>
            </div>
            <div class="row gap center spaced">
                <label class="label" for="chaos-interval">"Every"</label>
                <input
                    type="number" id="chaos-interval" class="num" min="0.5" step="0.5"
                    prop:value=move || seconds.get().to_string()
                    on:input=move |ev| seconds.set(event_target_value(&ev).parse().unwrap_or(5.0))
                />
                <span class="muted">"s"</span>
                <select
                    id="chaos-faults" data-testid="chaos-faults"
                    on:change=move |ev| faults.set(match event_target_value(&ev).as_str() {
                        "pause" => ChaosFaults::Pause,
                        "both" => ChaosFaults::Both,
                        _ => ChaosFaults::Kill,
                    })
                >
                    <option value="kill" selected=true>"kill"</option>
                    <option value="pause">"pause"</option>
                    <option value="both">"kill or pause"</option>
                </select>
                <button
                    class=move || if c.chaos.get().running { "btn danger" } else { "btn" }
                    id="chaos-toggle" data-testid="chaos-toggle" on:click=toggle
                >
                    {move || if c.chaos.get().running { "Stop chaos monkey" } else { "Start chaos monkey" }}
                </button>
            </div>
            <p class="small" id="chaos-state" data-running=move || c.chaos.get().running.to_string()>
                {move || {
                    let chaos = c.chaos.get();
                    if chaos.running {
                        format!(
                            "running: {} kills and {} pauses so far (stops by itself after {})",
                            chaos.kills,
                            chaos.pauses,
                            chaos.max_kills.max(1)
                        )
                    } else {
                        "idle".to_owned()
                    }
                }}
            </p>
        </div>
    }
}

#[component]
pub fn EventLog() -> impl IntoView {
    let c = console();
    view! {
        <div class="panel" id="event-panel">
            <div class="panel-head">
                <h2>"Event log"</h2>
                <button class="btn small ghost" on:click=move |_| c.clear_log()>"Clear"</button>
            </div>
            <ul class="log" id="event-log">
                <For each=move || c.log.get() key=|e| e.seq let:e>
                    <li class=format!("log-entry {}", e.kind) data-testid="event" data-kind=e.kind>
                        <span class="time">{e.time.clone()}</span>
                        <span class=format!("kind {}", e.kind)>{e.kind}</span>
                        <span class="text">{e.text.clone()}</span>
                    </li>
                </For>
            </ul>
        </div>
    }
}
