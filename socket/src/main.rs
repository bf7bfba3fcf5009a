//! `wharf-socket`: the socket as its own process.

#[tokio::main]
async fn main() {
    wharf_runtime::service_main(wharf_socket::run).await;
}
