//! `wharf-commander`: the commander as its own process.

#[tokio::main]
async fn main() {
    wharf_runtime::service_main(|settings, shutdown| {
        wharf_commander::run(settings, shutdown, wharf_runtime::reload_on_hangup())
    })
    .await;
}
