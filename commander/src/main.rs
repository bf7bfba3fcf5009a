//! `wharf-commander`: the commander as its own process.

#[tokio::main]
async fn main() {
    wharf_runtime::service_main(wharf_commander::run).await;
}
