// A proxied call allocates and frees dozens of small buffers (headers, JSON, spans) across
// worker threads; glibc's malloc was a fifth of the gateway's CPU at peak load. jemalloc
// raised the `info` peak by about 15% (docs/benchmarks.md) and still returns the buffers of
// large bodies (the archiving memory test, benchmark scenario 2).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let runtime = match faceswap_gateway::runtime::build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("faceswap-gateway: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(runtime.block_on(faceswap_gateway::cli::run()));
}
