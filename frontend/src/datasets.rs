//! Choosing a dataset (bundled sample, generated, uploaded) and launching sessions on it.

use crate::api::{self, human_bytes, thousands, DatasetView, Launched};
use crate::console;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::json;
use wasm_bindgen::JsCast;

#[component]
pub fn DatasetPanel() -> impl IntoView {
    let c = console();
    let busy = RwSignal::new(None::<String>);
    let count = RwSignal::new(2u32);
    let file_input = NodeRef::<leptos::html::Input>::new();

    let generate = move |scale: &'static str| {
        busy.set(Some(format!("generating {scale}…")));
        spawn_local(async move {
            match api::post::<DatasetView>("/api/datasets/generate", &json!({ "scale": scale })).await {
                Ok(dataset) => {
                    c.dataset.set(dataset.id.clone());
                    c.info(format!("{} ready: {} rows", dataset.name, thousands(dataset.rows)));
                    c.refresh_datasets();
                }
                Err(e) => c.error(format!("generate {scale}: {e}")),
            }
            busy.set(None);
        });
    };

    let upload = move |_| {
        let Some(input) = file_input.get() else { return };
        let Some(files) = input.files() else { return };
        if files.length() == 0 {
            c.error("choose one or more CSV files first");
            return;
        }
        let Ok(form) = web_sys::FormData::new() else { return };
        for i in 0..files.length() {
            if let Some(file) = files.get(i) {
                let blob: &web_sys::Blob = file.unchecked_ref();
                let _ = form.append_with_blob_and_filename("files", blob, &file.name());
            }
        }
        busy.set(Some(format!("uploading {} files…", files.length())));
        spawn_local(async move {
            match api::post_form::<DatasetView>("/api/datasets/upload", form).await {
                Ok(dataset) => {
                    c.dataset.set(dataset.id.clone());
                    c.info(format!(
                        "uploaded {}: {} files, {} rows",
                        dataset.name,
                        dataset.files,
                        thousands(dataset.rows)
                    ));
                    c.refresh_datasets();
                    input.set_value("");
                }
                Err(e) => c.error(format!("upload refused: {e}")),
            }
            busy.set(None);
        });
    };

    let launch = move |_| {
        let dataset = c.dataset.get_untracked();
        let n = count.get_untracked();
        busy.set(Some(format!("launching {n} sessions…")));
        spawn_local(async move {
            match api::post::<Launched>("/api/sessions", &json!({ "dataset": dataset, "count": n })).await {
                Ok(launched) => {
                    if let Some(first) = launched.sessions.first() {
                        c.select(first.to_string());
                    }
                    c.refresh_sessions();
                }
                Err(e) => c.error(format!("launch: {e}")),
            }
            busy.set(None);
        });
    };

    view! {
        <div class="panel" id="dataset-panel">
            <h2>"Dataset"</h2>
            <div class="dataset-list" data-testid="dataset-list">
                <Show when=move || c.datasets.get().is_empty()>
                    <p class="empty small">"No dataset yet: the bundled sample is missing from the data folder. Generate or upload one."</p>
                </Show>
                <For each=move || c.datasets.get() key=|d| d.id.clone() let:d>
                    <DatasetOption dataset=d/>
                </For>
            </div>
            <div class="row gap">
                <button class="btn" id="gen-tiny" disabled=move || busy.get().is_some() on:click=move |_| generate("tiny")>
                    "Generate tiny"
                </button>
                <button class="btn" id="gen-reduced" disabled=move || busy.get().is_some() on:click=move |_| generate("reduced")>
                    "Generate reduced"
                </button>
            </div>
            <div class="upload">
                <label class="label">"Upload CSV files (stores, menu items, users, transactions, items)"</label>
                <div class="row gap">
                    <input type="file" id="upload-files" accept=".csv,text/csv" multiple node_ref=file_input/>
                    <button class="btn" id="upload-btn" disabled=move || busy.get().is_some() on:click=upload>"Upload"</button>
                </div>
            </div>
            <h2 class="spaced">"Launch"</h2>
            <div class="row gap center">
                <label class="label" for="launch-count">"Sessions"</label>
                <input
                    type="number" id="launch-count" min="1" max="16" class="num"
                    prop:value=move || count.get().to_string()
                    on:input=move |ev| count.set(event_target_value(&ev).parse().unwrap_or(1).clamp(1, 16))
                />
                <button
                    class="btn primary" id="launch-btn" data-testid="launch"
                    disabled=move || busy.get().is_some() || c.cluster.get() != "up"
                    on:click=launch
                >
                    {move || {
                        let id = c.dataset.get();
                        let datasets = c.datasets.get();
                        let name = datasets.iter().find(|d| d.id == id).map_or(id.as_str(), |d| d.name.as_str());
                        format!("Launch {} on {name}", count.get())
                    }}
                </button>
            </div>
            <p class="muted small" data-testid="busy">{move || busy.get().unwrap_or_default()}</p>
        </div>
    }
}

#[component]
fn DatasetOption(dataset: DatasetView) -> impl IntoView {
    let c = console();
    let id = dataset.id.clone();
    let selected = {
        let id = id.clone();
        move || c.dataset.get() == id
    };
    view! {
        <label class=move || if selected() { "dataset selected" } else { "dataset" } data-testid="dataset" data-id=id.clone()>
            <input
                type="radio" name="dataset" value=id.clone()
                prop:checked=selected.clone()
                on:change={
                    let id = id.clone();
                    move |_| c.dataset.set(id.clone())
                }
            />
            <span class="dataset-name">{dataset.name.clone()}</span>
            <span class=format!("tag {}", dataset.kind)>{dataset.kind.clone()}</span>
            <span class="muted small">
                {format!("{} files · {} rows · {}", dataset.files, thousands(dataset.rows), human_bytes(dataset.bytes))}
            </span>
        </label>
    }
}
