//! Counts of the calls received, per upstream call, for `GET /sim/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The upstream calls, by the names `/sim/stats` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `POST /api/open/v3/getToken`
    GetToken,
    /// `POST /detect` or `POST /interface/detect-api/detect_faces`
    Detect,
    /// `POST /api/open/v3/faceswap/live/create`
    Create,
    /// `POST /api/open/v3/faceswap/live/update`
    Update,
    /// `POST /api/open/v3/faceswap/live/close`
    Close,
    /// `POST /api/open/v3/faceswap/live/info`
    Info,
}

impl Call {
    /// The call a request path names, if it names one.
    pub fn from_path(path: &str) -> Option<Self> {
        use faceswap_wire::paths;
        Some(match path {
            paths::GET_TOKEN => Self::GetToken,
            paths::DETECT | paths::DETECT_FACES => Self::Detect,
            paths::LIVE_CREATE => Self::Create,
            paths::LIVE_UPDATE => Self::Update,
            paths::LIVE_CLOSE => Self::Close,
            paths::LIVE_INFO => Self::Info,
            _ => return None,
        })
    }

    /// Whether this call answers with the detection shape (`error_code`) instead of `code`.
    pub fn is_detect(self) -> bool {
        self == Self::Detect
    }
}

/// Counters of calls and injected faults.
#[derive(Debug, Default)]
pub struct Stats {
    calls: [AtomicU64; 6],
    errors_injected: AtomicU64,
    drops_injected: AtomicU64,
    timeouts_injected: AtomicU64,
    resource_downloads: AtomicU64,
    resource_failures: AtomicU64,
    connections: AtomicU64,
    last_traceparent: std::sync::Mutex<Option<String>>,
}

/// Which fault was injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answered 503.
    Error,
    /// Connection dropped.
    Drop,
    /// Never answered.
    Timeout,
}

/// Calls received, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CallCounts {
    /// `getToken` calls.
    #[serde(rename = "getToken")]
    pub get_token: u64,
    /// `detect`.
    pub detect: u64,
    /// `create`.
    pub create: u64,
    /// `update`.
    pub update: u64,
    /// `close`.
    pub close: u64,
    /// `info`.
    pub info: u64,
}

/// Faults injected, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FaultCounts {
    /// `errors`.
    pub errors: u64,
    /// `drops`.
    pub drops: u64,
    /// `timeouts`.
    pub timeouts: u64,
}

impl Stats {
    /// Counts one received call.
    pub fn record_call(&self, call: Call) {
        self.calls[call as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one injected fault.
    pub fn record_fault(&self, fault: Fault) {
        let counter = match fault {
            Fault::Error => &self.errors_injected,
            Fault::Drop => &self.drops_injected,
            Fault::Timeout => &self.timeouts_injected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The call counts now.
    pub fn calls(&self) -> CallCounts {
        let get = |c: Call| self.calls[c as usize].load(Ordering::Relaxed);
        CallCounts {
            get_token: get(Call::GetToken),
            detect: get(Call::Detect),
            create: get(Call::Create),
            update: get(Call::Update),
            close: get(Call::Close),
            info: get(Call::Info),
        }
    }

    /// The fault counts now.
    pub fn faults(&self) -> FaultCounts {
        FaultCounts {
            errors: self.errors_injected.load(Ordering::Relaxed),
            drops: self.drops_injected.load(Ordering::Relaxed),
            timeouts: self.timeouts_injected.load(Ordering::Relaxed),
        }
    }
}

/// Resource downloads received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ResourceCounts {
    /// Requests for `/resources/...`, failed ones included.
    pub downloads: u64,
    /// Of those, answered 500 by `resource_fail_count`.
    pub failed: u64,
}

impl Stats {
    /// Counts one resource download; `failed` when it was answered 500 on purpose.
    pub fn record_resource_download(&self, failed: bool) {
        self.resource_downloads.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.resource_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one accepted TCP connection.
    pub fn record_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// TCP connections accepted since start.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Keeps the `traceparent` header of the latest upstream call that sent one.
    pub fn record_traceparent(&self, value: &str) {
        if let Ok(mut last) = self.last_traceparent.lock() {
            *last = Some(value.to_owned());
        }
    }

    /// The latest `traceparent` received, if any.
    pub fn last_traceparent(&self) -> Option<String> {
        self.last_traceparent.lock().ok().and_then(|l| l.clone())
    }

    /// The resource download counts now.
    pub fn resources(&self) -> ResourceCounts {
        ResourceCounts {
            downloads: self.resource_downloads.load(Ordering::Relaxed),
            failed: self.resource_failures.load(Ordering::Relaxed),
        }
    }
}

/// The body of `GET /sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatsReport {
    /// Calls received per upstream call, faulted ones included.
    pub calls: CallCounts,
    /// Upstream ids of the sessions open now (created and not closed, failed ones included).
    pub open_sessions: Vec<String>,
    /// Sessions created since start.
    pub sessions_created: u64,
    /// Tokens issued since start.
    pub tokens_issued: u64,
    /// Faults injected since start.
    pub faults: FaultCounts,
    /// Resource downloads since start.
    #[serde(default)]
    pub resources: ResourceCounts,
    /// The W3C `traceparent` header of the latest upstream call that carried one.
    #[serde(default)]
    pub last_traceparent: Option<String>,
    /// TCP connections accepted since start: how well callers keep theirs alive.
    #[serde(default)]
    pub connections: u64,
}
