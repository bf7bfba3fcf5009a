//! `wharf-receiver`: the receiver as its own process.

#[tokio::main]
async fn main() {
    wharf_runtime::service_main(wharf_receiver::run).await;
}
