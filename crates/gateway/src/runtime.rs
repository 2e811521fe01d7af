//! The async runtimes the binary runs on: a multi-threaded one for start-up and background work,
//! and one single-threaded runtime per serving thread ([`crate::server`]). `TOKIO_WORKER_THREADS`
//! sets both counts; it is read here so that a bad value is a clear start-up error rather than
//! the runtime's panic.

use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

/// The variable that sets the worker count (the name the runtime itself would read).
pub const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// The worker threads `value` asks for: `None` when unset (one per CPU the process may use).
pub fn worker_threads(value: Option<&std::ffi::OsStr>) -> Result<Option<usize>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    value
        .to_str()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "malformed setting {WORKER_THREADS_VAR}: must be a positive integer, got {value:?}"
            )
        })
}

/// The runtime, with every driver on and the worker count from the environment.
pub fn build() -> Result<Runtime, String> {
    let mut builder = Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = worker_threads(std::env::var_os(WORKER_THREADS_VAR).as_deref())? {
        builder.worker_threads(n);
    }
    builder
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// How many threads serve requests ([`crate::server::serve`]): as many as the runtime's
/// workers, so the same setting sizes both.
pub fn serving_threads() -> NonZeroUsize {
    worker_threads(std::env::var_os(WORKER_THREADS_VAR).as_deref())
        .ok()
        .flatten()
        .and_then(NonZeroUsize::new)
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn the_worker_count_is_a_positive_integer_or_unset() {
        assert_eq!(worker_threads(None), Ok(None));
        assert_eq!(worker_threads(Some(OsStr::new("3"))), Ok(Some(3)));
        assert_eq!(worker_threads(Some(OsStr::new(" 1 "))), Ok(Some(1)));
        for bad in ["0", "-1", "two", "", "1.5"] {
            let err = worker_threads(Some(OsStr::new(bad))).unwrap_err();
            assert!(err.contains(WORKER_THREADS_VAR), "{err}");
        }
    }
}
