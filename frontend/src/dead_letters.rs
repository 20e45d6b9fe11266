//! The dead letters, listed (shown while there are any): each message a node set aside, with the stage, why,
//! its size, a preview and when; drop one, drop all, or send one back to its stage after confirming.

use crate::api::{self, thousands, DeadLetterView};
use crate::console;
use leptos::prelude::*;
use leptos::task::spawn_local;

/// Rows the table shows; the count in the header has them all.
const SHOWN: usize = 50;

#[component]
pub fn DeadLettersPanel() -> impl IntoView {
    let c = console();
    let letters = RwSignal::new(Vec::<DeadLetterView>::new());
    let total = move || c.status.get().dead_letters.values().map(|&n| u64::from(n)).sum::<u64>();
    // Listed again whenever the counts change (they are counted every 2 s).
    Effect::new(move |_| {
        if total() == 0 {
            letters.set(Vec::new());
            return;
        }
        spawn_local(async move {
            match api::get::<Vec<DeadLetterView>>("/api/dead-letters").await {
                Ok(list) => letters.set(list),
                Err(e) => c.error(format!("listing the dead letters: {e}")),
            }
        });
    });
    let drop_all = move |_| {
        spawn_local(async move {
            match api::post::<serde_json::Value>("/api/dead-letters/purge", &serde_json::json!({})).await {
                Ok(answer) => c.info(format!("{} dead letters dropped", answer["purged"])),
                Err(e) => c.error(format!("dropping the dead letters: {e}")),
            }
        });
    };
    view! {
        <Show when=move || { total() > 0 }>
            <div class="panel" id="dead-letters-panel">
                <div class="panel-head">
                    <h2>"Dead letters"</h2>
                    <span class="muted small">{move || format!("{} set aside", total())}</span>
                    <button class="btn small ghost" data-testid="drop-all-dead-letters" on:click=drop_all>"Drop all"</button>
                </div>
                <Show when=move || { total() > SHOWN as u64 }>
                    <p class="muted small">{move || format!("The first {SHOWN} of {} shown.", total())}</p>
                </Show>
                <div class="scroll">
                <table class="table" id="dead-letters-table">
                    <thead>
                        <tr>
                            <th>"Stage"</th><th>"Why"</th><th class="num">"Size"</th><th>"Preview"</th><th>"Set aside"</th><th></th>
                        </tr>
                    </thead>
                    <tbody>
                        <For each=move || letters.get().into_iter().take(SHOWN) key=|l| l.id.clone() let:letter>
                            <DeadLetterRow letter=letter/>
                        </For>
                    </tbody>
                </table>
                </div>
            </div>
        </Show>
    }
}

#[component]
fn DeadLetterRow(letter: DeadLetterView) -> impl IntoView {
    let c = console();
    let act = move |id: String, action: &'static str| {
        spawn_local(async move {
            let body = serde_json::json!({ "confirm": true });
            match api::post::<DeadLetterView>(&format!("/api/dead-letters/{id}/{action}"), &body).await {
                Ok(letter) if action == "requeue" => {
                    c.info(format!("dead letter of {} sent back to {}", letter.stage, letter.from))
                }
                Ok(letter) => c.info(format!("dead letter of {} dropped", letter.stage)),
                Err(e) => c.error(format!("{action} of a dead letter: {e}")),
            }
            c.refresh_status();
        });
    };
    let (drop_id, requeue_id) = (letter.id.clone(), letter.id.clone());
    let from = letter.from.clone();
    let requeue = move |_| {
        let question = format!("Send this message back to {from}? If it is poison, the stage sets it aside again.");
        if window().confirm_with_message(&question).unwrap_or(false) {
            act(requeue_id.clone(), "requeue");
        }
    };
    let at = if letter.at_ms == 0 { "—".to_owned() } else { api::time_of_day(letter.at_ms) };
    view! {
        <tr data-testid="dead-letter" data-id=letter.id.clone() data-stage=letter.stage.clone()>
            <td>{letter.stage.clone()}</td>
            <td>{letter.reason.clone()}</td>
            <td class="num">{format!("{} B", thousands(letter.bytes as u64))}</td>
            <td><code class="tiny">{letter.preview.clone()}</code></td>
            <td class="muted">{at}</td>
            <td class="actions">
                <button class="btn small ghost" data-testid="drop-dead-letter" on:click=move |_| act(drop_id.clone(), "drop")>"Drop"</button>
                <button class="btn small ghost" data-testid="requeue-dead-letter" disabled=letter.from.is_empty() on:click=requeue>"Requeue"</button>
            </td>
        </tr>
    }
}
