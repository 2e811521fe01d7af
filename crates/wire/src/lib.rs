//! Wire types of the Live Face Swap API.
//!
//! The upstream provider, the simulator that stands in for it, and the gateway that fronts it all
//! speak these shapes. Field names follow the provider exactly (`sourceImage`, `_id`,
//! `clientId`), so a client of the provider can switch to the gateway by changing its base URL.
//! This crate does no I/O.

pub mod codes;
pub mod detect;
pub mod envelope;
pub mod gateway;
pub mod live;
pub mod token;

pub use codes::Code;
pub use detect::{DetectRequest, DetectResponse};
pub use envelope::{EmptyEnvelope, Envelope};
pub use live::{
    CreateRequest, FaceswapStatus, LiveSession, Resource, SessionIdRequest, SourceImage,
    UpdateRequest,
};
pub use token::{TokenRequest, TokenResponse};

/// Paths of the upstream calls, shared by the simulator, the upstream client and the gateway.
pub mod paths {
    /// Exchange client credentials for an access token.
    pub const GET_TOKEN: &str = "/api/open/v3/getToken";
    /// Face detection, short path.
    pub const DETECT: &str = "/detect";
    /// Face detection, the path the provider's detect host also serves.
    pub const DETECT_FACES: &str = "/interface/detect-api/detect_faces";
    /// Create a live face swap session.
    pub const LIVE_CREATE: &str = "/api/open/v3/faceswap/live/create";
    /// Replace the source faces of a live session.
    pub const LIVE_UPDATE: &str = "/api/open/v3/faceswap/live/update";
    /// Close a live session.
    pub const LIVE_CLOSE: &str = "/api/open/v3/faceswap/live/close";
    /// Read a live session.
    pub const LIVE_INFO: &str = "/api/open/v3/faceswap/live/info";
}
