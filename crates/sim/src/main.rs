use clap::Parser;
use faceswap_sim::SimArgs;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = SimArgs::parse();
    if let Err(e) = faceswap_sim::run(args).await {
        eprintln!("faceswap-sim: {e:#}");
        std::process::exit(1);
    }
}
