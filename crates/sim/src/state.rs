//! The simulator's shared state.

use std::sync::{Mutex, RwLock};
use std::time::Duration;

use crate::config::{Knobs, SimArgs};
use crate::resources::Resources;
use crate::sessions::Sessions;
use crate::stats::Stats;
use crate::tokens::TokenIssuer;

/// The one account the simulator serves.
#[derive(Debug, Clone)]
pub struct Account {
    /// Accepted `clientId`.
    pub client_id: String,
    /// Accepted `clientSecret`.
    pub client_secret: String,
    /// Static key accepted as `x-api-key`, if any.
    pub api_key: Option<String>,
}

/// Limits on detection input.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Largest image, in bytes.
    pub max_bytes: usize,
    /// Time allowed to fetch `image_url`.
    pub fetch_timeout: Duration,
}

/// Everything the handlers share.
pub struct SimState {
    /// The account.
    pub account: Account,
    /// Run-time settings.
    pub knobs: RwLock<Knobs>,
    /// Token signing and checking.
    pub tokens: TokenIssuer,
    /// Live sessions.
    pub sessions: Mutex<Sessions>,
    /// Generated resources.
    pub resources: Mutex<Resources>,
    /// Call counters.
    pub stats: Stats,
    /// Base URL of resource links.
    pub public_url: String,
    /// Client for `image_url`.
    pub http: reqwest::Client,
    /// Detection input limits.
    pub image_limits: ImageLimits,
    /// Tokens issued so far.
    pub tokens_issued: std::sync::atomic::AtomicU64,
    /// Sessions created so far.
    pub sessions_created: std::sync::atomic::AtomicU64,
}

impl SimState {
    /// State for `args`, with resource links under `public_url`.
    pub fn new(args: &SimArgs, public_url: String) -> anyhow::Result<Self> {
        let app_id: String = {
            let bytes: [u8; 16] = rand::random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        Ok(Self {
            account: Account {
                client_id: args.client_id.clone(),
                client_secret: args.client_secret.clone(),
                api_key: args.api_key.clone(),
            },
            knobs: RwLock::new(args.knobs.clone()),
            tokens: TokenIssuer::new(),
            sessions: Mutex::new(Sessions::new(app_id)),
            resources: Mutex::new(Resources::default()),
            stats: Stats::default(),
            public_url,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .build()?,
            image_limits: ImageLimits {
                max_bytes: args.max_image_bytes,
                fetch_timeout: Duration::from_millis(args.image_fetch_timeout_ms),
            },
            tokens_issued: Default::default(),
            sessions_created: Default::default(),
        })
    }

    /// A copy of the current knobs.
    pub fn knobs(&self) -> Knobs {
        self.knobs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The session store, locked. A panic while holding the lock leaves consistent data
    /// (every mutation is a single step), so poisoning is ignored.
    pub fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resource store, locked.
    pub fn resources(&self) -> std::sync::MutexGuard<'_, Resources> {
        self.resources.lock().unwrap_or_else(|e| e.into_inner())
    }
}
