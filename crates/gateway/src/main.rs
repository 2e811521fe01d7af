#[tokio::main]
async fn main() {
    std::process::exit(faceswap_gateway::cli::run().await);
}
